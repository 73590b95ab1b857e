"""Spark as real processes on this machine, bound to 127.0.0.1: a standalone master with workers,
and a Spark Connect server (the rest of the production shape is in pipelines/services.py, whose
Service, spawn and wait_ready these use).

Nobody unauthenticated runs code on them, and no secret reaches a command line (`ps` and
/proc/*/cmdline show those to every local user):

- the standalone daemons run with spark.authenticate and get the cluster secret through
  `_SPARK_AUTH_SECRET`, the environment variable Spark's SecurityManager reads before its config;
  a driver does the same (pipelines/spark/session.py);
- the master's REST submission server is off (spark.master.rest.enabled=false): it accepts
  unauthenticated job submissions on port 6066, even with spark.authenticate on, and a web page
  can post to it;
- Spark Connect admits only clients that present a pre-shared token (Spark 4's
  spark.connect.authenticate.token): the server reads it from SPARK_CONNECT_AUTHENTICATE_TOKEN,
  and so does PySpark's Connect client. PySpark sends a token only over a secure channel: gRPC's
  local credentials when the URL's host is literally `localhost` (no TLS, loopback only), TLS
  otherwise, hence sc://localhost:PORT.
"""
from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
import urllib.request
from pathlib import Path

from pipelines.services import LOOPBACK, Service, _http_ok, _port_open, free_port, spawn, wait_ready

SPARK_MASTER_CLASS = "org.apache.spark.deploy.master.Master"
SPARK_WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
SPARK_CONNECT_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
# Where Spark's SecurityManager and PySpark's Connect client look for their secrets.
AUTH_SECRET_ENV = "_SPARK_AUTH_SECRET"
CONNECT_TOKEN_ENV = "SPARK_CONNECT_AUTHENTICATE_TOKEN"
# The master's options in docker/compose.yaml too (tests/test_docker.py compares them).
MASTER_OPTS = "-Dspark.master.rest.enabled=false"


def spark_home() -> Path:
    """The Spark distribution inside the installed pyspark wheel (bin/spark-class, jars/)."""
    import pyspark
    return Path(pyspark.__file__).parent


def _spark_env(base: Path, auth_secret: str | None) -> dict:
    # SPARK_LOCAL_DIRS: shuffle and block files (and a Connect session's artifacts) under `base`,
    # not in /tmp/spark-*, so a killed service leaves nothing behind once `base` is removed.
    env = {"SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": LOOPBACK, "SPARK_LOG_DIR": str(base / "logs"),
           "SPARK_LOCAL_DIRS": str(base / "local"), "SPARK_MASTER_OPTS": MASTER_OPTS,
           "SPARK_DAEMON_MEMORY": "256m", "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable)}
    if auth_secret:
        # Same settings as docker/compose.yaml (spark.authenticate on every daemon); the secret
        # itself goes through the environment variable Spark's SecurityManager reads.
        env.update({"SPARK_MASTER_OPTS": f"{MASTER_OPTS} -Dspark.authenticate=true",
                    "SPARK_WORKER_OPTS": "-Dspark.authenticate=true", AUTH_SECRET_ENV: auth_secret})
    return env


def spark_master_command(port: int, webui_port: int) -> list[str]:
    return [str(spark_home() / "bin" / "spark-class"), SPARK_MASTER_CLASS,
            "--host", LOOPBACK, "--port", str(port), "--webui-port", str(webui_port)]


def spark_worker_command(master_url: str, webui_port: int, cores: int, memory: str, work_dir: Path) -> list[str]:
    return [str(spark_home() / "bin" / "spark-class"), SPARK_WORKER_CLASS, "--host", LOOPBACK,
            "--webui-port", str(webui_port), "--cores", str(cores), "--memory", memory,
            "--work-dir", str(work_dir), master_url]


def start_spark_cluster(workers: int = 2, cores: int = 1, memory: str = "1g", base_dir: Path | None = None,
                        auth_secret: str | None = None, timeout: float = 180.0) -> Service:
    """A standalone master and `workers` workers (`cores` cores and `memory` each), one JVM each.
    Ready when every worker is ALIVE on the master. `auth_secret`: spark.authenticate on every
    daemon; drivers then need SPARK_AUTH_SECRET (pipelines/spark/session.py reads it)."""
    base = Path(base_dir or tempfile.mkdtemp(prefix="crawl2chat-spark-"))
    port, ui = free_port(), free_port()
    url = f"spark://{LOOPBACK}:{port}"
    env = _spark_env(base, auth_secret)
    procs, logs = [], []
    # SPARK_LOCAL_IP: a driver of this loopback-only cluster must be reachable on loopback too
    svc = Service("spark-cluster", url, procs, logs, env={"CRAWL2CHAT_SPARK_MASTER": url, "SPARK_LOCAL_IP": LOOPBACK},
                  info={"web_ui": f"http://{LOOPBACK}:{ui}", "work_dir": str(base), "port": port, "ui_port": ui},
                  remove=[] if base_dir else [base])
    if auth_secret:
        svc.env["SPARK_AUTH_SECRET"] = auth_secret
    logs.append(base / "logs" / "master.log")
    procs.append(spawn("spark master", spark_master_command(port, ui), logs[-1], env))
    wait_ready(svc, lambda: _http_ok(f"http://{LOOPBACK}:{ui}/json/"), timeout, "serving its web UI")
    for i in range(workers):
        logs.append(base / "logs" / f"worker-{i}.log")
        cmd = spark_worker_command(url, free_port(), cores, memory, base / f"work-{i}")
        procs.append(spawn(f"spark worker {i}", cmd, logs[-1], env))
    wait_ready(svc, lambda: _alive_workers(ui) == workers, timeout, f"showing {workers} ALIVE workers")
    return svc


def _alive_workers(webui_port: int) -> int:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{webui_port}/json/", timeout=2) as r:
        state = json.load(r)
    return sum(w.get("state") == "ALIVE" for w in state.get("workers", []))


def spark_connect_command(port: int, master: str) -> list[str]:
    return [str(spark_home() / "bin" / "spark-submit"), "--class", SPARK_CONNECT_CLASS,
            "--name", "crawl2chat Spark Connect", "--master", master,
            "--conf", f"spark.connect.grpc.binding.address={LOOPBACK}",
            "--conf", f"spark.connect.grpc.binding.port={port}",
            "--conf", f"spark.driver.host={LOOPBACK}", "--conf", f"spark.driver.bindAddress={LOOPBACK}",
            "--conf", "spark.ui.enabled=false", "--conf", "spark.python.worker.reuse=true",
            "--conf", "spark.sql.session.timeZone=UTC"]


def start_spark_connect(master: str = "local[2]", driver_memory: str = "1g", base_dir: Path | None = None,
                        token: str | None = None, timeout: float = 180.0) -> Service:
    """A Spark Connect server (its own driver, running `master`) that admits only clients with
    `token` (default: a fresh random one); ready when its gRPC port accepts connections. Clients
    reach it as sc://localhost:PORT (CRAWL2CHAT_SPARK_REMOTE) with the token in
    SPARK_CONNECT_AUTHENTICATE_TOKEN: both are in the returned service's env."""
    base = Path(base_dir or tempfile.mkdtemp(prefix="crawl2chat-connect-"))
    port = free_port()
    token = token or secrets.token_urlsafe(24)
    url = f"sc://localhost:{port}"
    logs = [base / "logs" / "connect.log"]
    # spark-submit sizes a Connect server's JVM by SPARK_DAEMON_MEMORY, not --driver-memory
    env = {**_spark_env(base, None), "SPARK_DAEMON_MEMORY": driver_memory, CONNECT_TOKEN_ENV: token}
    proc = spawn("spark connect", spark_connect_command(port, master), logs[0], env, cwd=base)
    svc = Service("spark-connect", url, [proc], logs, env={"CRAWL2CHAT_SPARK_REMOTE": url, CONNECT_TOKEN_ENV: token},
                  remove=[] if base_dir else [base], info={"port": port})
    wait_ready(svc, lambda: _port_open(port), timeout, "accepting connections")
    return svc
