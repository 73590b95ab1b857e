"""What the python tool's sandbox costs a call: wall time of a trivial program in the bubblewrap
sandbox against the same child run unconfined (the CRAWL2CHAT_UNSAFE_PYTHON_TOOL path), printed as JSON.

    .venv/bin/python bench/python_tool.py [--runs 20]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.engine import python_tool as pt  # noqa: E402


def timings(runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        assert pt.python_tool("print(6*7)") == "42"
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=20)
    args = p.parse_args()
    conf = pt.confinement()
    result = {"machine": f"{os.cpu_count()} x {platform.machine()}", "euid": os.geteuid(),
              "mechanism": conf.mechanism, "seccomp": conf.seccomp, "runs": args.runs}
    if not conf.disabled:
        sandboxed = timings(args.runs)
        result.update(sandboxed_median_ms=round(1000 * statistics.median(sandboxed), 1),
                      sandboxed_max_ms=round(1000 * max(sandboxed), 1))
    path = os.environ["PATH"]
    os.environ.update(PATH="", **{pt.UNSAFE_ENV: "1"})  # no bwrap: the unconfined opt-in, for the baseline
    try:
        plain = timings(args.runs)
    finally:
        os.environ["PATH"] = path
        del os.environ[pt.UNSAFE_ENV]
    result.update(unconfined_median_ms=round(1000 * statistics.median(plain), 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
