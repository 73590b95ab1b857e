"""The Dagster UI for real: `dagster dev` (webserver + daemon) on loopback, a run launched through
the GraphQL API, waited for, and a headless Chromium screenshot of the asset graph."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from pipelines.samplecrawl import generate_crawl

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""
STATUS = """query Status($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium() -> str:
    """Debian's Chromium, installed on first use when we may (CI runs as root on Debian)."""
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, capture_output=True, timeout=600)
        if path := shutil.which("chromium"):
            return path
    pytest.skip("Chromium is not installed and could not be installed from Debian packages "
                "(apt-get install chromium): the UI screenshot test cannot run here")


def _graphql(url, query, variables):
    r = requests.post(f"{url}/graphql", json={"query": query, "variables": variables}, timeout=30)
    r.raise_for_status()
    return r.json()["data"]


def test_launch_through_graphql_and_screenshot_asset_graph(tmp_path):
    browser = chromium()
    crawl = generate_crawl(tmp_path / "source", pages=40, seed=5, files=1)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home)
    port, mlflow_port = _free_port(), _free_port()
    env = dict(os.environ, DAGSTER_HOME=str(home), CRAWL2CHAT_LAKE=str(tmp_path / "lake"),
               CRAWL2CHAT_CRAWL_SOURCE=str(tmp_path / "source"),
               MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
               CRAWL2CHAT_MLFLOW_ARTIFACTS=str(tmp_path / "mlartifacts"))
    # `make ui` itself: dagster dev + the MLflow UI under one launcher that Ctrl-C stops promptly
    dev = subprocess.Popen([sys.executable, "-m", "assets.ui", "--dagster-port", str(port),
                            "--mlflow-port", str(mlflow_port), "--grace", "5"],
                           cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for probe in (f"{url}/server_info", f"http://127.0.0.1:{mlflow_port}/health"):
            deadline = time.time() + 180
            while time.time() < deadline:
                try:
                    if requests.get(probe, timeout=2).ok:
                        break
                except requests.RequestException:   # refused while starting, or slow to answer under load
                    pass
                time.sleep(1)
            else:
                pytest.fail(f"{probe} did not answer within 180 s")

        params = {"selector": {"repositoryLocationName": "crawl2chat", "repositoryName": "__repository__",
                               "jobName": "discover_crawl"}, "runConfigData": {}}
        launched = _graphql(url, LAUNCH, {"params": params})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        status, deadline = None, time.time() + 240  # queued -> the daemon dequeues -> runs
        while time.time() < deadline and status not in ("SUCCESS", "FAILURE", "CANCELED"):
            time.sleep(2)
            status = _graphql(url, STATUS, {"id": run_id})["runOrError"]["status"]
        assert status == "SUCCESS"
        listing = json.loads((tmp_path / "lake" / "crawls" / "CC-MAIN-2099-01" / "listing.json").read_text())
        assert len(listing["paths"]) == len(crawl.warc_paths)

        shot = tmp_path / "asset_graph.png"
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        "--disable-quic", f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1400,900",
                        "--virtual-time-budget=20000", f"--screenshot={shot}",
                        f"{url}/asset-groups/data"], capture_output=True, timeout=120)
        assert shot.exists() and shot.stat().st_size > 10_000
        import matplotlib.image
        pixels = matplotlib.image.imread(shot)
        assert pixels.std() > 0.02  # a rendered graph, not a blank page
        artifacts = ROOT / "tests" / "artifacts"
        artifacts.mkdir(exist_ok=True)
        shutil.copy(shot, artifacts / "asset_graph.png")

        # Ctrl-C: the launcher and every process of both UIs are gone within the grace period
        import psutil
        services = psutil.Process(dev.pid).children(recursive=True)
        assert len(services) >= 3  # mlflow, dagster dev and its webserver/daemon at least
        t0 = time.monotonic()
        dev.send_signal(signal.SIGINT)
        assert dev.wait(20) == 0
        _, alive = psutil.wait_procs(services, timeout=5)
        assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive
        assert time.monotonic() - t0 < 15
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
