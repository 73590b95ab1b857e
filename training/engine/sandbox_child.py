"""The python tool's child process: confine itself, then run ./main.py. Stdlib only, no project imports.

Started by python_tool.py as `python -I -S -u -X utf8 sandbox_child.py LIMITS_JSON` in a fresh working
directory, in its own session, stdin closed, stdout/stderr on capped files. Everything here runs
before the first line of user code, so the limits hold for all of it (the parent could set them in a
preexec_fn, but that is unsafe in a threaded parent like the server; doing it here is not).

1. unshare a network namespace (only a down loopback: no network at all) and a PID namespace, as root
   or through a user namespace where the kernel allows; else "import socket" is blocked (best effort).
2. With a PID namespace: fork an init (PID 1) that only reaps, and fork the worker under it. When init
   dies (the parent kills the process group on timeout), the kernel kills everything in the namespace,
   including processes that left the group with setsid().
3. The worker drops root to a uid of its own (RLIMIT_NPROC is not enforced for root, so only then
   does it stop a fork bomb), sets CPU, address space, process, file size and open file limits and
   runs the code. The interpreter's stdlib may not be readable by that uid (a Python under /root), so
   the modules arithmetic and text code reach for are imported before root is dropped (PRELOAD).
   A last bare expression is printed as the REPL prints it; an exception prints its last traceback
   line to stderr and exits 1.
"""
import ast
import ctypes
import json
import os
import resource
import signal
import sys
import traceback

CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
PRELOAD = ("math", "cmath", "itertools", "functools", "operator", "collections", "heapq", "bisect", "re",
           "string", "textwrap", "unicodedata", "json", "datetime", "calendar", "time", "random",
           "statistics", "fractions", "decimal", "numbers", "copy", "pprint", "dataclasses", "enum",
           "typing", "hashlib", "base64", "struct", "array", "threading", "io", "csv")  # ~50 ms


def isolate() -> tuple[bool, bool]:
    """(network isolated, PID namespace) after trying the namespace sets from strongest to weakest."""
    libc = ctypes.CDLL(None, use_errno=True)
    for flags in (CLONE_NEWNET | CLONE_NEWPID, CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID,
                  CLONE_NEWNET, CLONE_NEWUSER | CLONE_NEWNET):
        if libc.unshare(flags) == 0:
            return True, bool(flags & CLONE_NEWPID)
    return False, False


def mirror(pid: int) -> None:
    """Wait for pid and end this process the same way (exit status or signal)."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            os._exit(1)
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status))


def init(worker: int) -> None:
    """PID 1 of the namespace: reap orphans until the worker ends, then end like it."""
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(1)
        if pid == worker:
            if os.WIFSIGNALED(status):  # PID 1 ignores signals it does not handle: exit 128 + sig
                os._exit(128 + os.WTERMSIG(status))
            os._exit(os.waitstatus_to_exitcode(status))


def confine(limits: dict, net: bool) -> None:
    if os.getuid() == 0 and limits.get("uid") is not None:
        for name in PRELOAD + (("socket", "encodings.idna") if net else ()):  # harmless: no network
            try:
                __import__(name)
            except ImportError:
                pass
        try:
            os.setgroups([])
            os.setgid(limits["uid"])
            os.setuid(limits["uid"])
        except PermissionError:  # root without CAP_SETUID: stays root, RLIMIT_NPROC then does not bind
            pass
    mb = 1 << 20
    for res, value in ((resource.RLIMIT_CPU, limits["cpu_s"]), (resource.RLIMIT_AS, limits["memory_mb"] * mb),
                       (resource.RLIMIT_NPROC, limits["processes"]), (resource.RLIMIT_FSIZE, limits["file_mb"] * mb),
                       (resource.RLIMIT_NOFILE, limits["open_files"]), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(res, (value, value))


def run(path: str) -> None:
    with open(path, encoding="utf-8") as f:
        source = f.read()
    env = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        tree = ast.parse(source, "<python>")
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, "<python>", "exec"), env)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), "<python>", "eval"), env)
            if value is not None:
                print(repr(value))
        sys.stdout.flush()
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - the model gets the error line, whatever it is
        sys.stderr.write(traceback.format_exception_only(type(e), e)[-1])
        sys.stderr.flush()
        os._exit(1)


def main() -> None:
    limits = json.loads(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    net, pidns = isolate()
    if not net:  # best effort: the socket modules cannot be imported (code can still undo this)
        for name in ("socket", "_socket", "ssl", "_ssl"):
            sys.modules[name] = None
    if pidns:
        first = os.fork()  # the first child of unshare(CLONE_NEWPID) is the namespace's PID 1
        if first:
            mirror(first)
        worker = os.fork()
        if worker:
            init(worker)
    confine(limits, net)
    run("main.py")


if __name__ == "__main__":
    main()
