"""Is our trafilatura extractor byte-identical to FineWeb's plain call, and how much CPU does it save?

    nice -n 19 .venv/bin/python bench/extraction_identity.py [--every N] [--limit N] [--out FILE]

Runs, page by page over ../shared/realweb (all 1,310 pages by default), FineWeb's call
`trafilatura.extract(html, favor_precision=True, include_comments=False, deduplicate=True, fast=False)`
("old") and `pipelines.extraction.trafilatura_extractor()` ("new", pipelines/trafilatura_fast.py), and
compares the texts byte for byte. Each side keeps its own `deduplicate` memory (trafilatura's
process-wide LRU of seen segments, swapped in before each call, both empty at the start), so both
see the same page sequence as a fresh run would. The two calls alternate which goes first and are
timed in CPU seconds of this process, so machine load weighs on both sides alike.
The last line printed is one JSON object: pages, identical, differing ids, CPU-s old/new, speedup.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

FINEWEB_CALL = dict(favor_precision=True, include_comments=False, deduplicate=True, fast=False)


def _outcome(extract, html: str):
    try:
        return extract(html)
    except Exception as exc:  # noqa: BLE001 - an error must be the same error on both sides
        return f"<{type(exc).__name__}: {exc}>"


def compare(pages: list[tuple[str, str]]) -> dict:
    import trafilatura
    from trafilatura import deduplication
    from trafilatura.deduplication import LRUCache, LRU_SIZE

    from pipelines import trafilatura_fast
    from pipelines.extraction import trafilatura_extractor

    def old(html: str):
        return trafilatura.extract(html, **FINEWEB_CALL)
    new = trafilatura_extractor()
    sides = {"old": [old, LRUCache(maxsize=LRU_SIZE), 0.0, []], "new": [new, LRUCache(maxsize=LRU_SIZE), 0.0, []]}
    original_lru = deduplication.LRU_TEST
    try:
        for name, side in sides.items():  # first calls load lazily (justext stop lists, ...)
            deduplication.LRU_TEST = side[1]
            for _, html in pages[:3]:
                _outcome(side[0], html)
            side[1].clear()
        for i, (_, html) in enumerate(pages):
            for name in (("old", "new") if i % 2 == 0 else ("new", "old")):
                side = sides[name]
                deduplication.LRU_TEST = side[1]
                start = time.process_time()
                text = _outcome(side[0], html)
                side[2] += time.process_time() - start
                side[3].append(text)
    finally:
        deduplication.LRU_TEST = original_lru
    old_texts, new_texts = sides["old"][3], sides["new"][3]
    differing = [pid for (pid, _), a, b in zip(pages, old_texts, new_texts) if a != b]
    cpu_old, cpu_new = sides["old"][2], sides["new"][2]
    return {"pages": len(pages), "identical": len(pages) - len(differing), "differing": differing[:20],
            "extracted": sum(t is not None and not t.startswith("<") for t in old_texts),
            "cpu_s_old": round(cpu_old, 3), "cpu_s_new": round(cpu_new, 3),
            "speedup": round(cpu_old / cpu_new, 3) if cpu_new else None,
            "trafilatura": trafilatura.__version__, "broken_pins": trafilatura_fast.BROKEN_PINS}


def main() -> int:
    from realweb_warc import REALWEB, realweb_pages
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--realweb", type=Path, default=REALWEB, help="realweb folder (default ../shared/realweb)")
    parser.add_argument("--every", type=int, default=1, help="keep every N-th page (default: all)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many pages")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    pages = [(r["id"], r["html"]) for r, _ in realweb_pages(args.realweb)][::args.every][:args.limit]
    result = compare(pages)
    line = json.dumps(result)
    if args.out:
        args.out.write_text(line + "\n")
    print(line)
    return 0 if result["identical"] == result["pages"] else 1


if __name__ == "__main__":
    sys.exit(main())
