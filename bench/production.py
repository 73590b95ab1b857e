"""The production shape vs the embedded default, on real services started on this machine.

    python bench/production.py [--pages 2000] [--files 4] [--steps 200]

1. The data pipeline (per-batch stages, one task per WARC file, then MinHash dedup and PII) on the
   same generated crawl through Spark `local[2]`, a standalone cluster of 2 workers x 1 core
   (pipelines/services.py, spark.authenticate on), and Spark Connect in front of `local[2]`.
   Each run is its own driver process (a cold JVM, as a Dagster step has); session start is
   timed apart and excluded from docs/s. The cluster's executors get the code, the LID model and
   the block lists shipped (pipelines/spark/ship.py); local mode reads them in place.
2. MLflow logging per training step (a loss, lr, grad norm and tokens/s through the trainer's
   Tracker) to SQLite and to a tracking server on Postgres over HTTP, flushing every step and
   every 10 steps (the trainer's default).

Prints one JSON object. On one 2-core machine the cluster cannot be faster than local[2]: it runs
the same two cores with more JVMs; what it shows is the price of the cluster path (executor
start, shipping, RPC), which a real cluster pays once per application while adding cores.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines import services, spark_services  # noqa: E402


def run_pipeline(master: str | None, remote: str | None, warcs: list[str], out: Path) -> dict:
    """The data stages on one Spark session (in this process: call it in a fresh child)."""
    from pipelines.config import load_config
    from pipelines.spark import build_spark_session, dedup_crawl, process_batch, scrub_pii
    cfg = load_config()
    t0 = time.perf_counter()
    spark = build_spark_session(master or "local[2]", remote=remote,
                                conf={} if remote else {"spark.ui.enabled": "false"})
    spark.range(1).count()  # the JVM (or the Connect session) and a first job are up
    start = time.perf_counter() - t0
    t1 = time.perf_counter()
    batch = process_batch(spark, warcs, out / "filtered", out / "removed", cfg)
    t2 = time.perf_counter()
    dedup_crawl(spark, [out / "filtered"], out / "deduped", out / "removed_dedup", cfg)
    t3 = time.perf_counter()
    pii = scrub_pii(spark, out / "deduped", out / "clean", cfg)
    seconds = time.perf_counter() - t1
    spark.stop()
    records = batch["warc_reader"].docs_in
    return {"session_start_s": round(start, 2), "seconds": round(seconds, 2),
            "docs_per_s": round(records / seconds, 1), "records": records, "kept": pii["pii"].docs_out,
            "phases": {"batch_s": round(t2 - t1, 2), "dedup_s": round(t3 - t2, 2),
                       "pii_s": round(time.perf_counter() - t3, 2)}}


def run_child(mode: str, crawl: Path, out: Path, env: dict, master: str | None = None,
              remote: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--crawl", str(crawl), "--out", str(out)]
    cmd += ["--master", master] if master else []
    cmd += ["--remote", remote] if remote else []
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    if done.returncode:
        raise RuntimeError(f"{mode} run failed:\n{done.stderr[-3000:]}")
    # the machine may be shared: the load says how much of it this run had
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "load_avg_1m_after": round(os.getloadavg()[0], 2)}


def spark_figures(crawl: Path, tmp: Path) -> dict:
    local = run_child("local[2]", crawl, tmp / "local2", {}, master="local[2]")
    cluster = spark_services.start_spark_cluster(workers=2, cores=1, memory="1g", base_dir=tmp / "cluster",
                                                 auth_secret=os.urandom(16).hex())
    try:
        standalone = run_child("standalone", crawl, tmp / "standalone", cluster.env, master=cluster.url)
    finally:
        cluster.stop()
    connect = spark_services.start_spark_connect(master="local[2]", base_dir=tmp / "connect")
    try:
        over_connect = run_child("connect", crawl, tmp / "connect-out", connect.env, remote=connect.url)
    finally:
        connect.stop()
    assert local["kept"] == standalone["kept"] == over_connect["kept"], (local, standalone, over_connect)
    return {"spark_local2": local, "spark_standalone_2x1": standalone, "spark_connect_local2": over_connect,
            "standalone_vs_local2_pct": round(100 * (standalone["docs_per_s"] / local["docs_per_s"] - 1), 1),
            "connect_overhead_pct": round(100 * (local["docs_per_s"] / over_connect["docs_per_s"] - 1), 1)}


def log_steps(tracking_uri: str, out: Path, steps: int, flush_every: int) -> dict:
    """ms per training-like step spent in MLflow logging through the trainer's Tracker."""
    from training.tracking import Tracker
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    os.environ.pop("MLFLOW_RUN_ID", None)
    with contextlib.redirect_stdout(sys.stderr):  # MLflow prints run links; stdout is the JSON
        tracker = Tracker(True, out, "crawl2chat-bench", flush_every=flush_every)
        t0 = time.perf_counter()
        for step in range(1, steps + 1):
            tracker.log_metrics({"train/loss": 5.0 / step, "lr": 3e-4, "grad_norm": 1.0, "tokens_per_s": 1e4}, step)
        tracker.finish()
    return {"flush_every": flush_every, "ms_per_step": round(1000 * (time.perf_counter() - t0) / steps, 2)}


def mlflow_figures(tmp: Path, steps: int) -> dict:
    sqlite = f"sqlite:///{tmp / 'mlflow.db'}"
    pg = services.start_postgres()
    try:
        server = services.start_mlflow_server(pg, tmp / "mlartifacts", log_dir=tmp)
        try:
            figures = {"steps": steps}
            for every in (1, 10):
                figures[f"sqlite_flush{every}"] = log_steps(sqlite, tmp / f"sqlite{every}", steps, every)
                figures[f"http_flush{every}"] = log_steps(server.url, tmp / f"http{every}", steps, every)
        finally:
            server.stop()
    finally:
        pg.stop()
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=2000)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--steps", type=int, default=200, help="training-like steps for the MLflow figures")
    for hidden in ("--child", "--crawl", "--out", "--master", "--remote"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        warcs = [str(p) for p in sorted(Path(args.crawl).rglob("*.warc.gz"))]
        print(json.dumps(run_pipeline(args.master, args.remote, warcs, Path(args.out))))
        return
    from pipelines.samplecrawl import generate_crawl
    with tempfile.TemporaryDirectory(prefix="crawl2chat-bench-") as tmp:
        tmp = Path(tmp)
        generate_crawl(tmp / "crawl", pages=args.pages, seed=0, files=args.files)
        out = {"bench": "production", "pages": args.pages, "warc_files": args.files,
               "cpu": f"{os.cpu_count()} cores", "load_avg_1m_start": round(os.getloadavg()[0], 2),
               **spark_figures(tmp / "crawl", tmp), "mlflow": mlflow_figures(tmp, args.steps),
               "load_avg_1m_end": round(os.getloadavg()[0], 2)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
