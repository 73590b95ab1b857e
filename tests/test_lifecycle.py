"""Workers die with their parent: a SIGKILLed run leaves no orphan working on, or holding the
staging lock of its output."""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from pipelines.lifecycle import die_with_parent

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def survivors(marker: str) -> list[psutil.Process]:
    """Live processes whose command line holds `marker` (forked workers keep their parent's); an
    orphan's zombie, waiting for PID 1 to reap it, counts as gone."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if p.info["status"] != psutil.STATUS_ZOMBIE and marker in " ".join(p.info["cmdline"] or ()):
            found.append(p)
    return found


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def kill_and_check_orphans(parent: subprocess.Popen, marker: str) -> None:
    """SIGKILL only the parent; every process of its tree must be gone within a few seconds."""
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(10)
    try:
        wait_for(lambda: not survivors(marker), 5, "the workers to die")
    except AssertionError:
        left = survivors(marker)
        for p in left:  # freeze first, so none can fork a replacement, then kill: leave nothing behind
            with contextlib.suppress(psutil.Error):
                p.suspend()
        for p in left:
            with contextlib.suppress(psutil.Error):
                p.kill()
        raise AssertionError(f"orphaned workers still alive after their parent was killed: "
                             f"{[p.pid for p in left]}") from None


def _child(expected_parent: int) -> None:
    die_with_parent(expected_parent)


def _pid(_=None) -> int:
    return os.getpid()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_die_with_parent_race_check():
    """A worker whose parent died before the signal was armed (it was re-parented) ends at once;
    so does one whose starter is a zombie. A worker of a live starter keeps running."""
    mp = multiprocessing.get_context("fork")
    zombie = subprocess.Popen(["true"])  # exits and is not reaped: a zombie
    wait_for(lambda: psutil.Process(zombie.pid).status() == psutil.STATUS_ZOMBIE, 10, "a zombie")
    cases = {os.getpid(): 0, os.getpid() + 10_000_000: -signal.SIGKILL, zombie.pid: -signal.SIGKILL}
    for expected, exitcode in cases.items():
        p = mp.Process(target=_child, args=(expected,))
        p.start()
        p.join(10)
        assert p.exitcode == exitcode, expected
    zombie.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_pool_workers_started_by_a_forkserver_run():
    """Under forkserver (Python 3.14's default on Linux) a worker's parent is the forkserver, not
    the process in `initargs`: the race check must not kill it."""
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("forkserver"),
                             initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        assert pool.submit(_pid).result(timeout=60) != os.getpid()


HUNG_EXTRACTION = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
from pipelines.document import Document
from pipelines.extraction import Extraction
from pipelines.runner import run_stages
stage = Extraction(extractor="test_extraction:flaky_extractor", workers=2, timeout_s=600)
docs, _ = run_stages(iter([Document("HANG", "a"), Document("HANG", "b")]), [stage])
next(docs)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_extraction_workers_die_with_their_parent():
    """Workers stuck in an extraction (the reason they exist) would not notice a closed pipe."""
    marker = f"c2c-test-{uuid.uuid4().hex}"
    proc = subprocess.Popen([sys.executable, "-c", HUNG_EXTRACTION, marker], cwd=REPO)
    try:
        parent = psutil.Process(proc.pid)
        wait_for(lambda: len(parent.children()) >= 2, 60, "two extraction workers")
        kill_and_check_orphans(proc, marker)
    finally:
        if proc.poll() is None:
            proc.kill()


SLOW_EXTRACTOR = """
import os, time
def extract(html):
    if os.environ.get("C2C_TEST_SLOW"):
        time.sleep(0.5)  # keeps the run busy long enough to be killed mid-file
    return "text of a page"
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_killed_process_run_leaves_no_workers_and_a_rerun_succeeds(tmp_path):
    """`crawl2chat process --workers 2` SIGKILLed mid-run: its pool workers and their extractor
    workers die with it, so nothing holds the staging lock and the rerun sweeps the dead staging
    directory and succeeds."""
    from pipelines.samplecrawl import generate_crawl
    warcs = [str(p) for p in generate_crawl(tmp_path / "crawl", pages=40, seed=0, files=4).warc_paths]
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "slow_extractor.py").write_text(SLOW_EXTRACTOR)
    config = tmp_path / "slow.yaml"
    config.write_text("extraction:\n  extractor: slow_extractor:extract\n  workers: 1\n  timeout_s: 30\n")
    out = tmp_path / "out"
    crawl2chat = Path(sys.executable).with_name("crawl2chat")
    cmd = [str(crawl2chat), "process", *warcs, "--out", str(out), "--workers", "2", "--config", str(config)]
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "plugins")}

    proc = subprocess.Popen(cmd, env={**env, "C2C_TEST_SLOW": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        parent = psutil.Process(proc.pid)
        # two pool workers, each with its extractor worker: mid-file
        wait_for(lambda: len(parent.children(recursive=True)) >= 4, 60,
                 "pool workers and their extractor workers")
        staging = [d for d in tmp_path.glob(".out.staging.*") if d.is_dir()]
        assert staging, "the run should be writing into a staging directory"
        kill_and_check_orphans(proc, str(out))  # the workers' command line is the parent's
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists() and all(d.exists() for d in staging)  # killed: nothing swapped in

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (out / "stats.json").is_file()
    assert not any(d.exists() for d in staging), "the dead run's staging directory was not swept"
