"""Real web pages as a WARC file: the pages of ../shared/realweb wrapped into response records the
way its README shows, for end-to-end runs (bench/vs_datatrove.py --realweb, the determinism test).

    .venv/bin/python bench/realweb_warc.py OUT.warc.gz [--every N]

The WARC is written where the caller says (a temporary folder): it is derived from realweb and is
never part of the project. Pages keep their exact bytes (`raw_b64` for the 30 non-UTF-8 ones); the
HTTP Content-Type carries the charset the page declares; pages without a URL get
http://realweb.invalid/<sha1>.
"""
from __future__ import annotations

import argparse
import base64
import gzip
import io
import json
import sys
from pathlib import Path

REALWEB = Path(__file__).resolve().parents[1].parent / "shared" / "realweb"


def realweb_pages(root: Path = REALWEB):
    """(record, original bytes) for every page, in file order (sorted file names, then line order)."""
    files = sorted((Path(root) / "html").glob("*.jsonl.gz"))
    if not files:
        raise FileNotFoundError(f"no realweb pages under {root} (see ../shared/realweb/README.md)")
    for path in files:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                r = json.loads(line)
                yield r, (base64.b64decode(r["raw_b64"]) if "raw_b64" in r else r["html"].encode("utf-8"))


def write_warc(out: Path, root: Path = REALWEB, every: int = 1, limit: int | None = None) -> int:
    """Write every `every`-th page (at most `limit`) as a response record; returns the record count."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter
    n = 0
    with open(out, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        for i, (r, raw) in enumerate(realweb_pages(root)):
            if i % every or (limit is not None and n >= limit):
                continue
            ct = "text/html" + (f"; charset={r['charset_declared']}" if r["charset_declared"] else "")
            http = StatusAndHeaders("200 OK", [("Content-Type", ct), ("Content-Length", str(len(raw)))],
                                    protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(r["url"] or f"http://realweb.invalid/{r['sha1']}",
                                                          "response", payload=io.BytesIO(raw), http_headers=http))
            n += 1
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--every", type=int, default=1, help="keep every N-th page (default: all)")
    args = parser.parse_args()
    try:
        n = write_warc(args.out, every=args.every)
    except FileNotFoundError as e:
        print(f"realweb_warc: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"warc": str(args.out), "records": n}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
