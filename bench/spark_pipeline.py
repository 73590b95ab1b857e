"""The data pipeline through Spark vs the single-machine CLI on the same generated crawl.

    python bench/spark_pipeline.py [--pages 20000] [--files 16]

Runs, each on a fresh output folder: `process_warcs(workers=2)` (the `crawl2chat process` code
path), then Spark `local[2]` and `local[1]` doing the same work (per-batch stages with one task per
WARC file, then MinHash dedup and PII over the crawl). Each Spark run is its own process, so each
starts a cold JVM, as a Dagster step does; session start (JVM up, first job) is timed separately
and excluded from docs/s. Peak RSS of the driver and of any Python worker (Spark's python workers
are children of the JVM) is sampled with psutil. Prints one JSON object.

Dedup and PII on Spark cost ~15 s per crawl whatever its size on a 2-core laptop (a dozen Spark
jobs on a cold JVM, each Python worker loading its models), where the CLI pays ~4 s. On a 5,000-page
crawl the whole CLI run takes ~30 s, so that fixed cost dominates; the default of 20,000 pages
measures throughput instead. Both sizes are worth a look: `phases` shows where the time went.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402

from pipelines.config import load_config  # noqa: E402
from pipelines.process import process_warcs  # noqa: E402
from pipelines.samplecrawl import generate_crawl  # noqa: E402


class PeakRSS:
    """Samples the RSS of this process's descendants: peak per kind (java, python worker)."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.peaks, self._stop = interval, {"java": 0, "python_worker": 0}, threading.Event()

    def __enter__(self):
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            for p in me.children(recursive=True):
                try:
                    kind = "java" if "java" in p.name() else "python_worker"
                    self.peaks[kind] = max(self.peaks[kind], p.memory_info().rss)
                except psutil.Error:
                    pass
            time.sleep(self.interval)


def run_spark(master: str, warcs, out: Path, cfg: dict) -> dict:
    from pipelines.spark import build_spark_session, dedup_crawl, process_batch, scrub_pii
    t0 = time.perf_counter()
    spark = build_spark_session(master)
    spark.range(1).count()  # the JVM and a first job are up
    start = time.perf_counter() - t0
    with PeakRSS() as rss:
        t1 = time.perf_counter()
        batch = process_batch(spark, warcs, out / "filtered", out / "removed", cfg)
        t2 = time.perf_counter()
        dedup_crawl(spark, [out / "filtered"], out / "deduped", out / "removed_dedup", cfg)
        t3 = time.perf_counter()
        scrub_pii(spark, out / "deduped", out / "clean", cfg)
        seconds = time.perf_counter() - t1
        phases = {"batch_s": round(t2 - t1, 2), "dedup_s": round(t3 - t2, 2),
                  "pii_s": round(time.perf_counter() - t3, 2)}
    spark.stop()
    records = batch["warc_reader"].docs_in
    return {"master": master, "session_start_s": round(start, 2), "seconds": round(seconds, 2),
            "docs_per_s": round(records / seconds, 1), "records": records, "phases": phases,
            "kept_after_filters": batch["fineweb_quality"].docs_out,
            "peak_rss_mb": {"driver": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                            **{k: round(v / 2**20) for k, v in rss.peaks.items()}}}


def run_spark_process(master: str, crawl: Path, out: Path) -> dict:
    """run_spark in a fresh interpreter (and so a fresh JVM)."""
    cmd = [sys.executable, __file__, "--spark-only", master, "--crawl", str(crawl), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{master} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pages", type=int, default=20000)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--spark-only", metavar="MASTER", help=argparse.SUPPRESS)
    ap.add_argument("--crawl", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    cfg = load_config()
    if args.spark_only:  # the child of run_spark_process
        warcs = sorted(args.crawl.rglob("*.warc.gz"))
        print(json.dumps(run_spark(args.spark_only, warcs, args.out, cfg)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        info = generate_crawl(tmp / "crawl", pages=args.pages, seed=0, files=args.files)
        warcs = info.warc_paths
        with PeakRSS() as rss:
            t0 = time.perf_counter()
            stats = process_warcs(warcs, tmp / "cli", cfg, workers=2)
            cli_s = time.perf_counter() - t0
        records = stats["warc_reader"].docs_in
        cli = {"workers": 2, "seconds": round(cli_s, 2), "docs_per_s": round(records / cli_s, 1),
               "records": records, "peak_rss_mb": {"driver": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                                                   "worker": round(rss.peaks["python_worker"] / 2**20)}}
        assert sorted(map(str, warcs)) == [str(p) for p in sorted((tmp / "crawl").rglob("*.warc.gz"))]
        local2 = run_spark_process("local[2]", tmp / "crawl", tmp / "spark2")
        local1 = run_spark_process("local[1]", tmp / "crawl", tmp / "spark1")
    out = {"bench": "spark_pipeline", "pages": args.pages, "warc_files": args.files,
           "cpu": f"{os.cpu_count()} cores", "load_avg_1m": round(os.getloadavg()[0], 2),
           "single_machine_cli": cli, "spark_local2": local2, "spark_local1": local1,
           "spark_overhead_vs_cli_pct": round(100 * (cli["docs_per_s"] / local2["docs_per_s"] - 1), 1),
           "scaling_local1_to_local2": round(local2["docs_per_s"] / local1["docs_per_s"], 2)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
