"""Staged directory outputs: swapped in whole, removed on error, and what a killed writer leaves
is swept by the next writer while a live writer's work is left alone."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.io import scratch, staged

ROOT = Path(__file__).resolve().parents[1]

WRITER = """
import os, signal, sys, time
from pathlib import Path
from pipelines.io import staged
with staged(Path(sys.argv[1])) as d:
    (d / "part-00000.parquet").write_text("half")
    print("WRITING", flush=True)
    if sys.argv[2] == "die":
        os.kill(os.getpid(), signal.SIGKILL)  # no finally block, no atexit
    time.sleep(60)
"""


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def _writer(final: Path, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(final), mode], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "WRITING"
    return proc


def test_staged_swaps_in_whole_and_discards_on_error(tmp_path):
    final = tmp_path / "out"
    with staged(final) as d:
        (d / "a.txt").write_text("one")
        assert not final.exists()
    assert (final / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError):
        with staged(final) as d:
            (d / "a.txt").write_text("two")
            raise RuntimeError("stage failed")
    assert (final / "a.txt").read_text() == "one"  # the previous output is untouched
    assert _hidden(tmp_path) == []


def test_killed_writer_is_swept_live_writer_is_not(tmp_path):
    final = tmp_path / "out"
    dead = _writer(final, "die")
    dead.wait()
    assert dead.returncode == -9
    assert any(".staging." in n for n in _hidden(tmp_path))  # what SIGKILL left behind

    live = _writer(final, "live")
    try:
        time.sleep(0.2)
        with staged(final) as d:
            (d / "a.txt").write_text("mine")
        left = _hidden(tmp_path)
        # the dead writer's staging dir and lock are gone; the live one's are still there
        assert len([n for n in left if n.endswith(".lock")]) == 1
        assert len([n for n in left if ".staging." in n and not n.endswith(".lock")]) == 1
        assert (final / "a.txt").read_text() == "mine"
    finally:
        live.kill()
        live.wait()
    with scratch(final) as s:  # the next claim sweeps the now dead one too
        assert s.is_dir()
    assert _hidden(tmp_path) == []
