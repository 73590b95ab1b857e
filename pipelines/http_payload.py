"""The HTTP message inside a WARC response record: status line, headers, the decoded body, its charset.

The WARC reader's record layer (pipelines/warc_records.py) hands this module the first bytes of a
response block; it says whether they start with an HTTP status line, what the status and MIME type
are (so a record that will be dropped never has its body read), and decodes the body when it is
wanted.
Real archives break the happy path in a few known ways, each with its own policy:

- **No HTTP status line at all** (some archivers store the payload alone): the whole block is the
  body. It is taken as a 200 text/html page when its first KiB looks like HTML (`looks_like_html`:
  a `<html`, `<!doctype html`, `<head` or `<body` tag); the reader counts every such record as
  `no_http_headers` and drops the others with that reason (never `http_status`: nothing said 4xx).
- **A coding named in the headers that the body does not carry** (stored decoded): one policy for
  both codings. `Transfer-Encoding: chunked` on a body stored de-chunked (pywb and webrecorder
  archives keep the header) is de-chunked leniently, the way warcio's ChunkedDataReader does it: if
  the first chunk-size line does not parse the body is taken raw (warcio: "assume not chunked"),
  chunks are kept up to the first line that does not parse (the rest raw from there) and a
  cut-short chunk keeps what is there; counted as `dechunk_fallback`. (warcio also drops the two
  bytes it read looking for a chunk terminator that was not there; we keep them.)
  `Content-Encoding: gzip` (deflate, br, ...) on a body stored decoded (a Japanese crawl had every
  page so) is read as it is when it is plain text and does not start with a gzip/zstd magic;
  counted as `content_encoding_fallback`.
- **A Content-Encoding that cannot be decoded** (a corrupt gzip stream, x-gzip, zstd): the body is
  None; the reader drops the record as `undecodable` and counts `content_decoding_failed`.
- **Header lines ending in a bare LF** (ClueWeb-era files): parsed like CRLF lines.

Bodies are decoded by fastwarc (gzip, deflate, brotli, chunked) from an in-memory one-record WARC,
and only when the headers name an encoding: Common Crawl stores payloads decoded (it renames those
headers X-Crawler-*), so its bodies are used as read.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
from fastwarc.warc import ArchiveIterator

# Bytes read from the block before deciding anything: HTTP headers are almost always < 8 KiB.
HEAD_PEEK = 64 << 10
_STATUS_LINE = re.compile(rb"HTTP/\d(?:\.\d)?[ \t]+(\d{3})(?![0-9])")
_HTML_SIGNS = (b"<html", b"<!doctype html", b"<head", b"<body")
_TRANSFER_ENCODING_LINE = re.compile(rb"(?im)^transfer-encoding:[^\n]*\n")
_CHARSET_PARAM = re.compile(r"""charset\s*=\s*["']?([^"';\s]+)""", re.I)


@dataclass(slots=True)
class HttpHead:
    status: int
    mime: str | None                 # lower-case type/subtype of Content-Type, no parameters
    charset: str | None              # its charset parameter, lower-case
    transfer_encoding: str | None    # lower-case header values; None when absent or identity
    content_encoding: str | None
    size: int                        # bytes of the block the head takes, blank line included


def blank_line(data: bytes, start: int = 0) -> tuple[int, int]:
    """(offset, length) of the first empty line (CRLF CRLF or LF LF) at or after `start`; (-1, 0)."""
    crlf, lf = data.find(b"\r\n\r\n", start), data.find(b"\n\n", start)
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf, 4
    return (lf, 2) if lf >= 0 else (-1, 0)


def parse_head(block_start: bytes) -> HttpHead | None:
    """The HTTP response head at the start of a block, or None when it has no status line."""
    m = _STATUS_LINE.match(block_start)
    if m is None:
        return None
    end, sep = blank_line(block_start)
    if end < 0:  # no blank line in the first HEAD_PEEK bytes: all head, no body
        end, sep = len(block_start), 0
    fields: dict[bytes, str] = {}
    for line in block_start[:end].split(b"\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon:
            fields.setdefault(name.strip().lower(), value.strip().decode("latin-1"))
    ctype = fields.get(b"content-type")
    charset = _CHARSET_PARAM.search(ctype) if ctype else None
    return HttpHead(int(m.group(1)), ctype.split(";")[0].strip().lower() if ctype else None,
                    charset.group(1).lower() if charset else None,
                    _coding(fields.get(b"transfer-encoding")), _coding(fields.get(b"content-encoding")),
                    end + sep)


def _coding(value: str | None) -> str | None:
    value = (value or "").strip().lower()
    return None if value in ("", "identity") else value


def looks_like_html(data: bytes) -> bool:
    """Does a payload without HTTP headers look like an HTML page? (a tag in its first KiB)"""
    head = data[:1024].lower()
    return any(sign in head for sign in _HTML_SIGNS)


def decode_body(head: HttpHead, head_bytes: bytes, raw: bytes, max_body: int) -> tuple[bytes | None, tuple[str, ...]]:
    """(body, events) with the transfer and content codings of `raw` undone, at most max_body + 1
    bytes of it (one more says "longer"). events: what the fallback did ("dechunk_fallback",
    "content_encoding_fallback") or "content_decoding_failed" (then body is None).

    One policy for both codings (module doc): undo it when the body carries it; when the header
    names a coding the body does not carry (stored decoded, as pywb and many crawlers do), read the
    body as it is, counted; only a body that carries a coding and still does not decode is lost."""
    if head.transfer_encoding is None and head.content_encoding is None:
        return raw[:max_body + 1], ()
    try:
        return _fastwarc_decode(head_bytes, raw, "all", max_body), ()
    except Exception:  # noqa: BLE001 - fastwarc raises OSError or ValueError on bad codings
        pass
    events: list[str] = []
    body = raw
    if head.transfer_encoding is not None and "chunked" in head.transfer_encoding:
        try:
            body = _fastwarc_decode(head_bytes, raw, "transfer", len(raw))
        except Exception:  # noqa: BLE001 - de-chunked already (or cut short): as far as it is chunked
            body = dechunk_leniently(raw)
            events.append("dechunk_fallback")
        head_bytes = _TRANSFER_ENCODING_LINE.sub(b"", head_bytes)  # the content coding alone next
    if head.content_encoding is None:
        return body[:max_body + 1], tuple(events)
    try:
        return _fastwarc_decode(head_bytes, body, "content", max_body), tuple(events)
    except Exception:  # noqa: BLE001
        pass
    if _stored_decoded(body):
        return body[:max_body + 1], (*events, "content_encoding_fallback")
    return None, (*events, "content_decoding_failed")


# Magic bytes of the codings a body can carry (gzip, zstd); deflate (zlib) and brotli have none
# that text could not start with, so for them the text test below decides alone.
_CODING_MAGIC = (b"\x1f\x8b", b"\x28\xb5\x2f\xfd")


def _stored_decoded(body: bytes) -> bool:
    """Is a body that failed to decode plain text, i.e. stored already decoded? Compressed data is
    near-random bytes (~10% C0 controls), so `_mostly_text` (<= 1%) never holds for more than a few
    bytes of it; a body that starts with a coding's magic is a damaged stream, not text."""
    return bool(body) and not body.startswith(_CODING_MAGIC) and _mostly_text(body)


def _fastwarc_decode(head_bytes: bytes, raw: bytes, mode: str, max_body: int) -> bytes:
    block = head_bytes + raw
    record = (b"WARC/1.0\r\nWARC-Type: response\r\nContent-Type: application/http; msgtype=response\r\n"
              b"Content-Length: %d\r\n\r\n" % len(block)) + block + b"\r\n\r\n"
    for rec in ArchiveIterator(io.BytesIO(record), auto_decode=mode, quirks_mode=True):
        return rec.reader.read(max_body + 1)
    raise OSError("record did not parse")


def dechunk_leniently(data: bytes) -> bytes:
    """Undo chunked transfer coding as far as the data is chunked (warcio's ChunkedDataReader)."""
    out, pos = [], 0
    while pos < len(data):
        eol = data.find(b"\r\n", pos, pos + 64)  # warcio reads a size line of at most 64 bytes
        try:
            size = int(data[pos:eol].split(b";")[0], 16) if eol >= 0 else -1
        except ValueError:
            size = -1
        if not 0 <= size <= 1 << 31:
            out.append(data[pos:])  # not (or no longer) chunked: the rest as it is
            break
        start = eol + 2
        if size == 0:
            break  # the last chunk (trailers are not payload)
        out.append(data[start:start + size])  # a cut-short chunk keeps what is there
        pos = start + size
        if data.startswith(b"\r\n", pos):
            pos += 2
    return b"".join(out)


# ---- charset ----------------------------------------------------------------------------------

_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]{1,40})""", re.I)
# C0 control bytes other than tab, newlines and form feed: real HTML in any ASCII-compatible
# charset has ~none (UTF-8 and the CJK multi-byte charsets never use them inside characters);
# binary bodies and UTF-16 without a BOM are full of them.
_CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F])
_BOMS = [(b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")]


def control_bytes(body: bytes) -> int:
    """How many bytes of `body` are in _CONTROL_BYTES (0-8, 11, 14-31, 127): four vectorised
    comparisons over the bytes in place, ~1.5x cheaper than counting what bytes.translate deletes
    (every page's whole body is counted)."""
    b = np.frombuffer(body, dtype=np.uint8)
    return int(np.count_nonzero(b < 9) + np.count_nonzero(b == 11) + np.count_nonzero(b - np.uint8(14) < 18)
               + np.count_nonzero(b == 127))


def _mostly_text(body: bytes, max_control_frac: float = 0.01) -> bool:
    return control_bytes(body) <= max_control_frac * len(body)


def _html5_label(label: str | None) -> str | None:
    if not label:
        return None
    from resiliparse.parse.encoding import map_encoding_to_html5
    return map_encoding_to_html5(label.strip().strip("\"'"))


def decode_html(body: bytes, http_charset: str | None = None,
                max_invalid_frac: float = 0.0) -> tuple[str, str, int] | None:
    """(text, encoding, invalid bytes replaced) or None when nothing decodes it sanely.

    Order: a BOM; UTF-8 when the bytes are valid UTF-8 (FineWeb: "UTF-8, else detected"; also
    right when an ASCII/latin-1 label sits on UTF-8 bytes, which is common); the HTTP charset;
    a `<meta charset>` / http-equiv tag in the first 4 KB; uchardet detection (resiliparse).
    Labels are mapped as browsers do (WHATWG: latin-1 and ascii mean windows-1252).

    Strict first, always: a page that one candidate decodes cleanly is never read leniently. Only
    when every candidate fails is the one with the fewest invalid bytes used with errors="replace"
    (each bad sequence becomes U+FFFD), if those bytes are at most `max_invalid_frac` of the body:
    real pages with a few stray bytes (0.1-0.4% of them, a cut multi-byte character, one pasted
    latin-1 line in a UTF-8 page) were lost whole. datatrove 0.2.0 drops them (max_invalid_frac 0)."""
    for bom, enc in _BOMS:
        if body.startswith(bom):
            try:
                return body[len(bom):].decode(enc), enc, 0
            except UnicodeDecodeError:
                break
    if not _mostly_text(body):
        return None
    tried: list[str] = []
    candidates = [lambda: "utf-8", lambda: _html5_label(http_charset), lambda: _meta_charset(body),
                  lambda: _detect(body)]
    for get in candidates:
        enc = get()
        if not enc or enc in tried:
            continue
        try:
            return body.decode(enc), enc, 0
        except UnicodeDecodeError:
            tried.append(enc)
        except LookupError:
            continue
    if max_invalid_frac > 0 and tried:
        invalid, enc = min((_invalid_bytes(body, enc), i, enc) for i, enc in enumerate(tried))[::2]
        if invalid <= max_invalid_frac * len(body):
            return body.decode(enc, "replace"), enc, invalid
    return None


_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of one undecodable byte


def _invalid_bytes(body: bytes, encoding: str) -> int:
    """How many bytes of `body` do not decode in `encoding`."""
    return len(_ESCAPED_BYTE.findall(body.decode(encoding, "surrogateescape")))


def _meta_charset(body: bytes) -> str | None:
    m = _META_CHARSET.search(body, 0, 4096)
    return _html5_label(m.group(1).decode("ascii")) if m else None


def _detect(body: bytes) -> str | None:
    from resiliparse.parse.encoding import detect_encoding
    return detect_encoding(body)
