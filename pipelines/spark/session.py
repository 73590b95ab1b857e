"""One way to get a SparkSession: embedded `local[*]` by default, any master URL or Spark Connect.

A plain function so the Dagster resource (assets/) and the CLI wrap the same settings. The stages
only use the DataFrame API (no SparkContext / RDDs), so the same code runs on Spark Connect.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from pipelines.errors import UserError
from pipelines.spark.ship import ship_code

# The directory holding the `pipelines` package: local Python workers get it on PYTHONPATH so an
# un-installed checkout works too (an installed package is found either way).
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])


def local_defaults(master: str) -> dict:
    """Settings for an embedded session on one machine (they are ignored by a real cluster)."""
    cores = _local_cores(master)
    return {
        "spark.driver.memory": os.environ.get("CRAWL2CHAT_SPARK_DRIVER_MEMORY", "4g"),
        # Locally the JVM runs many short jobs over small shuffles (band keys, edges) while Python
        # does the heavy work, so JIT compile time outweighs peak code quality: C1 alone cut the
        # first MinHash dedup of a 5,000-page crawl from 17 s to 13 s and session start by 2-3 s.
        "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1",
        # 200 shuffle partitions (the default) means 200 tiny tasks per shuffle on a laptop;
        # a few per core is enough and AQE coalesces further.
        "spark.sql.shuffle.partitions": str(max(2, 2 * cores)),
        "spark.default.parallelism": str(max(2, cores)),
        # The UI costs about a second at start and a port; the Dagster UI is where runs are watched.
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # Reused Python workers keep the stage modules' model caches (fastText, presidio) warm
        # across tasks: a model loads once per worker process, never once per task.
        "spark.python.worker.reuse": "true",
        # Executors must run the driver's interpreter (the project venv), not whatever `python3` is.
        "spark.pyspark.python": os.environ.get("PYSPARK_PYTHON", sys.executable),
        "spark.pyspark.driver.python": sys.executable,
        "spark.executorEnv.PYTHONPATH": os.pathsep.join(
            p for p in (_PROJECT_ROOT, os.environ.get("PYTHONPATH", "")) if p),
        # Sandboxes and laptops on VPNs often cannot resolve their own hostname.
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.sql.session.timeZone": "UTC",
    }


def cluster_defaults() -> dict:
    """Settings for a cluster master (spark://, k8s://, yarn). Executors start the interpreter
    PYSPARK_PYTHON names, else the driver's own path: every node runs the project's environment
    (the same image) there. Without this they would start whatever `python3` is on their PATH."""
    return {"spark.pyspark.python": os.environ.get("PYSPARK_PYTHON", sys.executable),
            "spark.ui.showConsoleProgress": "false"}


def _local_cores(master: str) -> int:
    inner = master[master.find("[") + 1:master.find("]")] if "[" in master else "1"
    if inner == "*":
        return os.cpu_count() or 1
    try:
        return max(1, int(inner.split(",")[0]))
    except ValueError:
        return os.cpu_count() or 1


def _check_connect_url(remote: str) -> None:
    """PySpark sends a Connect token (SPARK_CONNECT_AUTHENTICATE_TOKEN, as `make services` sets)
    only over a secure channel: gRPC's local credentials when the host is literally `localhost`,
    else TLS, which a loopback server without TLS cannot answer (an obscure handshake error)."""
    from urllib.parse import urlsplit
    loopback_ip = urlsplit(remote).hostname in ("127.0.0.1", "::1")
    if os.environ.get("SPARK_CONNECT_AUTHENTICATE_TOKEN") and loopback_ip and ";use_ssl=true" not in remote:
        raise UserError(f"Spark Connect URL {remote}: with a token, name the host `localhost` "
                        f"(sc://localhost:{urlsplit(remote).port or 15002}); PySpark uses TLS for any other host")


def build_spark_session(master: str = "local[*]", remote: str | None = None,
                        app_name: str = "crawl2chat", conf: dict | None = None) -> SparkSession:
    """A SparkSession: Spark Connect when `remote` is given (sc://host:15002), else `master`.

    `conf` entries override the defaults. Settings that size the JVM (driver memory) only apply
    when this call starts it; a session already running in this process is reused as is.
    """
    if remote:
        _check_connect_url(remote)
        builder = SparkSession.builder.remote(remote).appName(app_name)
        for key, value in (conf or {}).items():
            builder = builder.config(key, str(value))
        spark = builder.getOrCreate()
        ship_code(spark)
        return spark

    settings = local_defaults(master) if master.startswith("local") else cluster_defaults()
    # PySpark takes the workers' interpreter from this variable when the context starts
    # (spark.pyspark.python alone does not reach SQL Python UDFs / mapInArrow).
    os.environ.setdefault("PYSPARK_PYTHON", settings["spark.pyspark.python"])
    if secret := os.environ.get("SPARK_AUTH_SECRET"):
        # A cluster started with spark.authenticate (docker/compose.yaml) admits only drivers that
        # know its secret. PySpark starts the driver's JVM with every setting as a `--conf` argument,
        # which every local user can read in /proc/*/cmdline, so the secret goes to the JVM through
        # the environment variable Spark's SecurityManager reads first (_SPARK_AUTH_SECRET; the JVM
        # inherits os.environ). A standalone driver still refuses to start unless the config holds
        # some spark.authenticate.secret: it gets a placeholder that the variable overrides.
        os.environ["_SPARK_AUTH_SECRET"] = secret
        from pyspark import SparkContext
        # A JVM this process started earlier (a local session first) never sees the variable: there the
        # secret goes over py4j, which is no command line. With the placeholder, the master killed the
        # application and the stopped context failed every later Spark user in the process.
        running = SparkContext._gateway is not None
        settings.update({"spark.authenticate": "true",
                         "spark.authenticate.secret": secret if running else
                         "(from the _SPARK_AUTH_SECRET environment variable)"})
    settings.update({k: str(v) for k, v in (conf or {}).items()})
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("CRAWL2CHAT_SPARK_LOG_LEVEL", "WARN"))
    ship_code(spark)  # a cluster's executors get the driver's code as --py-files (local: no-op)
    return spark
