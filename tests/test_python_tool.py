"""The python tool's sandbox, with hostile code for real: every failure comes back as an "Error: ..."
string within the limits, nothing it started outlives it, and the calling process is unharmed.
(Attacks on the host, as root and as an ordinary user, and the fail-closed cases: test_sandbox_hostile.py.)"""
from __future__ import annotations

import os
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from sandbox_fixtures import bubblewrap
from training.engine.python_tool import SandboxLimits, confinement, isolation, python_tool



@pytest.fixture(autouse=True, scope="module")
def _bwrap():
    bubblewrap()


FAST = SandboxLimits(timeout_s=1.5)
SLACK = 3.0  # seconds over the timeout a run may take on the shared box (start, kill, clean up)


SHOW_NS = "import os\nprint(os.readlink('/proc/self/ns/pid'), flush=True)\n"  # prefix: names the run's PID namespace


def leftovers(out: str, wait_s: float = 2.0) -> list[int]:
    """Live processes still in the PID namespace of the run that printed `out` (SHOW_NS's line): the
    run's own processes, not those of other sandbox runs on the machine (namespace inode numbers are
    the same seen from inside and outside). The kernel kills a PID namespace's members
    asynchronously, so they get wait_s to go."""
    ns = out.splitlines()[0]
    assert ns.startswith("pid:[") and ns != os.readlink("/proc/self/ns/pid"), out
    deadline = time.monotonic() + wait_s
    while True:
        pids = []
        for d in Path("/proc").iterdir():
            try:
                if d.name.isdigit() and os.readlink(d / "ns" / "pid") == ns and \
                        (d / "stat").read_text().split(") ")[-1][0] != "Z":
                    pids.append(int(d.name))
            except OSError:
                pass
        if not pids or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


def timed(code: str, limits: SandboxLimits = FAST) -> tuple[str, float]:
    t0 = time.monotonic()
    out = python_tool(code, limits)
    return out, time.monotonic() - t0


def test_prints_and_echoes_the_last_expression():
    assert python_tool("print(6*7)") == "42"
    assert python_tool("x = 6\nx * 7") == "42"
    assert python_tool("import math\nmath.factorial(20)") == "2432902008176640000"
    assert python_tool("print('héllo 😀')") == "héllo 😀"
    assert python_tool("x = 1") == ""
    assert python_tool("from fractions import Fraction\nFraction(1, 3) + Fraction(1, 6)") == "Fraction(1, 2)"


@pytest.mark.parametrize("code,error", [
    ("1/0", "Error: ZeroDivisionError: division by zero"),
    ("print(", "Error: SyntaxError: '(' was never closed"),
    ("raise SystemExit(3)", "Error: exit status 3"),
    ("input()", "Error: EOFError: EOF when reading a line"),  # stdin is closed
    ("x = 'a' * (1 << 34)", "Error: MemoryError"),
    ("import ctypes; ctypes.string_at(0)", "Error: the process died with signal SIGSEGV"),
    ("import os; os.abort()", "Error: the process died with signal SIGABRT"),
    # SyntaxError from Python 3.11.4 on, ValueError before (root may run the system's 3.11: see _interpreter)
    ("print\x00(1)", "Error: (SyntaxError|ValueError): source code string cannot contain null bytes"),
])
def test_failures_come_back_as_the_last_error_line(code, error):
    limits = SandboxLimits()
    out, seconds = timed(code, limits)
    assert re.fullmatch(error, out) if "|" in error else out == error
    assert seconds < limits.timeout_s  # the failure itself ended the run, not the clock


def test_output_before_an_error_is_kept():
    assert python_tool("print('partial')\n1/0") == "partial\nError: ZeroDivisionError: division by zero"


@pytest.mark.parametrize("code", ["while True: pass", "import time\ntime.sleep(60)",
                                  "import time\nwhile True:\n    try: time.sleep(10)\n    except BaseException: pass"])
def test_infinite_loops_time_out(code):
    out, seconds = timed(SHOW_NS + code)
    assert out.endswith(f"\nError: timed out after {FAST.timeout_s:g} s")
    assert FAST.timeout_s <= seconds < FAST.timeout_s + SLACK
    assert leftovers(out) == []


def test_huge_output_is_truncated_and_a_flood_is_stopped():
    out = python_tool("print('y' * 5000)")
    assert out.startswith("y" * 1000) and out.endswith("[output truncated: 5001 bytes in all]")
    assert len(out) < 1100
    limits = SandboxLimits(timeout_s=5, file_mb=1)
    out, seconds = timed("while True: print('x' * 1000)", limits)
    assert out.startswith("x" * 1000) and len(out) < 1200
    assert out.endswith("Error: output exceeded 1 MB; the program was stopped")
    assert seconds < limits.timeout_s  # the file size limit, not the clock, ended it


def test_fork_bomb_is_contained_and_cleaned_up():
    bomb = "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    out, seconds = timed(SHOW_NS + bomb)
    assert out.splitlines()[-1].startswith("Error: ")
    assert seconds < FAST.timeout_s + SLACK
    assert leftovers(out) == []
    assert python_tool("print('still fine')") == "still fine"  # the next run is not starved


def test_processes_that_leave_the_group_die_with_the_run():
    code = "import time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('parent done')"
    out = python_tool(SHOW_NS + code)
    assert out.endswith("\nparent done")
    assert leftovers(out) == []


def test_no_network_even_to_localhost():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        out = python_tool(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('connected')")
        assert out.startswith("Error: ") and "connected" not in out
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()


def test_isolation_on_this_machine_is_reported():
    iso = isolation()
    assert iso["mechanism"] == "bubblewrap", iso
    assert iso["pid_namespace"] and iso["network"] and iso["uid"] != 0 and iso["home"] == "/sandbox"
    assert iso["seccomp"] == confinement().seccomp


def test_the_seccomp_filter_refuses_keyrings_ptrace_and_terminal_injection():
    if not confinement().seccomp:
        pytest.skip("no seccomp filter here (pyseccomp or libseccomp missing)")
    code = ("import ctypes, errno, fcntl, os, termios\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "print(libc.syscall(250, 0, 0, 0, 0), errno.errorcode[ctypes.get_errno()])\n"  # keyctl (x86_64)
            "print(libc.syscall(101, 0, 0, 0, 0), errno.errorcode[ctypes.get_errno()])\n"  # ptrace(PTRACE_TRACEME)
            "try:\n    fcntl.ioctl(1, termios.TIOCSTI, b'x')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])")
    if os.uname().machine != "x86_64":
        pytest.skip("the syscall numbers below are x86_64's")
    assert python_tool(code) == "-1 EPERM\n-1 EPERM\nEPERM"


def test_fresh_private_working_directory_and_environment(monkeypatch):
    monkeypatch.setenv("CRAWL2CHAT_TEST_SECRET", "hunter2")
    out = python_tool("import os\nopen('f.txt', 'w').write('x')\nprint(os.getcwd())\nprint(sorted(os.environ))")
    cwd, env = out.splitlines()
    assert cwd == "/sandbox" and not Path(cwd).exists()  # a tmpfs of the sandbox's own, not a host directory
    assert "CRAWL2CHAT_TEST_SECRET" not in env
    assert python_tool("import os\nos.listdir('.')") == "['main.py']"  # a fresh directory each run


def test_large_files_hit_the_file_size_limit():
    out = python_tool("open('big', 'wb').write(b'0' * (8 << 20))", SandboxLimits(file_mb=1))
    assert out == "Error: OSError: [Errno 27] File too large"


def test_concurrent_runs_do_not_interfere():
    results = {}

    def run(i):
        results[i] = python_tool(f"import time\ntime.sleep(0.2)\nprint({i} * {i})")
    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: str(i * i) for i in range(4)}
