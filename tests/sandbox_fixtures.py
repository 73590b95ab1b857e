"""Bubblewrap for the python tool's tests: installed on first use when we may (CI runs as root on
Debian), and a skip that says why where the sandbox cannot be built (the fail-closed tests in
test_python_tool.py run everywhere)."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def bubblewrap() -> str:
    """The path of a bwrap that can build the python tool's sandbox here, else skip with the reason."""
    if shutil.which("bwrap") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
        subprocess.run(["apt-get", "install", "-y", "-qq", "bubblewrap"], env=env, capture_output=True, timeout=600)
    from training.engine.python_tool import confinement
    conf = confinement()
    if conf.mechanism != "bubblewrap":
        pytest.skip(f"the python tool's sandbox cannot run here: {conf.detail}")
    return conf.bwrap
