"""Download throughput of pipelines.commoncrawl over loopback: ~200 MB of gzip files served by the
project's Range-capable server in a separate process, fetched with download_warcs (streaming,
8 MiB reads, size check, gzip verification, atomic rename). Prints JSON. Target: >= 100 MB/s.

    .venv/bin/python bench/download.py [--mb 200] [--files 8] [--workers 1 4]
"""
from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.commoncrawl import download_warcs, serve_directory, verify_gzip  # noqa: E402

CRAWL = "CC-MAIN-2099-01"


def make_files(root: Path, total_mb: int, files: int) -> list[str]:
    """Gzip files of many members (like WARC files: one member per record). The payload is half
    random, half text, so it compresses about as poorly as real WARC data does... and is quick."""
    per_file = total_mb * 1_000_000 // files
    rels = []
    text = (b"<html><body><p>" + b"the quick brown fox jumps over the lazy dog " * 20 + b"</p></body></html>\n")
    for n in range(files):
        rel = f"crawl-data/{CRAWL}/segments/0/warc/bench-{n:03d}.warc.gz"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            while f.tell() < per_file:
                record = os.urandom(48_000) + text * 40
                f.write(gzip.compress(record, compresslevel=1))
        rels.append(rel)
    return rels


def _serve(root: str, q) -> None:
    with serve_directory(root) as base_url:
        q.put(base_url)
        while True:
            time.sleep(3600)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="c2c-dl-bench-"))
    try:
        src, dst = tmp / "bucket", tmp / "dest"
        t0 = time.perf_counter()
        rels = make_files(src, args.mb, args.files)
        gen_s = time.perf_counter() - t0
        total = sum((src / r).stat().st_size for r in rels)
        q = mp.get_context("spawn").Queue()
        server = mp.get_context("spawn").Process(target=_serve, args=(str(src), q), daemon=True)
        server.start()
        base_url = q.get(timeout=30)
        results = {}
        try:
            for workers in args.workers:
                for verify in (True, False):
                    shutil.rmtree(dst, ignore_errors=True)
                    t0 = time.perf_counter()
                    files = download_warcs(rels, dst, base_url, workers=workers, verify=verify)
                    dt = time.perf_counter() - t0
                    assert sum(f.stat().st_size for f in files) == total
                    results[f"workers{workers}_{'verified' if verify else 'unverified'}_MBps"] = round(total / 1e6 / dt, 1)
            t0 = time.perf_counter()
            for f in files:
                verify_gzip(f)
            verify_mbps = total / 1e6 / (time.perf_counter() - t0)
        finally:
            server.terminate()
        headline = results[f"workers{args.workers[0]}_verified_MBps"]
        print(json.dumps({
            "bench": "download", "total_MB": round(total / 1e6, 1), "files": len(rels),
            "MBps": headline, "target_MBps": 100, "meets_target": headline >= 100,
            **results, "gzip_verify_only_MBps": round(verify_mbps, 1),
            "generate_s": round(gen_s, 1), "cpus": os.cpu_count(),
            "note": "loopback HTTP/1.1, server in another process; MB = 1e6 bytes; "
                    "verified = size check + every gzip member decompressed (CRC) before the rename",
        }, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
