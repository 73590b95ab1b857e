"""Worker processes die with their parent.

A SIGKILLed parent runs no cleanup, so its forked workers would live on as orphans (parent PID 1):
still working, and still holding every file descriptor they inherited, among them the flock of
the output's staging directory (`pipelines/io.py`), so the next run could not sweep it. On Linux
the kernel can send a child a signal when its parent dies (prctl PR_SET_PDEATHSIG); each worker
asks for SIGKILL first thing. Elsewhere this is a no-op (logged at debug level).

The signal fires when the *thread* that forked the child exits, not only the process: fork
workers from a thread that outlives them (the main thread, or the one that owns the pool).
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from pathlib import Path

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(expected_parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies. `expected_parent` is the PID of
    the process that started the worker, taken before the fork (a pool's `initargs`): if it died
    before the signal was armed, the signal would never come, so this process ends at once."""
    if not sys.platform.startswith("linux"):
        log.debug("die_with_parent: no PR_SET_PDEATHSIG on %s; workers may outlive a killed parent",
                  sys.platform)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.debug("die_with_parent: prctl failed: %s", os.strerror(ctypes.get_errno()))
        return
    # Re-parented already: the parent died between fork and prctl. (A forkserver's child has the
    # forkserver as parent, which exits when the process that asked for the worker does: fine as
    # long as that process lives.)
    if os.getppid() != expected_parent and not _alive(expected_parent):
        os.kill(os.getpid(), signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running, and not a zombie that only waits to be reaped (Linux /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
