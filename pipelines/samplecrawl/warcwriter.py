"""A small WARC/1.1 writer, one gzip member per record, the way Common Crawl writes its files.

Own writer instead of warcio's: we need byte-identical output for a seed (gzip mtime=0, no
wall clock, record ids from the caller's RNG) and the offset of every record, and the format is
simple enough that doing it by hand is shorter than working around a library's defaults.
"""
from __future__ import annotations

import base64
import gzip
import hashlib


def sha1_b32(data: bytes) -> str:
    """Digest in the form WARC files use: `sha1:` + base32 of the raw SHA-1."""
    return "sha1:" + base64.b32encode(hashlib.sha1(data).digest()).decode("ascii")


def _gzip_member(data: bytes) -> bytes:
    # gzip.compress(mtime=0) gives a fixed header (no file name, no time): same bytes every run.
    # Level 6 is ~3x faster than 9 for a few % in size; these files are samples, not archives.
    return gzip.compress(data, compresslevel=6, mtime=0)


class WarcWriter:
    """Appends records to one .warc.gz; `write_record` returns the record's byte offset.

    `version` and `newline` exist to write the pre-1.0 files of older archives (ClueWeb09: a
    `WARC/0.18` version line and header lines ending in a bare LF); the default is WARC/1.1."""

    def __init__(self, path, version: str = "WARC/1.1", newline: str = "\r\n"):
        self.path = path
        self._fh = open(path, "wb")
        self.offset = 0
        self.version, self.newline = version, newline

    def write_record(self, warc_type: str, record_id: str, date: str, content_type: str,
                     block: bytes, extra: list[tuple[str, str]] = ()) -> int:
        headers = [("WARC-Type", warc_type), ("WARC-Date", date), ("WARC-Record-ID", record_id)]
        headers += list(extra)
        headers += [("Content-Type", content_type), ("Content-Length", str(len(block)))]
        nl = self.newline
        head = self.version + nl + "".join(f"{k}: {v}{nl}" for k, v in headers) + nl
        member = _gzip_member(head.encode("utf-8") + block + (nl + nl).encode())
        start = self.offset
        self._fh.write(member)
        self.offset += len(member)
        return start

    def close(self) -> None:
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def http_response_block(status: int, reason: str, headers: list[tuple[str, str]], body: bytes,
                        newline: str = "\r\n") -> bytes:
    head = f"HTTP/1.1 {status} {reason}{newline}" + "".join(f"{k}: {v}{newline}" for k, v in headers) + newline
    return head.encode("latin-1") + body


def http_request_block(url_path: str, host: str, user_agent: str, newline: str = "\r\n") -> bytes:
    lines = [f"GET {url_path} HTTP/1.1", f"Host: {host}", f"User-Agent: {user_agent}",
             "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
             "Accept-Language: en-US,en;q=0.5", "Accept-Encoding: br,gzip", "Connection: Keep-Alive"]
    return (newline.join(lines) + newline * 2).encode("latin-1")


def gzip_lines(path, lines: list[str]) -> None:
    """A `warc.paths.gz`-style listing, deterministic bytes (mtime=0)."""
    with open(path, "wb") as fh:
        fh.write(_gzip_member(("\n".join(lines) + "\n").encode("utf-8")))

