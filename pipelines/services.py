"""The production shape as real processes on this machine, bound to 127.0.0.1: Postgres and an
MLflow tracking server here, a Spark standalone master and workers and a Spark Connect server in
pipelines/spark_services.py (with the same Service, spawn and wait_ready).

    python -m pipelines.services_cli      # `make services`: start them, print URLs and exports, Ctrl-C stops all

The tests (tests/test_production_shape.py) and bench/production.py start the same services with the
same functions. Each start_* returns a `Service`: its URL, the environment variables a client
exports to use it, and stop(). Every process runs in a session of its own (its own process group)
and logs to a file; a start that fails raises ServiceError with the end of that log. stop() ends
the whole session, including what the service spawned and moved to other process groups (PySpark's
Python daemons do), so nothing outlives it. Ports are free loopback ports picked at start.

Secrets never reach a command line (`ps` shows those to every user): Postgres and MLflow get the
password through PGPASSWORD, MLflow's admin account through a 0600 ini file, the Spark daemons
their RPC secret and the Connect server its token through the environment.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.errors import UserError

LOOPBACK = "127.0.0.1"
BIN = Path(sys.executable).parent
# Marks every process spawned from this Python process, and everything those spawn (environments
# are inherited), so `strays()` finds what outlived its service whatever its session or group.
RUN_MARK = f"CRAWL2CHAT_SERVICES_RUN={os.getpid()}-{secrets.token_hex(4)}"


class ServiceError(UserError):
    """A service could not start (missing program, died, never became ready); the message has its log."""


@dataclass
class Service:
    """Started processes (each the leader of its own session) and how to reach them."""

    name: str
    url: str
    procs: list[subprocess.Popen]
    logs: list[Path]
    env: dict[str, str] = field(default_factory=dict)  # what a client exports to use the service
    stop_signal: int = signal.SIGTERM                  # what the leaders get first
    remove: list[Path] = field(default_factory=list)   # throwaway state deleted after stop()
    info: dict = field(default_factory=dict)           # extras: web UI, data dir, credentials

    def members(self) -> list[int]:
        """Live pids in the services' sessions (zombies awaiting their parent do not count)."""
        sids = {p.pid for p in self.procs}
        return [pid for pid in _pids() if _sid(pid) in sids and not _zombie(pid)]

    def stop(self, grace: float = 20.0) -> None:
        """Stop signal to each leader, SIGKILL to whatever is left of the sessions after `grace`
        seconds; raises ServiceError if a process survives even that."""
        for p in self.procs:
            if p.poll() is None:
                _signal(p.pid, self.stop_signal)
        _wait_empty(self, grace)
        for pid in self.members():
            _signal(pid, signal.SIGKILL)
        left = _wait_empty(self, 10.0)
        for path in self.remove:
            shutil.rmtree(path, ignore_errors=True)
        if left:
            raise ServiceError(f"{self.name}: processes {left} survived SIGKILL")

    def kill(self) -> None:
        """SIGKILL every process of the service at once (a crash, not a shutdown)."""
        for pid in self.members():
            _signal(pid, signal.SIGKILL)
        _wait_empty(self, 10.0)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(f"--- {log}\n" + "\n".join(_tail(log, lines)) for log in self.logs)


class StopFlag:
    """Set by SIGINT (Ctrl-C) or SIGTERM: a launcher polls it and stops its services itself, so a
    signal never interrupts it halfway through starting or stopping one."""

    def __init__(self):
        self.set = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.set = True


def free_port() -> int:
    """A loopback port nobody listens on now (the kernel's pick; a race with another starter is
    possible but harmless: that service then fails to bind and says so in its log)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def spawn(name: str, cmd: list[str], log: Path | None, env: dict | None = None, cwd: Path | None = None,
          user: str | None = None) -> subprocess.Popen:
    """Start `cmd` as the leader of a new session, stdout and stderr to `log` (None: to ours, as
    `make ui` shows its UIs' output in the terminal)."""
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    with (open(log, "ab") if log is not None else contextlib.nullcontext()) as out:
        try:
            return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT if out is not None else None,
                                    env={**os.environ, **(env or {}), **dict([RUN_MARK.split("=", 1)])},
                                    cwd=cwd, user=user,
                                    start_new_session=True)
        except OSError as e:
            raise ServiceError(f"{name}: cannot run {cmd[0]}: {e}") from e


def write_private(path: Path, text: str) -> None:
    """`text` in a new file only this user can read: mode 0600 from its creation on (a chmod after
    writing leaves a moment when others can open it and keep it open)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def wait_ready(service: Service, ready, timeout: float = 120.0, what: str = "ready") -> None:
    """Poll `ready()` until it is true; stop the service and raise with its log if a process
    exits first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        dead = [p for p in service.procs if p.poll() is not None]
        if dead:
            reason = f"exited with code {dead[0].returncode} before it was {what}"
        elif time.monotonic() > deadline:
            reason = f"was not {what} after {timeout:.0f} s"
        else:
            try:
                if ready():
                    return
            except Exception:  # not up yet: connection refused, bad gateway, ...
                pass
            time.sleep(0.3)
            continue
        tail = service.log_tail()
        service.stop(grace=5)
        raise ServiceError(f"{service.name} {reason}; its log:\n{tail}")


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status == 200


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((LOOPBACK, port)) == 0


# ------------------------------------------------------------------------------------------
# Postgres (Debian's package), run as an unprivileged user in its own data directory

def postgres_bin_dir(install: bool = False) -> Path:
    """Where initdb and postgres are. With `install`, as root on Debian, installs the `postgresql`
    package when they are missing (CI machines start without it)."""
    def find():
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
        if found:
            return found[-1].parent
        initdb = shutil.which("initdb")
        return Path(initdb).resolve().parent if initdb else None

    bin_dir = find()
    if bin_dir is None and install and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
        subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], env=env, capture_output=True, timeout=900)
        bin_dir = find()
    if bin_dir is None:
        raise ServiceError("Postgres is not installed: install Debian's package (apt-get install postgresql) "
                           "or put its initdb and postgres on PATH")
    return bin_dir


def _service_user() -> str | None:
    """Postgres refuses to run as root: as root, run it as the package's `postgres` account (or
    `nobody`); otherwise as ourselves."""
    if os.geteuid() != 0:
        return None
    import pwd
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise ServiceError("running as root and neither a `postgres` nor a `nobody` account exists to run Postgres as")


def start_postgres(databases: tuple[str, ...] = ("dagster", "mlflow"), user: str = "crawl2chat",
                   password: str | None = None, data_dir: Path | None = None, install: bool = False,
                   timeout: float = 60.0) -> Service:
    """A Postgres server on a free loopback port with `databases` created, owned by the
    password-authenticated superuser `user` (password: given, or a fresh random one). The data
    directory is `data_dir` (initialized if empty, kept) or a throwaway one. Its env holds the
    DAGSTER_POSTGRES_* variables dagster_home/dagster.postgres.yaml reads, and PGPASSWORD."""
    bin_dir = postgres_bin_dir(install)
    run_as = _service_user()
    password = password or secrets.token_urlsafe(18)
    throwaway = data_dir is None
    # Its own top-level temp dir: pytest's and mkdtemp's parents are 0700 root, not traversable by `postgres`.
    base = Path(data_dir or tempfile.mkdtemp(prefix="crawl2chat-pg-")).absolute()
    if run_as and (blocked := _untraversable(base.parent, run_as)) is not None:
        raise ServiceError(f"Postgres runs as the user {run_as}, which cannot enter {blocked} (mode "
                           f"{blocked.stat().st_mode & 0o777:o}) on the way to {base}: choose a data directory "
                           f"every user can reach (e.g. under /var/tmp), or `chmod o+x {blocked}`")
    data = base / "data"
    log = base / "postgres.log"
    owner = ([run_as] if run_as else [])
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        pwfile = base / "pwfile"
        write_private(pwfile, password + "\n")
        if owner:
            for p in (base, data, pwfile):
                shutil.chown(p, user=run_as)
        init = subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", user, "--auth=scram-sha-256",
                               f"--pwfile={pwfile}", "-E", "UTF8", "--no-locale", "--no-instructions"],
                              capture_output=True, text=True, user=run_as)
        pwfile.unlink()
        if init.returncode:
            raise ServiceError(f"initdb {data} failed: {init.stderr.strip() or init.stdout.strip()}")
    port = free_port()
    cmd = [str(bin_dir / "postgres"), "-D", str(data), "-c", f"listen_addresses={LOOPBACK}", "-c", f"port={port}",
           "-c", f"unix_socket_directories={data}", "-c", "max_connections=100"]
    proc = spawn("postgres", cmd, log, user=run_as)
    url = f"postgresql://{user}@{LOOPBACK}:{port}"
    env = {"PGPASSWORD": password, "DAGSTER_POSTGRES_HOST": LOOPBACK, "DAGSTER_POSTGRES_PORT": str(port),
           "DAGSTER_POSTGRES_USER": user, "DAGSTER_POSTGRES_PASSWORD": password, "DAGSTER_POSTGRES_DB": databases[0]}
    # SIGINT: Postgres' "fast" shutdown (SIGTERM waits for every client to disconnect first).
    svc = Service("postgres", url, [proc], [log], env=env, stop_signal=signal.SIGINT,
                  remove=[base] if throwaway else [],
                  info={"port": port, "user": user, "password": password, "data_dir": str(data)})
    wait_ready(svc, lambda: _pg_connect(svc, "postgres").close() is None, timeout, "accepting connections")
    conn = _pg_connect(svc, "postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        for db in databases:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{db}"')
    conn.close()
    return svc


def _untraversable(path: Path, user: str) -> Path | None:
    """The first directory on the way to `path` that `user` may not enter (no x bit for it), or None."""
    import grp
    import pwd
    account = pwd.getpwnam(user)
    groups = {account.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    for d in [*reversed(path.parents), path]:
        if not d.exists():
            break
        st = d.stat()
        bit = 0o100 if st.st_uid == account.pw_uid else 0o010 if st.st_gid in groups else 0o001
        if not st.st_mode & bit:
            return d
    return None


def _pg_connect(pg: Service, db: str):
    import psycopg2
    return psycopg2.connect(host=LOOPBACK, port=pg.info["port"], user=pg.info["user"],
                            password=pg.info["password"], dbname=db, connect_timeout=3)


# ------------------------------------------------------------------------------------------
# MLflow tracking server (Postgres backend, artifacts served through the server)

def mlflow_server_command(port: int, backend_uri: str, artifacts: str, workers: int = 1,
                          auth: bool = False) -> list[str]:
    cmd = [str(BIN / "mlflow"), "server", "--host", LOOPBACK, "--port", str(port),
           "--backend-store-uri", backend_uri, "--serve-artifacts", "--artifacts-destination", artifacts,
           "--workers", str(workers)]
    return cmd + (["--app-name", "basic-auth"] if auth else [])


def start_mlflow_server(postgres: Service, artifacts_dir: Path, db: str = "mlflow",
                        auth: tuple[str, str] | None = None, port: int | None = None,
                        log_dir: Path | None = None, timeout: float = 180.0) -> Service:
    """`mlflow server` on a free loopback port (or `port`): runs, metrics and the model registry
    in `postgres`'s database `db`, artifacts under `artifacts_dir` served through the server
    (clients need no access to that folder). `auth=(admin, password)` turns on MLflow's basic
    auth with that admin account; clients then send MLFLOW_TRACKING_USERNAME/PASSWORD."""
    artifacts_dir = Path(artifacts_dir).absolute()
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    log_dir = Path(log_dir or artifacts_dir.parent)
    port = port or free_port()
    # No password in the URI: libpq takes it from PGPASSWORD, so `ps` never shows it. The driver
    # is named: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which is not installed.
    backend = postgres.url.replace("postgresql://", "postgresql+psycopg2://") + f"/{db}"
    env = {"PGPASSWORD": postgres.info["password"]}
    if auth:
        ini = log_dir / "mlflow-auth.ini"
        write_private(ini, "[mlflow]\ndefault_permission = READ\n"
                           f"database_uri = sqlite:///{log_dir / 'mlflow-auth.db'}\n"
                           f"admin_username = {auth[0]}\nadmin_password = {auth[1]}\n"
                           "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
        # the basic-auth app signs its CSRF tokens with this key; one per server start is enough here
        env.update(MLFLOW_AUTH_CONFIG_PATH=str(ini),
                   MLFLOW_FLASK_SERVER_SECRET_KEY=os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY",
                                                                 secrets.token_hex(16)))
    logs = [log_dir / f"mlflow-{port}.log"]
    cmd = mlflow_server_command(port, backend, str(artifacts_dir), auth=bool(auth))
    proc = spawn("mlflow server", cmd, logs[0], env, cwd=log_dir)
    url = f"http://{LOOPBACK}:{port}"
    svc = Service("mlflow", url, [proc], logs, env={"MLFLOW_TRACKING_URI": url},
                  info={"artifacts": str(artifacts_dir), "port": port})
    wait_ready(svc, lambda: _http_ok(f"{url}/health"), timeout, "answering /health")
    return svc


# ------------------------------------------------------------------------------------------
# processes and sessions

def listening_addresses(service: Service) -> set[tuple[str, int]]:
    """(ip, port) of every TCP socket listening in the service's sessions, and of bound UDP ones."""
    import psutil
    found = set()
    for pid in service.members():
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN or (c.type == socket.SOCK_DGRAM and c.laddr):
                found.add((c.laddr.ip, c.laddr.port))
    return found


def strays() -> list[int]:
    """Live processes that something spawned from this process started, directly or not."""
    mark = RUN_MARK.encode()
    found = []
    for pid in _pids():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if mark in environ and not _zombie(pid):
            found.append(pid)
    return found


def is_loopback(ip: str) -> bool:
    import ipaddress
    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_empty(service: Service, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        for p in service.procs:
            p.poll()  # reap the leaders
        left = service.members()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _pids():
    return (int(d) for d in os.listdir("/proc") if d.isdigit())


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _tail(path: Path, lines: int) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ["(no log)"]
