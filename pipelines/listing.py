"""What a WARC listing may name, and where a listed file may land.

A listing (`warc.paths.gz`, a paths file, `--path`) is remote input, and each entry becomes both a
URL on the base host and a path under a destination. Every Common Crawl entry is
`crawl-data/<crawl>/.../<name>.warc.gz` built of [A-Za-z0-9._-] segments, so anything else is
refused, never repaired: a repaired entry would fetch or write something the listing did not name.
Only WARC names pass because they are all the stages read, so a listing can never make the
downloader create any other kind of file. Every caller that turns an entry into a URL or a path
(commoncrawl.download_warcs, lake.fetch_warcs, CrawlLake.local_warc, the Dagster listing readers)
goes through `check_listing_entry` / `split_listing`, and every destination through `safe_join`.

A listing is read as a stream (`read_listing`), gzip or plain, and bounded: at most
MAX_LISTING_BYTES of text, MAX_LISTING_ENTRIES entries and MAX_ENTRY_BYTES per line. A real crawl's
warc.paths.gz holds up to ~100,000 entries of ~140 bytes (~14 MB of text); a hostile one used to be
decompressed whole (a 1.8 MB gzip bomb cost 1.4 GB of memory) and is now refused as soon as it
passes a bound, having held at most about a megabyte of it at a time beyond the entries kept.
"""
from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import unquote, urljoin, urlsplit

from pipelines.errors import InputError, UnsafePathError

_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9_.-]+")
_PLAIN = re.compile(r"[A-Za-z0-9_./-]+")  # every character a Common Crawl entry uses
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
WARC_SUFFIXES = (".warc.gz", ".warc")
MAX_LISTING_BYTES = 64 << 20  # decompressed text: ~4x a real crawl's listing
MAX_LISTING_ENTRIES = 500_000  # ~5x a real crawl's file count
MAX_ENTRY_BYTES = 4096  # a Common Crawl entry is ~140 bytes
_GZIP_MAGIC = b"\x1f\x8b"


def _odd_characters(entry: str) -> str:
    """Why an entry with characters outside _PLAIN is refused (the most telling reason first)."""
    if not entry:
        return "empty entry"
    if any(ord(c) < 32 or ord(c) == 127 for c in entry):
        return "control character (NUL, newline, ...)"
    if "\\" in entry:
        return "backslash (a path separator to Windows and to some servers)"
    if "%" in entry:
        return f"percent-encoding: the server would decode it to {unquote(entry)!r}"
    if entry.startswith("//"):
        return "network-path reference (//host): it would be fetched from another host"
    if _SCHEME.match(entry):
        return "URL with a scheme: it would be fetched from another host"
    odd = sorted({c for c in entry if not _PLAIN.fullmatch(c)})
    return f"characters other than A-Z a-z 0-9 . _ - /: {odd}"


def _entry_problem(entry: str, crawl: str | None) -> str | None:
    """Why `entry` is not a safe listing entry, or None. One regex decides the common case: a
    crawl's listing has ~100k entries, and each is judged every time the listing is read."""
    if not _PLAIN.fullmatch(entry):
        return _odd_characters(entry)
    if entry.startswith("//"):
        return "network-path reference (//host): it would be fetched from another host"
    if entry.startswith("/"):
        return "absolute path"
    segments = entry.split("/")
    if ".." in segments:
        return "'..' segment: it would leave the destination"
    if "." in segments or "" in segments:
        return "not normalized: a '.' segment, '//' or a trailing '/'"
    hidden = next((seg for seg in segments if seg.startswith(".")), None)
    if hidden:
        return f"hidden name {hidden!r} (the project's temporary files start with '.')"
    if not entry.endswith(WARC_SUFFIXES):
        return "not a WARC file name (.warc.gz or .warc)"
    if crawl is not None and not entry.startswith(f"crawl-data/{crawl}/"):
        return f"outside crawl-data/{crawl}/"
    if crawl is None and not (len(segments) > 2 and segments[0] == "crawl-data"):
        return "outside crawl-data/<crawl>/"
    return None


def check_crawl_name(crawl: str | None) -> None:
    # the crawl name builds the listing's URL and the lake's folder: one plain segment only
    if crawl is not None and (not _SAFE_SEGMENT.fullmatch(crawl) or crawl.startswith(".")):
        raise UnsafePathError(f"crawl name {crawl!r}: use the name as published, e.g. CC-MAIN-2024-10 "
                              "(letters, digits, '.', '_', '-')")


def check_listing_entry(entry: str, crawl: str | None = None) -> str:
    """`entry` itself if it is a safe WARC path relative to the bucket (under crawl-data/<crawl>/,
    or any crawl when None); otherwise UnsafePathError naming the entry and why."""
    check_crawl_name(crawl)
    problem = _entry_problem(entry, crawl)
    if problem:
        raise UnsafePathError(f"listing entry {entry!r}: {problem}")
    return entry


def split_listing(entries: Iterable[str], crawl: str | None = None) -> tuple[list[str], list[tuple[str, str]]]:
    """(accepted entries in order, [(entry, reason)] of the rejected ones)."""
    check_crawl_name(crawl)
    accepted, rejected = [], []
    for entry in entries:
        problem = _entry_problem(entry, crawl)
        if problem:
            rejected.append((entry, problem))
        else:
            accepted.append(entry)
    return accepted, rejected


def describe_rejected(rejected: list[tuple[str, str]], total: int, limit: int = 20) -> list[str]:
    """One line per rejected entry (the first `limit`), after a count; entries are shown with
    repr() so control characters cannot garble a terminal."""
    lines = [f"{len(rejected)} of {total} listing entries rejected (a genuine Common Crawl listing has none)"]
    lines += [f"rejected {entry!r}: {reason}" for entry, reason in rejected[:limit]]
    if len(rejected) > limit:
        lines.append(f"... and {len(rejected) - limit} more")
    return lines


def checked_listing(entries: Iterable[str], crawl: str | None = None) -> list[str]:
    """The entries, or UnsafePathError naming every rejected one if any is unsafe."""
    entries = list(entries)
    accepted, rejected = split_listing(entries, crawl)
    if rejected:
        raise UnsafePathError("; ".join(describe_rejected(rejected, len(entries)))
                              + ". Check where the listing comes from; nothing was fetched from it")
    return accepted


def safe_join(root, rel: str) -> Path:
    """root/rel, refused with UnsafePathError unless it stays under root once every symlink is
    resolved: a symlink inside root that points out of it must not redirect a write."""
    root = Path(root)
    path = root / rel
    real_root, real = root.resolve(), path.resolve()
    if not real.is_relative_to(real_root):
        raise UnsafePathError(f"{path}: resolves to {real}, outside {real_root}; remove the symlink "
                              "or choose another destination")
    return path


def same_origin_url(base: str, rel: str) -> str:
    """base + rel, checked to be on base's scheme and host and to be what a URL join resolves it
    to (no dot segment, host or scheme hiding in rel). Defence in depth: rel is validated first,
    but no caller's mistake may send a request elsewhere."""
    url = base + rel
    if urljoin(base, rel) != url or urlsplit(url)[:2] != urlsplit(base)[:2]:
        raise UnsafePathError(f"{rel!r}: the URL {url!r} is not under {base}")
    return url


# ---- reading a listing: streamed, bounded --------------------------------------------------------

def gunzip_stream(chunks: Iterable[bytes], name: str, limit: int = MAX_LISTING_BYTES) -> Iterator[bytes]:
    """The decompressed bytes of gzip data arriving in `chunks` (members may chain), at most 1 MB
    at a time and `limit` bytes in all: InputError past it, or on data that is not gzip."""
    d, total, fed = zlib.decompressobj(wbits=31), 0, False
    for data in chunks:
        while data:
            fed = True
            try:
                out = d.decompress(data, 1 << 20)
                while True:
                    total += len(out)
                    if total > limit:
                        raise InputError(f"{name}: decompresses to more than {limit >> 20} MB, far more than any "
                                         "crawl listing; refusing it (a damaged file or a decompression bomb)")
                    if out:
                        yield out
                    if not d.unconsumed_tail or d.eof:
                        break
                    out = d.decompress(d.unconsumed_tail, 1 << 20)
            except zlib.error as e:
                raise InputError(f"{name}: not valid gzip data ({e})") from None
            if d.eof:
                data, fed = d.unused_data, False
                d = zlib.decompressobj(wbits=31)
            else:
                data = b""
    if fed:
        raise InputError(f"{name}: truncated gzip data")


def read_listing(chunks: Iterable[bytes], name: str) -> list[str]:
    """The non-empty stripped lines of a listing arriving in `chunks` (gzip, recognised by its
    magic bytes, or plain UTF-8 text), read as a stream within the module's bounds; InputError
    naming `name` otherwise. The entries are not judged here (split_listing does)."""
    chunks = iter(chunks)
    first = b""
    for first in chunks:
        if first:
            break
    if not first:
        return []
    stream: Iterable[bytes] = (c for part in ([first], chunks) for c in part)
    if first[:2] == _GZIP_MAGIC:
        stream = gunzip_stream(stream, name)
    entries: list[str] = []
    pending, total = b"", 0
    for data in stream:
        total += len(data)
        if total > MAX_LISTING_BYTES:
            raise InputError(f"{name}: more than {MAX_LISTING_BYTES >> 20} MB of text, far more than any crawl listing")
        lines = (pending + data).split(b"\n")
        pending = lines.pop()
        if len(pending) > MAX_ENTRY_BYTES:
            raise InputError(f"{name}: a line longer than {MAX_ENTRY_BYTES} bytes; not a listing of WARC paths")
        for line in lines:
            _add_entry(entries, line, name)
    _add_entry(entries, pending, name)
    return entries


def _add_entry(entries: list[str], line: bytes, name: str) -> None:
    if len(line) > MAX_ENTRY_BYTES:
        raise InputError(f"{name}: a line longer than {MAX_ENTRY_BYTES} bytes; not a listing of WARC paths")
    try:
        entry = line.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InputError(f"{name}: a line after entry {len(entries)} is not UTF-8 text; not a listing of "
                         "WARC paths") from None
    if entry:
        if len(entries) >= MAX_LISTING_ENTRIES:
            raise InputError(f"{name}: more than {MAX_LISTING_ENTRIES} entries, far more than any crawl listing")
        entries.append(entry)
