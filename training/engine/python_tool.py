"""The python tool: run model-written code in a bubblewrap sandbox and return what it printed.

    python_tool("print(6*7)")          -> "42"
    python_tool("6*7")                 -> "42"        (a last bare expression is echoed, as in the REPL)
    python_tool("1/0")                 -> "Error: ZeroDivisionError: division by zero"
    python_tool("while True: pass")    -> "Error: timed out after 5 s"

It never raises: a crash, a timeout, an infinite loop, a memory or fork bomb or a flood of output all
come back as text ending in an "Error: ..." line, and the calling process is untouched.

Confinement is bubblewrap (`bwrap`, the sandbox under Flatpak), the same as root and as an ordinary user:
- new user, PID, network, IPC and UTS namespaces: inside, uid 1000 with no capabilities, only the
  sandbox's own processes in /proc, no network but a loopback of its own (no TCP back to the host, no
  abstract unix sockets), no further user namespaces (--disable-userns);
- a file system of its own: read-only /usr (and the /bin, /lib... links), the interpreter's binary,
  stdlib and libpython read-only (its site-packages hidden), nothing else of the host: no home, no
  project tree, no venv, no /etc, no host /tmp, /dev/shm or unix sockets. The working directory and
  home (/sandbox), /tmp and /dev/shm are size-capped tmpfs that vanish with the sandbox;
- --die-with-parent (a SIGKILLed caller takes the sandbox down) and --new-session; when the program
  ends or is killed the PID namespace's init exits and the kernel kills everything left in it,
  setsid() children included;
- rlimits (sandbox_child.py): CPU seconds, address space, processes, file size (stdout and stderr are
  capped files), open files, no core dumps; `python -I -S`: no environment, no site-packages;
- a seccomp filter (built with pyseccomp, libseccomp's bindings, when installed): keyrings, ptrace,
  bpf, perf, userfaultfd, io_uring, mounts, namespaces, modules and terminal injection refused;
- as root, bwrap itself runs as a uid of its own per concurrent slot: the kernel exempts root's
  processes from RLIMIT_NPROC even inside a user namespace, so only then does a fork bomb stop. That
  uid reaches the interpreter by its "other" permission bits; one under /root is replaced by the
  system's python of the same version (see _interpreter). The root of a rootless container is an
  ordinary uid to the kernel: there bwrap runs as it (_kernel_root).
Not protected: the kernel is shared (a kernel bug reachable through the allowed syscalls is an
escape), world-readable system files under /usr can be read, and CPU, memory and the tmpfs sizes
are spent up to the limits, by every concurrent run.
Fail closed: where bwrap is missing or cannot build the sandbox (user namespaces refused, as under
Docker's default seccomp profile), the tool answers "Error: the python tool is disabled: <reason>".
CRAWL2CHAT_UNSAFE_PYTHON_TOOL=1 runs the code unconfined there instead (rlimits, a temporary working
directory and the process-group kill only: the code can do whatever the caller's uid can).
`isolation()` measures what is in force; `confinement()` says which mechanism applies and why.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

CHILD = Path(__file__).with_name("sandbox_child.py")
UNSAFE_ENV = "CRAWL2CHAT_UNSAFE_PYTHON_TOOL"
SANDBOX_UID_BASE = 2_000_000_000  # far above any real account: as root, slot i's bwrap runs as BASE + i
HOME = "/sandbox"                 # inside: home and working directory, a tmpfs
_READ_LIMIT = 1 << 16             # bytes of stdout read back (max_output_chars is far below it)
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")  # read-only in the sandbox


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 5.0        # wall clock, interpreter start included
    memory_mb: int = 512          # address space (RLIMIT_AS)
    processes: int = 16           # RLIMIT_NPROC: the sandbox's own uid in its own user namespace
    file_mb: int = 4              # largest file it may write, stdout and stderr included
    open_files: int = 64
    disk_mb: int = 64             # size of each private tmpfs: the working directory, /tmp, /dev/shm
    max_output_chars: int = 1000  # of stdout returned to the model; the rest is cut with a marker


@dataclass(frozen=True)
class Confinement:
    mechanism: str                # "bubblewrap", "disabled" or "unconfined" (the unsafe opt-in)
    detail: str                   # what is in force, or why the tool is disabled
    bwrap: str | None = None
    seccomp: bool = False

    @property
    def disabled(self) -> bool:
        return self.mechanism == "disabled"


# Concurrent runs are bounded (each holds an interpreter and up to 3 tmpfs): one slot per core, two at least.
_slots: queue.SimpleQueue[int] = queue.SimpleQueue()
for _i in range(max(2, os.cpu_count() or 1)):
    _slots.put(_i)


def python_tool(code: str, limits: SandboxLimits = SandboxLimits()) -> str:
    """Run `code`; its stdout (truncated), then "Error: ..." if it failed. Never raises."""
    try:
        conf = confinement()
        if conf.disabled:
            return f"Error: the python tool is disabled: {conf.detail}"
        slot = _slots.get()
        try:
            return _run(code, limits, conf, slot)
        finally:
            _slots.put(slot)
    except Exception as e:  # noqa: BLE001 - a tool must not take the engine down
        return f"Error: the sandbox could not run the code ({type(e).__name__}: {e})"


def confinement() -> Confinement:
    """The mechanism in force for this process: bwrap from PATH, checked once by building a sandbox."""
    return _confinement(shutil.which("bwrap"), os.environ.get(UNSAFE_ENV, "") == "1")


@functools.lru_cache(maxsize=8)
def _confinement(bwrap: str | None, unsafe: bool) -> Confinement:
    seccomp = _seccomp_bpf() is not None
    if bwrap is None:
        reason = "bubblewrap is not installed (bwrap is not on PATH; Debian/Ubuntu: apt-get install bubblewrap)"
    else:
        conf = Confinement("bubblewrap", "", bwrap, seccomp)
        try:
            rc, err = _probe(conf)
        except (SandboxUnavailable, OSError) as e:  # OSError: e.g. root without CAP_SETUID
            rc, err = None, str(e)
        if rc == 0:
            return Confinement("bubblewrap", "new user, PID, network, IPC and UTS namespaces; read-only "
                               "system files only; private tmpfs home, /tmp and /dev/shm; rlimits; "
                               + ("seccomp filter" if seccomp else "no seccomp filter (pyseccomp or "
                                                                    "libseccomp missing)")
                               + f"; {_interpreter(_kernel_root())[0]}", bwrap, seccomp)
        reason = (f"bubblewrap cannot build its sandbox here ({err or f'exit status {rc}'}); it needs "
                  "unprivileged user namespaces (Docker: see docker/Dockerfile; Ubuntu 24.04+: an "
                  "AppArmor profile that lets bwrap use them)")
    if unsafe:
        return Confinement("unconfined", f"{UNSAFE_ENV}=1: model code runs as uid {os.getuid()} with rlimits "
                           f"only, no isolation ({reason})")
    return Confinement("disabled", f"{reason}. {UNSAFE_ENV}=1 runs it unconfined instead (unsafe)")


def _probe(conf: Confinement) -> tuple[int, str]:
    """(exit status, last stderr line) of an empty program in the sandbox."""
    with _sandbox_files(b"", conf, SandboxLimits(), 0) as (argv, popen), tempfile.TemporaryFile() as err:
        rc = subprocess.run(argv + ["-c", "pass"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=err, timeout=30, **popen).returncode
        return rc, _last_line(err)


# Syscalls no arithmetic or text code needs whose kernel code is a frequent privilege-escalation
# route or that reach outside the namespaces: keyrings (the session keyring is inherited), ptrace and
# cross-process memory, bpf, perf, userfaultfd, io_uring, mounts and namespace changes, modules, kexec.
_BLOCKED = ("add_key", "keyctl", "request_key", "ptrace", "process_vm_readv", "process_vm_writev", "bpf",
            "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register", "mount",
            "umount2", "pivot_root", "chroot", "unshare", "setns", "open_by_handle_at", "name_to_handle_at",
            "fsopen", "fsmount", "fspick", "open_tree", "move_mount", "kexec_load", "kexec_file_load",
            "init_module", "finit_module", "delete_module", "syslog", "acct", "quotactl", "swapon", "swapoff",
            "reboot", "personality")
_TTY_IOCTLS = (0x5412, 0x541C)  # TIOCSTI, TIOCLINUX: push input into a terminal (none here: --new-session)


@functools.lru_cache(maxsize=1)
def _seccomp_bpf() -> bytes | None:
    """The compiled filter bwrap loads (--seccomp) before the code starts, None without libseccomp.
    pyseccomp: ctypes bindings to libseccomp, the library Flatpak and container runtimes use."""
    try:
        import pyseccomp as sc  # noqa: PLC0415 - optional: without it the sandbox has no seccomp filter
    except (ImportError, RuntimeError, OSError):
        return None
    f = sc.SyscallFilter(sc.ALLOW)  # other ABIs (x32, i386 on x86_64) are killed: libseccomp's default
    for name in _BLOCKED:
        try:
            f.add_rule(sc.ERRNO(1), name)  # EPERM
        except OSError:  # a syscall this architecture does not have
            pass
    for request in _TTY_IOCTLS:
        f.add_rule(sc.ERRNO(1), "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, request))
    with tempfile.TemporaryFile() as out:
        f.export_bpf(out)
        out.seek(0)
        return out.read()


def _kernel_root() -> bool:
    """Whether this process is uid 0 as the kernel counts it, the uid exempt from RLIMIT_NPROC. The
    root of a rootless container is an ordinary uid outside it (/proc/self/uid_map maps 0 elsewhere):
    there bwrap runs as that root, whose processes the limit binds."""
    if os.geteuid() != 0:
        return False
    try:
        with open("/proc/self/uid_map") as f:
            for inside, outside, count in (map(int, line.split()) for line in f):
                if inside <= 0 < inside + count:
                    return outside - inside == 0
    except (OSError, ValueError):
        pass
    return True


class SandboxUnavailable(Exception):
    """The sandbox cannot be built here: the message says why."""


@functools.lru_cache(maxsize=2)
def _interpreter(as_other_uid: bool) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(the interpreter to run, host paths to bind read-only for it, directories to hide): this
    process's own base interpreter (a venv's python is a link to it), its stdlib and libpython. As
    root, bwrap runs as a uid of its own that reaches files by their "other" permission bits only;
    when this interpreter is not readable so (a Python under /root), the system's python of the same
    version is used: bwrap resolves every bind source by path as that uid, fds do not help."""
    exe = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    paths = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix})
    binds = {exe, paths["stdlib"], paths["platstdlib"]}
    with open("/proc/self/maps") as maps:  # the libpython really loaded (its build-time LIBDIR may be stale)
        binds |= {fields[5].strip() for fields in (line.split(None, 5) for line in maps)
                  if len(fields) == 6 and "/libpython" in fields[5]}
    if as_other_uid and not all(_readable_by_others(p) for p in binds):
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        system = shutil.which(version, path="/usr/local/bin:/usr/bin")
        if system is None:
            raise SandboxUnavailable(f"{exe} cannot be read by the sandbox's uid and there is no system {version}")
        return os.path.realpath(system), (), ()
    hide = {paths["purelib"], paths["platlib"]}
    return exe, tuple(sorted(binds)), tuple(sorted(p for p in hide if os.path.isdir(p)))


def _readable_by_others(path: str) -> bool:
    """Whether a uid that is neither the owner nor in the group can read path (and traverse to it)."""
    p = Path(path)
    try:
        return bool(p.stat().st_mode & stat.S_IROTH) and all(d.stat().st_mode & stat.S_IXOTH for d in p.parents)
    except OSError:
        return False


@contextlib.contextmanager
def _sandbox_files(code: bytes, conf: Confinement, limits: SandboxLimits, slot: int):
    """(the bwrap command line up to the interpreter and its flags, Popen's arguments: the fds bwrap
    reads and, as root, the uid it runs as). bwrap copies the code into the sandbox's home and
    sandbox_child.py to its root from files (the project tree may not be readable by that uid), and
    reads the seccomp filter from a third."""
    with tempfile.TemporaryFile() as src, tempfile.TemporaryFile() as child, tempfile.TemporaryFile() as bpf:
        src.write(code)
        src.flush()
        src.seek(0)
        pass_fds = [src.fileno()]

        child.write(CHILD.read_bytes())
        child.flush()
        child.seek(0)
        pass_fds.append(child.fileno())
        exe, binds, hide = _interpreter(_kernel_root())
        argv = [conf.bwrap, "--unshare-all", "--unshare-user", "--uid", "1000", "--gid", "1000",
                "--hostname", "sandbox", "--disable-userns", "--die-with-parent", "--new-session", "--clearenv"]
        systems = [p for p in _SYSTEM if os.path.isdir(p) and not os.path.islink(p)]
        for path in _SYSTEM:
            if os.path.islink(path):
                argv += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                argv += ["--ro-bind", path, path]
        for path in binds:
            if not any(path == s or path.startswith(s + "/") for s in systems):
                argv += ["--ro-bind", path, path]
        for path in hide:
            argv += ["--tmpfs", path, "--remount-ro", path]
        size = str(limits.disk_mb << 20)
        argv += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache", "--ro-bind-data", str(child.fileno()),
                 "/sandbox_child.py",
                 "--proc", "/proc", "--dev", "/dev", "--size", size, "--tmpfs", "/dev/shm", "--size", size,
                 "--tmpfs", "/tmp", "--size", size, "--tmpfs", HOME, "--file", str(src.fileno()), f"{HOME}/main.py",
                 "--chdir", HOME, "--remount-ro", "/", "--setenv", "HOME", HOME, "--setenv", "TMPDIR", "/tmp",
                 "--setenv", "LANG", "C.UTF-8", "--setenv", "PATH", "/usr/bin:/bin"]
        if conf.seccomp:
            bpf.write(_seccomp_bpf())
            bpf.flush()
            bpf.seek(0)
            argv += ["--seccomp", str(bpf.fileno())]
            pass_fds.append(bpf.fileno())
        popen = {"pass_fds": tuple(pass_fds)}
        if _kernel_root():  # root's processes are exempt from RLIMIT_NPROC, even in a user namespace
            uid = SANDBOX_UID_BASE + slot
            popen.update(user=uid, group=uid, extra_groups=[])
        yield argv + ["--", exe, "-I", "-S", "-u", "-X", "utf8"], popen


def _run(code: str, limits: SandboxLimits, conf: Confinement, slot: int) -> str:
    child_limits = json.dumps({**asdict(limits), "cpu_s": int(limits.timeout_s) + 1})
    source = code.encode("utf-8", errors="surrogatepass")
    with contextlib.ExitStack() as stack:
        out, err = stack.enter_context(tempfile.TemporaryFile()), stack.enter_context(tempfile.TemporaryFile())
        if conf.bwrap:
            argv, popen = stack.enter_context(_sandbox_files(source, conf, limits, slot))
            argv, env, cwd = argv + ["/sandbox_child.py", child_limits], {}, None
        else:  # the unsafe opt-in: the same child, on the host, in a temporary directory
            cwd = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="crawl2chat-python-")))
            (cwd / "main.py").write_bytes(source)
            argv, popen = [sys.executable, "-I", "-S", "-u", "-X", "utf8", str(CHILD), child_limits], {}
            env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "TMPDIR": str(cwd), "LANG": "C.UTF-8"}
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd, env=env,
                                start_new_session=True, close_fds=True, **popen)
        try:
            rc, timed_out = proc.wait(timeout=limits.timeout_s), False
        except subprocess.TimeoutExpired:
            rc, timed_out = None, True
        finally:
            _kill_group(proc, wait_s=0.5)  # bwrap and its init: the kernel then empties the PID namespace
        return _result(_head(out), out.seek(0, os.SEEK_END), _last_line(err), rc, timed_out, limits)


def _kill_group(proc: subprocess.Popen, wait_s: float) -> None:
    """SIGKILL the child's process group, reap the child, and give the rest of the group (which the
    kernel kills asynchronously) up to wait_s to be gone."""
    deadline = time.monotonic() + wait_s
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.005)


def _head(f) -> str:
    f.seek(0)
    return f.read(_READ_LIMIT).decode("utf-8", errors="replace")


def _last_line(f) -> str:
    f.seek(0, os.SEEK_END)
    f.seek(max(0, f.tell() - 4096))
    lines = [ln for ln in f.read().decode("utf-8", errors="replace").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def _result(stdout: str, stdout_bytes: int, err_line: str, rc: int | None, timed_out: bool,
            limits: SandboxLimits) -> str:
    file_cap = limits.file_mb << 20
    text = stdout
    if len(text) > limits.max_output_chars or stdout_bytes > _READ_LIMIT:
        text = text[:limits.max_output_chars] + f"\n[output truncated: {stdout_bytes} bytes in all]"
    error = None
    if timed_out:
        error = f"timed out after {limits.timeout_s:g} s"
    elif rc is not None and (rc < 0 or rc > 128):  # bwrap's init exits 128 + the signal that ended the code
        error = _signal_error(-rc if rc < 0 else rc - 128, limits)
    elif stdout_bytes >= file_cap:
        error = f"output exceeded {limits.file_mb} MB; the program was stopped"
    elif rc:
        error = err_line or f"exit status {rc}"
    if error is None:
        return text.rstrip("\n")
    return (text.rstrip("\n") + "\n" if text.strip() else "") + f"Error: {error}"


def _signal_error(sig: int, limits: SandboxLimits) -> str:
    if sig == signal.SIGXCPU:
        return f"CPU time limit exceeded ({int(limits.timeout_s) + 1} s)"
    if sig == signal.SIGXFSZ:
        return f"output exceeded {limits.file_mb} MB; the program was stopped"
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = str(sig)
    return f"the process died with signal {name}"


PROBE = """import json, os, socket
status = dict(line.split(':', 1) for line in open('/proc/self/status') if ':' in line)
print(json.dumps({"pid": os.getpid(), "uid": os.getuid(), "interfaces": sorted(n for _, n in socket.if_nameindex()),
                  "seccomp": status['Seccomp'].strip() == '2', "home": os.path.expanduser('~')}))
"""


def isolation() -> dict:
    """What confinement is in force, measured by a probe in the sandbox: mechanism and detail (from
    confinement()), and as the probe saw it, pid_namespace (it is PID 2 under bwrap's init), uid,
    network (True: nothing but a loopback of its own), seccomp (a filter is loaded) and home."""
    conf = confinement()
    report = {"mechanism": conf.mechanism, "detail": conf.detail}
    if conf.disabled:
        return report
    out = python_tool(PROBE)
    try:
        seen = json.loads(out)
    except ValueError:
        return {**report, "error": out}
    return {**report, "pid_namespace": seen["pid"] <= 2, "uid": seen["uid"], "network": seen["interfaces"] == ["lo"],
            "seccomp": seen["seccomp"], "home": seen["home"]}
