"""How `crawl2chat export-dataset` scales: wall time and peak memory (max RSS of the CLI process)
exporting a lake crawl of N synthetic clean documents (~3 kB of text each) for growing N. The rows
are streamed in 1000-row batches, so peak memory should stay flat while the crawl grows.

    .venv/bin/python bench/dataset_export.py [--rows 10000 40000] [--shard-rows 20000]

Prints one JSON object: per N, rows, input MB, wall_s, cpu_s (user + system of the CLI, including
its ~2 s of imports; wall time on a shared machine also counts waiting), rows_per_cpu_s,
peak_rss_mb; and the peak RSS of the CLI doing nothing (`--help`) as the floor.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipelines.document import Document
from pipelines.io import ParquetSink

CRAWL = "CC-MAIN-2099-01"
_CHILD = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(r.ru_maxrss, r.ru_utime + r.ru_stime)
"""


def make_lake(root: Path, rows: int, seed: int = 0) -> int:
    """A lake crawl with `rows` clean documents in parts of 5000 and 5% as many removed; returns
    the Parquet bytes written."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(5000)]
    base = root / "crawls" / CRAWL
    for i in range(0, rows, 5000):
        sink = ParquetSink(base / "clean" / f"part-{i // 5000:05d}.parquet")
        for j in range(i, min(rows, i + 5000)):
            text = " ".join(rng.choices(words, k=500))
            sink.write(Document(text, f"<urn:uuid:{j:08d}>", {
                "dump": CRAWL, "url": f"https://example{j % 97}.org/{j}", "date": "2099-01-01T00:00:00Z",
                "file_path": "crawl-data/x.warc.gz", "language": "en", "language_score": 0.9}))
        sink.close()
    removed = ParquetSink(base / "removed" / "filtered" / "all" / "language" / "part-00000.parquet")
    for j in range(rows // 20):
        removed.write(Document("texte " * 50, f"<urn:uuid:r{j:08d}>", {"dump": CRAWL}),
                      stage="language", reason="wrong_language")
    removed.close()
    return sum(p.stat().st_size for p in base.rglob("*.parquet"))


def measure(cmd: list[str], home: str) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MB) of `cmd`, run from a fresh process so the peak is its own."""
    # no MLflow store to search: the bench measures the export itself
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"DAGSTER_HOME": home}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _CHILD, *cmd], check=True, capture_output=True, text=True,
                         env=env)
    rss, cpu = out.stdout.split()
    return time.perf_counter() - t0, float(cpu), int(rss) / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 40_000])
    ap.add_argument("--shard-rows", type=int, default=20_000)
    args = ap.parse_args()
    cli = [sys.executable, "-m", "pipelines.cli", "export-dataset"]
    with tempfile.TemporaryDirectory() as tmp:
        result = {"floor_peak_rss_mb": round(measure([*cli, "--help"], tmp)[2], 1), "runs": []}
    for rows in args.rows:
        with tempfile.TemporaryDirectory() as tmp:
            size = make_lake(Path(tmp) / "lake", rows)
            wall, cpu, rss = measure([*cli, CRAWL, "--lake", f"{tmp}/lake", "--out", f"{tmp}/ds",
                                     "--shard-rows", str(args.shard_rows)], tmp)
            result["runs"].append({"rows": rows, "input_mb": round(size / 2**20, 1), "wall_s": round(wall, 2),
                                   "cpu_s": round(cpu, 2), "rows_per_cpu_s": round(rows / cpu), "peak_rss_mb": round(rss, 1)})
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
