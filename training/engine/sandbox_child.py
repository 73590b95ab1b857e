"""The python tool's child process: set its limits, then run ./main.py. Stdlib only, no project imports.

Started by python_tool.py as `python -I -S -u -X utf8 sandbox_child.py LIMITS_JSON` inside the
bubblewrap sandbox (or, with the unsafe opt-in, on the host in a temporary directory), stdin closed,
stdout/stderr on capped files. The rlimits are set here, before the first line of user code, so they
hold for all of it (the parent could set them in a preexec_fn, but that is unsafe in a threaded
parent like the server; doing it here is not). RLIMIT_NPROC counts the sandbox's uid in its own user
namespace, so a fork bomb starves only itself. A last bare expression is printed as the REPL prints
it; an exception prints its last traceback line to stderr and exits 1.
"""
import ast
import json
import os
import resource
import sys
import traceback


def confine(limits: dict) -> None:
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
    confine(json.loads(sys.argv[1]))
    run("main.py")


if __name__ == "__main__":
    main()
