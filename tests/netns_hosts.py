"""Hosts for multi-node tests on one machine, made of Linux namespaces (root only).

Each host is a network namespace with its own veth "eth0" on a bridge, its own hostname (UTS
namespace), its own sshd (Debian's openssh-server, its own host key) listening only on the host's
address, and its own mount namespace in which `node_local` (one path, the same on every host) is a
bind mount of that host's private directory: a node-local disk. The rest of the filesystem (the
checkout, the venv, the lake) is shared, as on a cluster with a shared filesystem. /etc/hosts inside
names every host, as a cluster's DNS would. The bridge carries an address in this namespace too, so
the launcher (this process: the Dagster asset, the CLI) reaches the hosts over ssh, as a login node
does; nothing listens in this namespace. The ssh key and client config are generated here; close()
stops every process the hosts ran and removes the namespaces, links and the directories it made.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def _run(*cmd: str) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r.stdout


def ensure_tools() -> str | None:
    """None when sshd, pdsh and ip are usable (installed from Debian when missing and root), else why not."""
    if os.geteuid() != 0:
        return "needs root (network, UTS and mount namespaces)"
    missing = [p for p, exe in (("openssh-server", "/usr/sbin/sshd"), ("pdsh", "pdsh"), ("iproute2", "ip"),
                                ("openssh-client", "ssh"))
               if not (Path(exe).exists() if exe.startswith("/") else shutil.which(exe))]
    if missing and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
        # Debian's policy-rc.d (containers) keeps the package from starting a system sshd; we run our own.
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env, capture_output=True, timeout=600)
        missing = [p for p, exe in (("openssh-server", "/usr/sbin/sshd"), ("pdsh", "pdsh"), ("iproute2", "ip"))
                   if not (Path(exe).exists() if exe.startswith("/") else shutil.which(exe))]
    if missing:
        return f"{', '.join(missing)} not installed and not installable (apt-get install {' '.join(missing)})"
    return None


class Hosts:
    def __init__(self, root: Path, names: tuple[str, ...] = ("hosta", "hostb")):
        self.root, self.names = Path(root), list(names)
        tag = secrets.token_hex(3)
        self.bridge = f"c2cbr{tag}"
        self.netns = {n: f"c2c{tag}{i}" for i, n in enumerate(self.names)}
        self.veth = {n: f"c2c{tag}v{i}" for i, n in enumerate(self.names)}
        subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}"
        self.addr = {n: f"{subnet}.{i + 1}" for i, n in enumerate(self.names)}
        self.gateway = f"{subnet}.254"
        self.node_local = self.root / "node_local"           # the same path on every host...
        self.disk = {n: self.root / f"disk-{n}" for n in self.names}   # ...backed by each host's own dir
        self.ssh_config = self.root / "ssh_config"
        self.hostfile = self.root / "hostfile"
        self.key = self.root / "id_ed25519"
        self.sshd: dict[str, subprocess.Popen] = {}
        self._made_run_sshd = False
        self._links: list[str] = []
        self._namespaces: list[str] = []

    # ---- setup ----
    def start(self) -> "Hosts":
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.node_local.mkdir(exist_ok=True)
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key))
        (self.root / "authorized_keys").write_text(Path(f"{self.key}.pub").read_text())
        (self.root / "hosts").write_text("127.0.0.1 localhost\n" + "".join(
            f"{self.addr[n]} {n}\n" for n in self.names))
        if not Path("/run/sshd").is_dir():  # sshd's privilege separation directory
            Path("/run/sshd").mkdir(mode=0o755)
            self._made_run_sshd = True
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        self._links.append(self.bridge)
        _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for n in self.names:
            ns = self.netns[n]
            _run("ip", "netns", "add", ns)
            self._namespaces.append(ns)
            _run("ip", "link", "add", self.veth[n], "type", "veth", "peer", "name", "eth0", "netns", ns)
            self._links.append(self.veth[n])
            _run("ip", "link", "set", self.veth[n], "master", self.bridge, "up")
            _run("ip", "-n", ns, "addr", "add", f"{self.addr[n]}/24", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            self.disk[n].mkdir(exist_ok=True)
            host_key = self.root / f"host_key_{n}"
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key))
            cfg = self.root / f"sshd_config_{n}"
            cfg.write_text(f"ListenAddress {self.addr[n]}:22\nHostKey {host_key}\n"
                           f"AuthorizedKeysFile {self.root / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
                           "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
                           "StrictModes no\nPidFile none\nLogLevel ERROR\nMaxStartups 100\nMaxSessions 100\n")
            inner = (f"hostname {n} && mount --bind {self.root / 'hosts'} /etc/hosts && "
                     f"mount --bind {self.disk[n]} {self.node_local} && exec /usr/sbin/sshd -D -e -f {cfg}")
            log = open(self.root / f"sshd_{n}.log", "wb")
            # ip netns exec, unshare and sh each exec the next: the Popen's pid is sshd's.
            self.sshd[n] = subprocess.Popen(["ip", "netns", "exec", ns, "unshare", "--uts", "--mount",
                                             "--propagation", "private", "sh", "-c", inner],
                                            stdout=log, stderr=subprocess.STDOUT)
            log.close()
        self.ssh_config.write_text("".join(f"Host {n}\n  HostName {self.addr[n]}\n" for n in self.names) + (
            f"Host *\n  User root\n  IdentityFile {self.key}\n  IdentitiesOnly yes\n  BatchMode yes\n"
            "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  ConnectTimeout 5\n"))
        self.hostfile.write_text("".join(f"{n} slots=1\n" for n in self.names))
        deadline = time.time() + 20
        for n in self.names:
            while True:
                if self.sshd[n].poll() is not None:
                    raise RuntimeError(f"sshd of {n} exited: {(self.root / f'sshd_{n}.log').read_text()[-500:]}")
                with socket.socket() as s:
                    s.settimeout(1)
                    if s.connect_ex((self.addr[n], 22)) == 0:
                        break
                if time.time() > deadline:
                    raise RuntimeError(f"sshd of {n} does not answer on {self.addr[n]}:22")
                time.sleep(0.1)

    # ---- use ----
    def ssh(self, host: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["ssh", "-F", str(self.ssh_config), host, command], capture_output=True,
                              text=True, timeout=timeout)

    def bind(self, host: str, src: Path, dst: Path) -> None:
        """Bind-mount src over dst in that host's mount namespace only."""
        _run("nsenter", "-t", str(self.sshd[host].pid), "-m", "mount", "--bind", str(src), str(dst))

    def unbind(self, host: str, dst: Path) -> None:
        _run("nsenter", "-t", str(self.sshd[host].pid), "-m", "umount", str(dst))

    def pids(self) -> list[int]:
        """Every process in the hosts' network namespaces (sshd, sessions, ranks): all started by us."""
        out = []
        for ns in self._namespaces:
            r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            out += [int(p) for p in r.stdout.split()]
        return out

    # ---- teardown ----
    def close(self) -> None:
        for _ in range(2):
            for pid in self.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        for p in self.sshd.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for ns in self._namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)  # takes its veth end along
        for link in self._links:
            subprocess.run(["ip", "link", "del", link], capture_output=True)  # already gone with its peer: fine
        self._namespaces, self._links = [], []
        if self._made_run_sshd:
            shutil.rmtree("/run/sshd", ignore_errors=True)
            self._made_run_sshd = False
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "Hosts":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
