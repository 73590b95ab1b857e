"""Probes of what a local user or a web page can reach on running services (the production shape's
tests and `make services`' own): secrets on command lines, Spark Connect without its token, and a job
posted to a standalone master's REST submission port."""
from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from pipelines import services


def command_lines_holding(hidden: list[str]) -> list[tuple[int, str]]:
    """(pid, command line) of every process on this machine whose command line holds one of
    `hidden`: /proc/*/cmdline is readable by every local user."""
    found = []
    for pid in (int(d) for d in os.listdir("/proc") if d.isdigit()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(h in cmdline for h in hidden):
            found.append((pid, cmdline[:300]))
    return found


CONNECT_CLIENT = """
import sys
from pyspark.sql import SparkSession
from pyspark.sql.functions import udf
try:
    spark = SparkSession.builder.remote(sys.argv[1]).getOrCreate()
    print("RAN", spark.range(3).select(udf(lambda x: x + 1, "long")("id")).count())
except Exception as e:
    print("REFUSED", type(e).__name__, str(e).splitlines()[0][:300] if str(e) else "")
"""


def connect_client(url: str, token: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK_CONNECT", "SPARK_REMOTE"))}
    if token is not None:
        env["SPARK_CONNECT_AUTHENTICATE_TOKEN"] = token
    done = subprocess.run([str(services.BIN / "python"), "-c", CONNECT_CLIENT, url], capture_output=True,
                          text=True, env=env, timeout=300)
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:]


def rest_submission(port: int = 6066) -> str:
    """What the standalone master's REST server (6066 unless configured) makes of a job a web page
    could submit: a text/plain POST from a foreign origin, as the issue found it accepted."""
    body = json.dumps({"action": "CreateSubmissionRequest", "appResource": "file:/dev/null",
                       "mainClass": "org.apache.spark.examples.SparkPi", "appArgs": [], "clientSparkVersion": "4.0.0",
                       "environmentVariables": {}, "sparkProperties": {"spark.app.name": "crawl2chat-rest-probe"}})
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/submissions/create", data=body.encode(),
                                 headers={"Content-Type": "text/plain", "Origin": "http://attacker.example"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return f"HTTP {r.status} {r.read()[:300]!r}"
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code}"
    except urllib.error.URLError as e:
        return f"refused: {e.reason}"
