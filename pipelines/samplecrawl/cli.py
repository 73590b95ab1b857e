"""`crawl2chat sample-crawl --out DIR --pages N --seed S [--crawl NAME] [--files K]`."""
from __future__ import annotations

import json
import time


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="output folder (crawl-data/ and manifest.jsonl go here)")
    parser.add_argument("--pages", type=int, default=200, help="number of captures (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="same seed -> byte-identical files")
    parser.add_argument("--crawl", default="CC-MAIN-2099-01", help="crawl name (sets the dates)")
    parser.add_argument("--files", type=int, default=2, help="number of WARC files")
    parser.add_argument("--quirks", action="store_true",
                        help="plant reader quirks real archives have (chunked header on a de-chunked body, "
                             "no HTTP headers, a last file in ClueWeb09's WARC/0.18 LF format)")
    parser.add_argument("--small-pages", action="store_true",
                        help="~4 KB pages without the real-page chrome (same texts and fates; faster to process)")


def main(args) -> int:
    from pipelines.samplecrawl import generate_crawl

    t0 = time.perf_counter()
    info = generate_crawl(args.out, pages=args.pages, seed=args.seed, crawl=args.crawl, files=args.files,
                          quirks=args.quirks, small_pages=args.small_pages)
    print(json.dumps({"warc_files": [str(p) for p in info.warc_paths], "manifest": str(info.manifest_path),
                      "listing": str(info.paths_listing), "captures": info.captures, "planned": info.counts,
                      # HTML page sizes in bytes; ../shared/realweb's real pages: median 111,010, mean 181,505,
                      # Common-Crawl-like part (<= 100 KB) median 62,355; Common Crawl averages ~50 KB
                      "page_bytes": info.page_bytes,
                      "seconds": round(time.perf_counter() - t0, 2)}, indent=2))
    return 0
