"""The python tool: run model-written code in a confined child process and return what it printed.

    python_tool("print(6*7)")          -> "42"
    python_tool("6*7")                 -> "42"        (a last bare expression is echoed, as in the REPL)
    python_tool("1/0")                 -> "Error: ZeroDivisionError: division by zero"
    python_tool("while True: pass")    -> "Error: timed out after 5 s"

It never raises: a crash, a timeout, an infinite loop, a memory or fork bomb or a flood of output all
come back as text ending in an "Error: ..." line, and the calling process is untouched.

Confinement (what `sandbox_child.py` does before the code runs, plus this side):
- its own session and process group, killed whole (SIGKILL) on timeout and after every run;
- a network namespace (no interfaces but a down loopback) and a PID namespace whose init takes every
  descendant down with it, when the kernel permits (root, or unprivileged user namespaces); otherwise
  the socket modules are blocked from import, a best effort only. `isolation()` says which applies;
- as root, a uid of its own per concurrent slot (RLIMIT_NPROC binds only non-root users, and a uid
  per slot keeps one run's fork bomb from starving another run's processes); not root: the caller's
  uid, whose process count then includes the caller's own threads;
- rlimits: CPU seconds, address space, processes, file size (stdout and stderr are files, so a flood
  of output stops at that size instead of filling memory), open files, no core dumps;
- `python -I -S`: no environment variables, no site-packages (stdlib only), cwd a fresh temporary
  directory removed afterwards, stdin closed, TMPDIR and HOME inside it.
Not confined: the file system is readable as the sandbox uid can read it (world-readable files), and
world-writable places such as /tmp can be written (each file capped, the run capped in time).
"""
from __future__ import annotations

import ast
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

CHILD = Path(__file__).with_name("sandbox_child.py")
SANDBOX_UID_BASE = 2_000_000_000  # far above any real account; slot i runs as BASE + i when we are root
_READ_LIMIT = 1 << 16             # bytes of stdout read back (max_output_chars is far below it)


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 5.0        # wall clock, interpreter start included
    memory_mb: int = 512          # address space (RLIMIT_AS)
    processes: int = 16           # RLIMIT_NPROC of the sandbox uid (threads count too)
    file_mb: int = 4              # largest file it may write, stdout and stderr included
    open_files: int = 64
    max_output_chars: int = 1000  # of stdout returned to the model; the rest is cut with a marker


_slots: queue.SimpleQueue[int] = queue.SimpleQueue()
for _i in range(max(2, os.cpu_count() or 1)):
    _slots.put(_i)


def python_tool(code: str, limits: SandboxLimits = SandboxLimits()) -> str:
    """Run `code`; its stdout (truncated), then "Error: ..." if it failed. Never raises."""
    try:
        return _run(code, limits)
    except Exception as e:  # noqa: BLE001 - a tool must not take the engine down
        return f"Error: the sandbox could not run the code ({type(e).__name__}: {e})"


def _run(code: str, limits: SandboxLimits) -> str:
    slot, workdir = _slots.get(), None
    try:
        workdir = Path(tempfile.mkdtemp(prefix="crawl2chat-python-"))
        uid = SANDBOX_UID_BASE + slot if os.geteuid() == 0 else None
        (workdir / "main.py").write_text(code, encoding="utf-8")
        if uid is not None:
            try:
                os.chown(workdir, uid, uid)
            except PermissionError:  # root without CAP_CHOWN (some rootless containers): keep our uid
                uid = None
        child_limits = {**asdict(limits), "uid": uid, "cpu_s": int(limits.timeout_s) + 1}
        env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir), "LANG": "C.UTF-8"}
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-u", "-X", "utf8", str(CHILD), json.dumps(child_limits)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=workdir, env=env,
                start_new_session=True, close_fds=True)
            try:
                rc, timed_out = proc.wait(timeout=limits.timeout_s), False
            except subprocess.TimeoutExpired:
                rc, timed_out = None, True
            finally:
                _kill_group(proc, wait_s=0.5)  # also whatever it left running in the background
            return _result(_head(out), out.seek(0, os.SEEK_END), _last_line(err), rc, timed_out, limits)
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
        _slots.put(slot)


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
    elif rc is not None and (rc < 0 or rc > 128):
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


PROBE = """import os
try:
    import socket
    net = sorted(name for _, name in socket.if_nameindex())
except ImportError:
    net = None
print(os.getpid(), os.getuid(), net)
"""


def isolation() -> dict:
    """What confinement applies on this machine, measured by running a probe in the sandbox."""
    out = python_tool(PROBE)
    try:
        pid, uid, net = out.split(" ", 2)
        net = ast.literal_eval(net)
    except (ValueError, SyntaxError):
        return {"error": out}
    return {"pid_namespace": int(pid) <= 2, "uid": int(uid), "root_dropped": int(uid) != 0,
            "network": ("namespace" if net == ["lo"] else "socket import blocked (best effort)"
                        if net is None else f"not isolated: {net}")}
