"""`make services` as a user runs it: up on loopback, secrets only in a 0600 env file, nobody
unauthenticated runs code, Ctrl-C leaves nothing (its own module: the services it starts are its own,
and `make test`'s workers take a file each)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from pipelines import services, spark_services
from service_probes import command_lines_holding, connect_client, rest_submission

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_make_services_serves_until_ctrl_c_then_leaves_nothing(tmp_path):
    """`make services` (pipelines.services_cli): up on loopback, the env file a client sources (0600,
    the passwords in it and not on the terminal nor on any command line), nobody without them runs
    code (no REST submissions, Spark Connect and MLflow refuse unauthenticated clients), Ctrl-C
    stops every process it started, exit 0."""
    import signal

    import psutil
    import requests
    if os.geteuid() == 0:
        # Postgres then runs as `postgres`: a data dir below pytest's 0700 tmp is refused, clearly
        with pytest.raises(services.ServiceError, match="cannot enter"):
            services.start_postgres(data_dir=tmp_path / "pg")
        tmp_path = Path(tempfile.mkdtemp(prefix="crawl2chat-test-"))
        tmp_path.chmod(0o711)
    launcher = subprocess.Popen([str(services.BIN / "python"), "-m", "pipelines.services_cli", "--workers", "1",
                                 "--data-dir", str(tmp_path / "state")], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 600
        while not any("In another shell" in line for line in lines):
            line = launcher.stdout.readline()
            assert line and time.monotonic() < deadline, "".join(lines)
            lines.append(line)
        env_file = tmp_path / "state" / "services.env"
        assert env_file.stat().st_mode & 0o777 == 0o600
        env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        hidden = [env[k] for k in ("DAGSTER_POSTGRES_PASSWORD", "SPARK_AUTH_SECRET", "MLFLOW_TRACKING_PASSWORD",
                                   "SPARK_CONNECT_AUTHENTICATE_TOKEN")]
        assert not any(h in "".join(lines) for h in hidden)
        assert command_lines_holding(hidden) == []
        assert env["CRAWL2CHAT_SPARK_MASTER"].startswith("spark://127.0.0.1:")

        # MLflow: the env file's account gets in, nobody else does
        with urllib.request.urlopen(env["MLFLOW_TRACKING_URI"] + "/health", timeout=10) as r:
            assert r.status == 200
        api = env["MLFLOW_TRACKING_URI"] + "/api/2.0/mlflow/experiments/search?max_results=5"
        assert requests.get(api, timeout=30).status_code == 401
        assert requests.get(api, auth=(env["MLFLOW_TRACKING_USERNAME"], "guess"), timeout=30).status_code == 401
        assert requests.get(api, auth=(env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]),
                            timeout=30).status_code == 200

        # Spark: no REST submission server, on 6066 or anywhere: the master listens on its RPC port
        # and its web UI only, and a job posted to 6066 finds nobody (unless another program on this
        # machine holds that port: then the master's own ports are the check)
        tree = psutil.Process(launcher.pid).children(recursive=True)
        master = next(p for p in tree if spark_services.SPARK_MASTER_CLASS in " ".join(p.cmdline()))
        ports = {c.laddr.port for c in master.net_connections("inet") if c.status == psutil.CONN_LISTEN}
        assert ports == {int(env["CRAWL2CHAT_SPARK_MASTER"].rsplit(":", 1)[1]),
                         int(re.search(r"spark-cluster .* web UI http://127.0.0.1:(\d+)", "".join(lines))[1])}
        ours = {c.laddr.port for p in tree for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN}
        rest = rest_submission()
        assert rest.startswith("refused") or 6066 not in ours, rest

        # Spark Connect runs a Python UDF only for a client with the token
        remote, token = env["CRAWL2CHAT_SPARK_REMOTE"], env["SPARK_CONNECT_AUTHENTICATE_TOKEN"]
        port = remote.rsplit(":", 1)[1]
        assert connect_client(f"sc://127.0.0.1:{port}", None).startswith("REFUSED")
        assert connect_client(remote, "not-" + token).startswith("REFUSED")
        assert connect_client(remote, token) == "RAN 3"

        spawned = psutil.Process(launcher.pid).children(recursive=True)
        assert len(spawned) >= 4  # postgres, mlflow, spark master + worker, connect (and their children)
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=120) == 0, launcher.stdout.read()
    finally:
        if launcher.poll() is None:  # a failed check: still stop what it started (SIGKILL would orphan it)
            launcher.send_signal(signal.SIGINT)
            try:
                launcher.wait(timeout=120)
            except subprocess.TimeoutExpired:
                launcher.kill()
    assert [p.pid for p in spawned if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    assert (tmp_path / "state" / "postgres" / "data" / "PG_VERSION").exists()  # --data-dir keeps the data
    if os.geteuid() == 0:
        shutil.rmtree(tmp_path)
