"""Time the sample crawl generator: a 1,000-page crawl on one core (target < 30 s).

    .venv/bin/python bench/generate.py [--pages 1000] [--seed 0]

Prints JSON. `cold_seconds` includes building the English prose pool (stdlib imports, once per
process); `warm_seconds` is a second crawl in the same process. Generation is single-threaded.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--files", type=int, default=2)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the target says

    from pipelines.samplecrawl import generate_crawl

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        info = generate_crawl(Path(tmp, "cold"), pages=args.pages, seed=args.seed, files=args.files)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        generate_crawl(Path(tmp, "warm"), pages=args.pages, seed=args.seed + 1, files=args.files)
        warm = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in info.warc_paths)
    print(json.dumps({"pages": args.pages, "cold_seconds": round(cold, 2), "warm_seconds": round(warm, 2),
                      "pages_per_s_cold": round(args.pages / cold, 1), "pages_per_s_warm": round(args.pages / warm, 1),
                      "warc_bytes": size, "target_seconds": 30, "ok": cold < 30}))


if __name__ == "__main__":
    main()
