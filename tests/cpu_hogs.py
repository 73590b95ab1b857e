"""Processes that keep every core busy, for tests whose result must not depend on machine load.

    with cpu_hogs():            # 3 busy loops per core, each in its own session, killed on exit
        run_the_thing_again()
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys


@contextlib.contextmanager
def cpu_hogs(per_core: int = 3):
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
            for _ in range(per_core * (os.cpu_count() or 1))]
    try:
        yield hogs
    finally:
        for p in hogs:
            os.killpg(p.pid, signal.SIGKILL)  # its own session: only the hog itself
            p.wait()
