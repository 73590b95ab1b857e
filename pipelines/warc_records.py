"""Raw WARC records, read robustly: the WARC reader's layer under the stage (pipelines/warc_reader.py).

`iter_records(path, count)` yields every record of one file that can be read, as a `RawRecord`
(headers, parsed HTTP head, the body when wanted), and reports damage through `count`.

Memory stays bounded whatever the input. A body is read up to `max_body_bytes` + 1 (+ 1 MiB while
still transfer- or content-encoded; fastwarc inflates the gzip member lazily), so a longer one, a
decompression bomb among them (a few MB of gzip holding GBs), is dropped having cost the cap. The
reader then resumes at the next gzip member rather than let fastwarc inflate the rest to skip it
(it still does for a file's first record, before the layout is known: at several GB/s, in bounded
memory). Every member this module inflates itself, to check or to resynchronise, is inflated in
pieces and given up on past cap + headers.

Broken input must neither crash a run nor cost the rest of a file. fastwarc stops at the first
bad gzip member, sometimes with an OSError and sometimes silently (a truncated last member), and a
wrong Content-Length makes it read into the next record. So the reader:
- holds each record back until the next one parsed; when parsing fails after it, that record's
  gzip member is checked on its own (CRC, and the block length against Content-Length; a wrong
  length is repaired from the member, which is authoritative when there is one member per record);
- after an error, or a stop before the end of the file, resynchronises at the next gzip member
  that decompresses cleanly and starts with `WARC/` (the next `WARC/x.y` version line in plain
  files) and restarts the iterator there;
- in a plain file, when a record's Content-Length runs past the end of the file (fastwarc stops
  there without an error, and everything after the record was lost in silence), reads that record
  up to the next version line (`bad_content_length`) and goes on from there; with no record after
  it, the file was cut short (`truncated_record`, read as far as it goes);
- in a lenient-mode file, whose parser skips what it cannot parse without an error, checks that
  each record ends where the next member starts (else as after an error) and, in plain files,
  counts the version lines it returned no record for (`unparsed_record`);
- counts each event (`truncated_gzip`, `corrupt_gzip`, `bad_content_length`, `truncated_record`,
  `invalid_record`, `single_gzip_stream`, `empty_file`, ...) through `count` and logs one line for it.
"""
from __future__ import annotations

import io
import logging
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from fastwarc.warc import ArchiveIterator, WarcRecordType

from pipelines.http_payload import HEAD_PEEK, blank_line, decode_body, looks_like_html, parse_head
from pipelines.url_filter import canonical_url

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b\x08"
DEFAULT_MAX_BODY_BYTES = 4 << 20
# Room for the WARC and HTTP headers (and chunked framing) on top of a body: a gzip member that
# inflates past max_body_bytes + this cannot hold a body within the cap.
_HEADER_SLACK = 1 << 20
_PIECE = 1 << 20  # the most one zlib call may produce: 64 KiB of bomb would otherwise be 64 MiB at once
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*(\d+)")
_VERSION_LINE = re.compile(rb"(WARC/\d\.\d+)\r?\n")  # WARC/1.0, WARC/1.1; WARC/0.17, WARC/0.18 (pre-ISO)


@dataclass(slots=True)
class RawRecord:
    pos: int | None          # offset of the record's gzip member (or of `WARC/` in a plain file)
    is_response: bool
    record_id: str | None = None
    url: str | None = None
    date: str | None = None
    declared_length: int = 0
    http: bool = False       # has an HTTP status line
    status: int | None = None
    mime: str | None = None  # the payload's type: WARC-Identified-Payload-Type, else the HTTP Content-Type
    charset: str | None = None
    looks_html: bool = False  # no HTTP status line, and the payload looks like HTML
    body: bytes | None = None
    oversize: bool = False   # the body is longer than the cap: not kept, dropped as oversize_body
    events: tuple[str, ...] = ()  # dechunk_fallback, content_encoding_fallback, content_decoding_failed
                                  # (then body is None): http_payload.decode_body


def _materialize(rec, pos: int | None, want_body, max_body: int) -> RawRecord:
    """Copy what we need out of a fastwarc record (its reader dies when the iterator moves on).
    The iterator runs with parse_http=False: the HTTP head is parsed here from the first bytes of
    the block (pipelines/http_payload.py), so a block without one keeps its bytes."""
    if rec.record_type != WarcRecordType.response:
        return RawRecord(pos, False)
    h = rec.headers
    r = RawRecord(pos, True, rec.record_id, canonical_url(h.get("WARC-Target-URI")), h.get("WARC-Date"))
    try:
        r.declared_length = int(h.get("Content-Length") or 0)
    except ValueError:
        r.declared_length = -1
    start = rec.reader.read(HEAD_PEEK)
    head = parse_head(start)
    if head is None:
        r.looks_html = looks_like_html(start)
    else:
        r.http, r.status, r.mime, r.charset = True, head.status, head.mime, head.charset
    # Common Crawl's type detected from the payload bytes: what FineWeb (datatrove 0.2.0) decides
    # on, in place of what the server said (it writes XHTML served as text/html as
    # application/xhtml+xml, and FineWeb skipped those)
    identified = (h.get("WARC-Identified-Payload-Type") or "").split(";")[0].strip().lower()
    if identified and r.http:
        r.mime = identified
    if not want_body(r):
        return r
    # The raw (still encoded) body, at most cap + slack bytes: fastwarc inflates the gzip member
    # lazily, so a longer one (a bomb) costs no more than that.
    at = head.size if head else 0
    raw = start[at:] + rec.reader.read(max(0, max_body + _HEADER_SLACK + 1 - (len(start) - at)))
    if len(raw) > max_body + _HEADER_SLACK:
        r.oversize = True
        return r
    body, r.events = decode_body(head, start[:at], raw, max_body) if head else (raw, ())
    if body is not None and len(body) > max_body:
        r.oversize = True
    else:
        r.body = body
    return r


def _inflate(fd: int, start: int, stop: int, limit: float = float("inf"),
             keep: bool = False) -> tuple[str, bytes, int]:
    """Inflate the gzip member at `start`, reading no further than `stop`, in pieces of at most
    _PIECE bytes, and not past `limit` bytes of output. Returns (state, data, end): state "ok" (a
    complete, CRC-valid member ending at `end`), "over_limit" (given up on: a bomb costs the time
    and memory of `limit` bytes, not of its size), "truncated" (it runs into `stop`) or "corrupt";
    data is what was inflated when `keep`, else b""."""
    d = zlib.decompressobj(wbits=31)
    out, n, off = [], 0, start
    while not d.eof:
        data = os.pread(fd, min(1 << 16, stop - off), off) if off < stop else b""
        if not data:
            return "truncated", b"".join(out), off
        off += len(data)
        while data and not d.eof:
            try:
                piece = d.decompress(data, _PIECE)
            except zlib.error:
                return "corrupt", b"".join(out), off
            data = d.unconsumed_tail
            n += len(piece)
            if keep:
                out.append(piece)
            if n > limit:
                return "over_limit", b"".join(out), off
    return "ok", b"".join(out), off - len(d.unused_data)


def _member_at(fd: int, pos: int, size: int, max_bytes: int) -> tuple[bytes, int | None] | None:
    """The single gzip member starting at `pos`: (data, end offset) when it is one complete,
    CRC-valid member; (its first ~max_bytes of data, None) when it inflates past max_bytes (not
    followed to its end: checking a bomb would cost its whole size); None when it is broken."""
    if pos >= size or os.pread(fd, 3, pos) != GZIP_MAGIC:
        return None
    state, data, end = _inflate(fd, pos, size, max_bytes, keep=True)
    if state == "ok":
        return data, end
    return (data, None) if state == "over_limit" else None


def _classify(fd: int, start: int, end: int) -> str:
    """Why [start, end) could not be read: a member cut short, or damaged / foreign bytes."""
    state = _inflate(fd, start, end, limit=1 << 20)[0]  # the first MiB of output tells
    return "truncated_gzip" if state in ("truncated", "over_limit") else "corrupt_gzip"


def _next_member(fd: int, start: int, size: int, gz: bool, max_bytes: int) -> int | None:
    """First offset >= start where a readable record begins (a clean gzip member whose data starts
    with `WARC/`, or one too big to check past its first max_bytes; in plain files a line that is
    a WARC version line, pre-1.0 ones included)."""
    needle = GZIP_MAGIC if gz else b"WARC/"
    off = start
    while off < size:
        window = os.pread(fd, 1 << 20, off)
        i = window.find(needle)
        while i >= 0:
            cand = off + i
            if gz:
                m = _member_at(fd, cand, size, max_bytes)
                if m is not None and m[0].startswith(b"WARC/"):
                    return cand
            elif ((cand == 0 or os.pread(fd, 1, cand - 1) == b"\n")
                  and _VERSION_LINE.match(os.pread(fd, 16, cand))):
                return cand
            i = window.find(needle, i + 1)
        if len(window) < (1 << 20):
            return None
        off += len(window) - len(needle) + 1  # overlap: a needle across the window edge is found
    return None


def _repair_length(rec: RawRecord, member: bytes, want_body, max_body: int) -> RawRecord | None:
    """Re-read a record from its own member with the true block length (None if that fails)."""
    head_end, sep = blank_line(member)
    if head_end < 0:
        return None
    block = member[head_end + sep:]
    if block.endswith(member[head_end:head_end + sep]):  # the record's closing blank line
        block = block[:-sep]
    head = re.sub(rb"(?im)^Content-Length:[^\r\n]*", b"Content-Length: %d" % len(block), member[:head_end])
    try:
        for r in ArchiveIterator(io.BytesIO(head + b"\r\n\r\n" + block + b"\r\n\r\n"),
                                 parse_http=False, quirks_mode=True):
            return _materialize(r, rec.pos, want_body, max_body)
    except Exception:  # noqa: BLE001 - unreadable even with the right length: caller drops it
        return None
    return None


def iter_records(path, count, want_body=lambda r: True,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Iterator[RawRecord]:
    """Every record of one WARC file that can be read, surviving damage (see module doc).
    `count(key)` receives the damage counters. Bodies longer than max_body_bytes are not read:
    such records come with oversize=True and no body."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        count("empty_file")
        log.warning("%s: empty file (0 bytes): no records", path)
        return
    with open(path, "rb") as f:
        fd = f.fileno()
        gz = os.pread(fd, 2, 0) == GZIP_MAGIC[:2]
        lenient = _needs_lenient_parsing(fd, size, gz)
        if not lenient:
            yield from _records(path, f, size, gz, False, count, want_body, max_body_bytes)
            return
        count("lenient_warc_parsing")
        log.warning("%s: %s: read in fastwarc's lenient mode", path, lenient)
        n = 0
        for n, r in enumerate(_records(path, f, size, gz, True, count, want_body, max_body_bytes), 1):
            yield r
        if not gz:
            # Lenient parsing skips a record it cannot parse without a word (in gzip members the
            # reader sees the gap): count the version lines it did not return a record for.
            lines, off = 0, 0
            while (off := _next_member(fd, off, size, False, 0)) is not None:
                lines, off = lines + 1, off + 1
            if lines > n:
                count("unparsed_record", lines - n)
                log.warning("%s: %d records that the lenient parser skipped", path, lines - n)


def _records(path: Path, f, size: int, gz: bool, lenient: bool, count, want_body,
             max_body_bytes: int) -> Iterator[RawRecord]:
    """iter_records for one open file (`lenient`: in fastwarc's quirks mode)."""
    fd = f.fileno()
    max_member = max_body_bytes + _HEADER_SLACK
    per_member = gz  # one gzip member per record, as Common Crawl writes; checked below
    checked_layout = not gz
    start = 0
    while True:
        f.seek(start)
        pending: RawRecord | None = None
        produced, error, last_pos = 0, None, start
        try:
            for rec in ArchiveIterator(f, parse_http=False, quirks_mode=lenient):
                last_pos = rec.stream_pos
                if not checked_layout and pending is not None:
                    checked_layout = True
                    if last_pos == pending.pos or os.pread(fd, 3, last_pos) != GZIP_MAGIC:
                        per_member = False
                        pending.pos = None
                        count("single_gzip_stream")
                        log.warning("%s: gzipped as one stream, not one member per record: record "
                                    "offsets are not seekable and damage loses the rest", path)
                if lenient and per_member and pending is not None and _member_end(fd, pending.pos, size,
                                                                                  max_member) != last_pos:
                    # quirks mode went past the record's member without a word (a wrong
                    # Content-Length, ClueWeb09's): check it as after a parse error
                    error = OSError("the lenient parser skipped bytes after this record")
                    break
                r = _materialize(rec, last_pos if per_member or not gz else None, want_body,
                                 max_body_bytes)
                if pending is not None:
                    yield pending
                    produced += 1
                pending = r
                if r.oversize and per_member and checked_layout:
                    # to skip the rest of its body fastwarc would inflate all of it (a bomb:
                    # GBs); resume past its member below instead
                    break
        except Exception as e:  # noqa: BLE001 - fastwarc raises OSError; anything else is damage too
            error = e

        if not per_member:
            # plain WARC or one gzip stream: no members to check against
            if error is None:
                if gz and not _stream_complete(fd, size):
                    # the last record read is the one the cut went through: not kept
                    count("truncated_gzip")
                    log.warning("%s: the gzip stream is cut short; the record at the cut and any "
                                "after it are lost", path)
                elif pending is not None:
                    end = None if gz or lenient else _declared_end(fd, last_pos)
                    if end is None or end <= size:
                        yield pending
                        return
                    # fastwarc stops without a word when a record's length runs past the end of
                    # the file: the file is cut short, or the length lies and records follow
                    nxt = _next_member(fd, last_pos + 1, size, False, 0)
                    if nxt is None:
                        count("truncated_record")
                        log.warning("%s: the record at byte %d runs %d bytes past the end of the file "
                                    "(cut short): read as far as it goes", path, last_pos, end - size)
                        yield pending
                        return
                    count("bad_content_length")
                    log.warning("%s: record at byte %d says it ends at byte %d, past the end of the file "
                                "(%d bytes); the next record starts at byte %d: read up to it, then on",
                                path, last_pos, end, size, nxt)
                    if nxt - last_pos > max_member:
                        pending.oversize, pending.body = pending.is_response, None
                    else:
                        pending = _repair_length(pending, os.pread(fd, nxt - last_pos, last_pos), want_body,
                                                 max_body_bytes)
                    if pending is not None:
                        yield pending
                    start = nxt
                    continue
                return
            if pending is not None:
                yield pending
            reason = "corrupt_gzip" if gz else "corrupt_record"
            count(reason)
            nxt = _next_member(fd, last_pos + 1, size, gz, max_member)
            if nxt is None and not gz:
                # junk in front of a gzipped file hid its gzip magic: look for members
                nxt = _next_member(fd, last_pos + 1, size, True, max_member)
                if nxt is not None:
                    gz = per_member = True
                    checked_layout = False
            log.warning("%s: %s after byte %d (%s)%s", path, reason.replace("_", " "), last_pos, error,
                        f"; resumed at byte {nxt}" if nxt is not None else "; nothing readable after it")
            if nxt is None:
                return
            start = nxt
            continue

        # one member per record: check the held-back record against its own member
        resume = start
        if pending is not None:
            m = _member_at(fd, pending.pos, size, max_member)
            if m is None:
                resume = pending.pos  # its own member is broken: it goes with the damage
                pending = None
            elif m[1] is None:
                # it inflates past cap + headers, so its body is over the cap whatever its header
                # says; rather than inflate it to its end, scan for the next member (the bytes
                # up to it are this record's, not damage)
                pending.oversize, pending.body = True, None
                yield pending
                start = _next_member(fd, pending.pos + 1, size, gz, max_member)
                if start is None:
                    return
                continue
            else:
                data, resume = m
                block_len = _block_length(data)
                if pending.is_response and block_len is not None and block_len != pending.declared_length:
                    count("bad_content_length")
                    log.warning("%s: record at byte %d says Content-Length %d, its block has %d bytes; "
                                "re-read from its gzip member", path, pending.pos,
                                pending.declared_length, block_len)
                    pending = _repair_length(pending, data, want_body, max_body_bytes)
            if pending is not None:
                yield pending
                produced += 1
        if error is None and resume >= size:
            return
        nxt = _next_member(fd, resume, size, gz, max_member)
        if nxt == start and produced == 0:
            # a clean member that fastwarc cannot parse (bad WARC header...): skip just it
            end = _member_at(fd, start, size, max_member)[1]
            count("invalid_record")
            log.warning("%s: unparseable record at byte %d (%s); skipped", path, start, error)
            nxt = _next_member(fd, start + 1 if end is None else end, size, gz, max_member)
            # one too big to inflate to its end was passed by scanning: no gap after it
            resume = end if end is not None else (size if nxt is None else nxt)
        gap_end = size if nxt is None else nxt
        if gap_end > resume:
            reason = _classify(fd, resume, gap_end)
            count(reason)
            log.warning("%s: %s at byte %d: skipped %d bytes%s%s", path, reason.replace("_", " "),
                        resume, gap_end - resume,
                        f", resumed at byte {nxt}" if nxt is not None else ", nothing readable after it",
                        f" ({error})" if error else "")
        if nxt is None:
            return
        start = nxt


def _declared_end(fd: int, pos: int) -> int | None:
    """Where the record at `pos` of a plain file ends by its Content-Length (None: unreadable)."""
    head = os.pread(fd, HEAD_PEEK, pos)
    end, sep = blank_line(head)
    m = _CONTENT_LENGTH.search(head, 0, end) if end >= 0 else None
    return pos + end + sep + int(m.group(1)) if m else None


def _member_end(fd: int, pos: int, size: int, max_bytes: int) -> int | None:
    m = _member_at(fd, pos, size, max_bytes)
    return m[1] if m is not None else None


def _block_length(member: bytes) -> int | None:
    head_end, sep = blank_line(member)
    if head_end < 0:
        return None
    n = len(member) - head_end - sep
    return n - sep if member.endswith(member[head_end:head_end + sep]) else n


def _needs_lenient_parsing(fd: int, size: int, gz: bool) -> str | None:
    """Why the file needs fastwarc's quirks mode, or None: its first record's header lines end in
    a bare LF (ClueWeb09, with a WARC/0.18 version line), which the strict parser yields as records
    of unknown type. Decided per file, from its first record: quirks mode also skips unparseable
    records without a word, so files that do not need it never get it. (Pre-1.0 versions with CRLF
    lines, WARC/0.17 from Heritrix 1.x, parse strictly.)"""
    head = _inflate(fd, 0, size, limit=4096, keep=True)[1] if gz else os.pread(fd, 4096, 0)
    m = _VERSION_LINE.match(head)
    if m is None or m.group(0).endswith(b"\r\n"):
        return None
    return f"{m.group(1).decode()} records with header lines ending in a bare LF"


def _stream_complete(fd: int, size: int) -> bool:
    """Does a one-stream gzip file end cleanly? (only run on such files: they are rare)."""
    return _inflate(fd, 0, size)[0] == "ok"
