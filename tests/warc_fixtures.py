"""WARC files for the reader's tests (test_warc_reader.py, test_warc_damage.py, test_hostile_inputs.py): written
with warcio, or byte by byte where a test needs a record warcio would not write."""
from __future__ import annotations

import gzip
import io
import zlib

import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from pipelines.runner import run_stages
from pipelines.warc_reader import RECORD_COUNTS, WarcReader

CRAWL = "CC-MAIN-2099-01"


def page(i: int, extra: str = "") -> bytes:
    return f"<html><head><title>Page {i}</title></head><body><p>Page number {i}. {extra}</p></body></html>".encode()


def write_warc(path, records, gz=True) -> list[int]:
    """records: (url, status, content_type, body) tuples, or raw bytes of a whole record.
    Writes each as its own gzip member (as Common Crawl does) and returns their offsets."""
    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=gz)
    offsets = []
    for rec in records:
        offsets.append(buf.tell())
        if isinstance(rec, bytes):
            buf.write(gzip.compress(rec) if gz else rec)
            continue
        url, status, ctype, body = rec
        headers = [("Content-Type", ctype)] if ctype else []
        http = StatusAndHeaders(f"{status} X", headers, protocol="HTTP/1.1")
        w.write_record(w.create_warc_record(url, "request", payload=io.BytesIO(b"GET / HTTP/1.1\r\n\r\n")))
        offsets[-1] = buf.tell()
        w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http))
        w.write_record(w.create_warc_record(url, "metadata", payload=io.BytesIO(b"fetchTimeMs: 12\r\n"),
                                            warc_content_type="application/warc-fields"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return offsets


def raw_record(url: str, block: bytes, content_type="application/http; msgtype=response", length=None,
               headers: dict | None = None) -> bytes:
    """One response record, byte by byte: `url` is written as given (wget's `<...>` included),
    `length` may lie, `headers` are extra WARC headers."""
    n = len(block) if length is None else length
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:{abs(hash(url)):032x}>\r\n"
            f"WARC-Date: 2099-01-01T00:00:00Z\r\nWARC-Target-URI: {url}\r\nContent-Type: {content_type}\r\n"
            f"{extra}Content-Length: {n}\r\n\r\n")
    return head.encode() + block + b"\r\n\r\n"


def http_block(status: int, ctype: str, body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\n{extra}\r\n".encode() + body


def damage(stats) -> dict:
    """The reader's damage counters: everything but the record counts (RECORD_COUNTS)."""
    from pipelines.warc_reader import RECORD_COUNTS
    counters = stats if isinstance(stats, dict) else stats.counters
    return {k: n for k, n in counters.items() if k not in RECORD_COUNTS}


def read(paths, **kw):
    stage = WarcReader(paths, **kw)
    removed = []
    out, stats = run_stages(iter(()), [stage], sink=lambda d, s, r: removed.append((d, r)))
    docs = list(out)
    return docs, stats["warc_reader"], removed


def html_pages(n, start=0):
    return [(f"http://site{i}.example/", 200, "text/html; charset=utf-8", page(i)) for i in range(start, start + n)]


@pytest.fixture
def crawl_dir(tmp_path):
    return tmp_path / "crawl-data" / CRAWL / "segments" / "1" / "warc"


def urls(docs):
    return [d.metadata["url"] for d in docs]


def chunked(body: bytes, size: int = 40) -> bytes:
    """`body` in real chunked transfer coding."""
    parts = [b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size)]
    return b"".join(parts) + b"0\r\n\r\n"


def te_block(body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n{extra}\r\n".encode() + body


def clueweb_record(url: str, body: bytes, version="WARC/0.18", nl="\n", length_delta=0) -> bytes:
    """A record as ClueWeb09 has them: pre-ISO version line, every header line ending in LF."""
    http = nl.join(["HTTP/1.1 200 OK", "Content-Type: text/html", "", ""]).encode() + body
    head = nl.join([version, "WARC-Type: response", f"WARC-Target-URI: {url}", "WARC-Date: 2009-01-13T18:05:37-0800",
                    f"WARC-Record-ID: <urn:uuid:{abs(hash(url)):032x}>", "Content-Type: application/http;msgtype=response",
                    f"Content-Length: {len(http) + length_delta}", "", ""])
    return head.encode() + http + (nl * 2).encode()


BOMB_BYTES = 1 << 30  # inflated size of the bomb's HTTP body; ~4.7 MB on disk


def bomb_member(url: str, inflated: int = BOMB_BYTES) -> bytes:
    """One gzip member: a 200 text/html response whose body is b"<html>" and `inflated` spaces,
    compressed chunk by chunk so building it never holds the inflated body."""
    http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html>"
    c = zlib.compressobj(1, zlib.DEFLATED, 31)
    out = [c.compress(raw_record(url, b"", length=len(http) + inflated)[:-4] + http)]
    chunk = b" " * (1 << 20)
    for _ in range(inflated // len(chunk)):
        out.append(c.compress(chunk))
    out += [c.compress(b" " * (inflated % len(chunk)) + b"\r\n\r\n"), c.flush()]
    return b"".join(out)


def write_requests_only(path, n: int) -> None:
    """A WARC file of n request records and no response."""
    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=True)
    for i in range(n):
        w.write_record(w.create_warc_record(f"http://site{i}.example/", "request",
                                            payload=io.BytesIO(b"GET / HTTP/1.1\r\n\r\n")))
    path.write_bytes(buf.getvalue())
