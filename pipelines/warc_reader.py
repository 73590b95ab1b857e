"""WARC reader: the source stage. WARC files in, one Document per HTML response out.

Built on fastwarc's ArchiveIterator (streaming). Keeps `response` records with a 2xx status
and a payload type in `mime_types`, decodes the body to text (the HTML, extraction comes later) and
keeps provenance: id = WARC-Record-ID, url, date (WARC-Date), dump (crawl name), file_path and the
record's byte offset. Drops, with reason: `http_status`, `non_html`, `no_http_headers`,
`undecodable`, `oversize_body`. Every record is accounted for, per file: `records` =
responses (docs_in: each kept or dropped with a reason) + `other_records` (warcinfo, request, ...).

The payload type is the record's WARC-Identified-Payload-Type when it has one (Common Crawl's,
detected from the bytes: what FineWeb decided on), else the HTTP Content-Type. `mime_types`
defaults to FineWeb's (datatrove 0.2.0) [text/html]: application/xhtml+xml pages are dropped as
`non_html`, as FineWeb did; list it to read them. The url is the WARC-Target-URI in one canonical
form (url_filter.canonical_url: no `<...>` around it, as wget writes it, no surrounding spaces,
lower-case scheme and host), the form every later stage sees, the URL filter included.

The HTTP message inside a response is parsed by pipelines/http_payload.py, which holds the
policies for what real archives do to it: a response with no HTTP status line is a 200 HTML page
when its payload looks like HTML, else dropped as `no_http_headers` (all counted as
`no_http_headers`); a transfer or content coding named in the headers that the body does not
carry (stored decoded) is read as stored (`dechunk_fallback`, `content_encoding_fallback`); a
Content-Encoding that does not decode is `undecodable` (`content_decoding_failed`). A body that no
charset decodes cleanly is read with its few invalid bytes replaced when they are at most
`max_invalid_bytes_frac` of it (`lenient_decode`), else dropped as `undecodable`. Files whose
header lines end in a bare LF (ClueWeb09's WARC/0.18) are read in fastwarc's lenient mode, chosen
per file (`lenient_warc_parsing`); pre-1.0 versions with CRLF lines (WARC/0.17) read as they are.

Records are read by pipelines/warc_records.py, which keeps memory bounded and survives damaged
files (truncated or corrupt gzip members, wrong lengths, garbage between records); what it finds is
counted here with the drops (record-level quirks: one log line per file and kind), and so are files
that hold no document at all (`no_response_records`).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Iterable, Iterator

from pipelines.document import Document
from pipelines.errors import ConfigError
from pipelines.http_payload import decode_html
from pipelines.runner import Stage, StageContext, StageStats
from pipelines.warc_records import DEFAULT_MAX_BODY_BYTES, RawRecord, iter_records

log = logging.getLogger(__name__)

# Counters that count records rather than report damage (every other reader counter is damage).
RECORD_COUNTS = ("records", "other_records")
# the bucket layout (crawl-data/<crawl>/segments/...) or the lake's (crawls/<crawl>/warc/...)
_CRAWL_IN_PATH = re.compile(r"(?:crawl-data|crawls)/([^/]+)/")


# ---- the stage ----------------------------------------------------------------------------------

def crawl_from_path(path) -> str | None:
    m = _CRAWL_IN_PATH.search(Path(path).as_posix())
    return m.group(1) if m else None


class WarcReader(Stage):
    name = "warc_reader"
    is_source = True  # counts its own docs_in: response records seen

    def __init__(self, paths: Iterable = (), mime_types=("text/html",),
                 only_http_ok: bool = True, dump: str | None = None,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_invalid_bytes_frac: float = 0.005):
        self.paths = [Path(p) for p in paths]
        self.mime_types = tuple(m.lower() for m in mime_types)
        self.only_http_ok = only_http_ok
        self.dump = dump
        self.max_body_bytes = int(max_body_bytes)
        if self.max_body_bytes <= 0:
            raise ConfigError(f"warc_reader.max_body_bytes must be a positive number of bytes, "
                              f"got {max_body_bytes!r}")
        self.max_invalid_bytes_frac = float(max_invalid_bytes_frac)

    def config(self) -> dict:
        return {"mime_types": list(self.mime_types), "only_http_ok": self.only_http_ok,
                "dump": self.dump, "max_body_bytes": self.max_body_bytes,
                "max_invalid_bytes_frac": self.max_invalid_bytes_frac, "n_files": len(self.paths)}

    def _wanted(self, r: RawRecord) -> bool:
        """Read the body only of records that will be kept (drops stay cheap)."""
        if not r.http:  # no status line: an HTML-looking payload counts as a 200 text/html page
            return r.looks_html and "text/html" in self.mime_types
        if self.only_http_ok and not (200 <= r.status < 300):
            return False
        return r.mime in self.mime_types

    def process(self, docs, ctx: StageContext) -> Iterator[Document]:
        for _ in docs:  # a source: upstream documents are not expected; consume and ignore
            pass
        for path in self.paths:
            yield from self.read_file(path, ctx)

    def read_file(self, path, ctx: StageContext) -> Iterator[Document]:
        dump = self.dump or crawl_from_path(path)
        n_records = n_responses = 0
        logged: set[str] = set()  # record-level quirks are logged once per file (and all counted)
        try:
            for r in iter_records(path, ctx.count, self._wanted, self.max_body_bytes):
                n_records += 1
                if not r.is_response:
                    continue
                n_responses += 1
                ctx.stats.docs_in += 1
                meta = {"url": r.url, "date": r.date, "dump": dump, "file_path": str(path),
                        "warc_record_offset": r.pos}
                doc = Document("", r.record_id or f"{path}:{r.pos}", meta)
                quirks = ([] if r.http else ["no_http_headers"]) + list(r.events)
                reason = self._reason(r)
                if reason is None:
                    decoded = decode_html(r.body or b"", r.charset, self.max_invalid_bytes_frac)
                    if decoded is None:
                        reason = "undecodable"
                    else:
                        doc.text = decoded[0]
                        if decoded[2]:
                            quirks.append("lenient_decode")
                for quirk in quirks:
                    ctx.count(quirk)
                    if quirk not in logged:
                        logged.add(quirk)
                        log.warning("%s: response record %s (%s): %s (further ones in this file are "
                                    "counted, not logged)", path, r.record_id, r.url, _QUIRKS[quirk])
                if reason is not None:
                    meta["http_status"], meta["content_type"] = r.status, r.mime
                    if reason == "oversize_body":
                        log.warning("%s: record at byte %s (%s) has a body over max_body_bytes=%d; "
                                    "dropped", path, r.pos, r.url, self.max_body_bytes)
                    ctx.drop(doc, reason)
                    continue
                yield doc
        except OSError as e:  # unreadable file (missing, permissions): log, count, next file
            ctx.count("unreadable_file")
            log.error("%s: cannot read: %s", path, e)
            return
        finally:
            # Every record read is accounted for: responses are docs_in (each kept or dropped with a
            # reason), the rest (warcinfo, request, metadata, ...) are counted here.
            ctx.count("records", n_records)
            ctx.count("other_records", n_records - n_responses)
        if n_records and not n_responses:
            ctx.count("no_response_records")
            log.warning("%s: %d records, none of them a response: no documents", path, n_records)

    def _reason(self, r: RawRecord) -> str | None:
        if not r.http:
            if not r.looks_html:
                return "no_http_headers"
            if "text/html" not in self.mime_types:
                return "non_html"
        elif self.only_http_ok and not (200 <= r.status < 300):
            return "http_status"
        elif r.mime not in self.mime_types:
            return "non_html"
        if r.oversize:
            return "oversize_body"
        return "undecodable" if "content_decoding_failed" in r.events else None


# What each record-level quirk counter means (one warning line per file and kind).
_QUIRKS = {"no_http_headers": "no HTTP status line: the block is the payload (kept as a 200 page when "
                              "it looks like HTML, else dropped as no_http_headers)",
           "dechunk_fallback": "Transfer-Encoding: chunked on a body that is not chunked: read raw",
           "content_encoding_fallback": "a Content-Encoding on a body stored decoded (plain text): read as it is",
           "content_decoding_failed": "its Content-Encoding does not decode: dropped as undecodable",
           "lenient_decode": "no charset decodes it cleanly; a few invalid bytes (at most "
                             "max_invalid_bytes_frac of the body) replaced with U+FFFD"}


def iter_warc_documents(paths: Iterable, dump: str | None = None, stats: StageStats | None = None,
                        **config) -> Iterator[Document]:
    """Kept documents of some WARC files, without a pipeline (stats, if given, fill in as it runs)."""
    stage = WarcReader(paths, dump=dump, **config)
    ctx = StageContext(stats if stats is not None else StageStats(stage.name), None)
    for doc in stage.process(iter(()), ctx):
        ctx.stats.docs_out += 1
        yield doc
