"""WARC reader: kept/dropped records, provenance, charsets, and damaged files that must not stop a run."""
from __future__ import annotations

import gzip
import io
import json
import logging
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from pipelines.document import Document
from pipelines.runner import StageStats, run_stages
from pipelines.warc_reader import WarcReader, crawl_from_path, decode_html, iter_warc_documents

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


def raw_record(url: str, block: bytes, content_type="application/http; msgtype=response", length=None) -> bytes:
    n = len(block) if length is None else length
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:{abs(hash(url)):032x}>\r\n"
            f"WARC-Date: 2099-01-01T00:00:00Z\r\nWARC-Target-URI: {url}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {n}\r\n\r\n")
    return head.encode() + block + b"\r\n\r\n"


def http_block(status: int, ctype: str, body: bytes) -> bytes:
    return f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\n\r\n".encode() + body


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


def test_keeps_html_and_drops_with_reasons(crawl_dir):
    path = crawl_dir / "a.warc.gz"
    offsets = write_warc(path, [
        ("http://ok.example/", 200, "text/html; charset=utf-8", page(1)),
        ("http://xhtml.example/", 200, "application/xhtml+xml", page(2)),
        ("http://gone.example/", 404, "text/html", page(3)),
        ("http://moved.example/", 301, "text/html", b""),
        ("http://img.example/a.png", 200, "image/png", b"\x89PNG\r\n\x1a\n" + os.urandom(300)),
        ("http://pdf.example/a.pdf", 200, "application/pdf", b"%PDF-1.4"),
        ("http://notype.example/", 200, None, page(4)),
    ])
    docs, stats, removed = read([path])
    assert [d.metadata["url"] for d in docs] == ["http://ok.example/", "http://xhtml.example/"]
    assert stats.docs_in == 7 and stats.docs_out == 2  # request/metadata records are not documents
    assert dict(stats.dropped) == {"http_status": 2, "non_html": 3}
    assert {d.metadata["url"]: r for d, r in removed}["http://img.example/a.png"] == "non_html"
    assert all(d.text == "" for d, _ in removed)  # drops stay cheap: no body kept
    d = docs[0]
    assert d.text == page(1).decode()
    assert re.fullmatch(r"<urn:uuid:[0-9a-f-]{36}>", d.id)
    assert d.metadata["dump"] == CRAWL and d.metadata["file_path"] == str(path)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", d.metadata["date"])
    # the offset is the record's gzip member: seeking there gives this very record
    assert d.metadata["warc_record_offset"] == offsets[0]
    with open(path, "rb") as f:
        f.seek(d.metadata["warc_record_offset"])
        member = zlib.decompressobj(wbits=31).decompress(f.read())
    assert member.startswith(b"WARC/1.") and d.id.encode() in member and b"WARC-Type: response" in member


def test_only_http_ok_false_keeps_error_pages(crawl_dir):
    path = crawl_dir / "b.warc.gz"
    write_warc(path, [("http://gone.example/", 404, "text/html", page(3))])
    docs, stats, _ = read([path], only_http_ok=False)
    assert len(docs) == 1 and "Page number 3" in docs[0].text


def test_dump_from_path_or_argument(tmp_path):
    assert crawl_from_path("/x/crawl-data/CC-MAIN-2023-50/segments/1/warc/f.warc.gz") == "CC-MAIN-2023-50"
    assert crawl_from_path("lake/crawls/CC-MAIN-2024-10/warc/f.warc.gz") == "CC-MAIN-2024-10"
    assert crawl_from_path("/x/f.warc.gz") is None
    path = tmp_path / "f.warc.gz"
    write_warc(path, html_pages(1))
    assert next(iter_warc_documents([path], dump="MY-DUMP")).metadata["dump"] == "MY-DUMP"
    assert next(iter_warc_documents([path])).metadata["dump"] is None


@pytest.mark.parametrize("body, http_charset, expected, encoding", [
    ("<p>Привет, мир</p>".encode("cp1251"), "windows-1251", "<p>Привет, мир</p>", "cp1251"),
    ('<meta charset="shift_jis"><p>日本語のページです</p>'.encode("shift_jis"), None,
     '<meta charset="shift_jis"><p>日本語のページです</p>', "shift_jis"),
    ('<meta http-equiv="Content-Type" content="text/html; charset=koi8-r"><p>Здравствуйте</p>'.encode("koi8-r"),
     None, '<meta http-equiv="Content-Type" content="text/html; charset=koi8-r"><p>Здравствуйте</p>', "koi8-r"),
    ("<p>Ça coûte très cher, déjà vu à Noël, élève naïve</p>".encode("cp1252"), None,
     "<p>Ça coûte très cher, déjà vu à Noël, élève naïve</p>", "cp1252"),
    # valid UTF-8 under a latin-1 label: UTF-8 first
    ("<p>naïve café</p>".encode("utf-8"), "iso-8859-1", "<p>naïve café</p>", "utf-8"),
    ("\ufeff<p>hello</p>".encode("utf-16-le"), None, "<p>hello</p>", "utf-16-le"),
])
def test_decode_html(body, http_charset, expected, encoding):
    assert decode_html(body, http_charset) == (expected, encoding)


def test_decode_html_rejects_binary():
    junk = bytes(range(256)) * 20
    assert decode_html(junk, "utf-8") is None
    assert decode_html(junk, "iso-8859-1") is None  # decodes as cp1252, but is mostly control characters


def test_undecodable_is_dropped_and_counted(crawl_dir):
    path = crawl_dir / "c.warc.gz"
    write_warc(path, [("http://bin.example/", 200, "text/html; charset=utf-8", bytes(range(256)) * 8),
                      ("http://ru.example/", 200, "text/html; charset=windows-1251", "<p>Привет</p>".encode("cp1251"))])
    docs, stats, removed = read([path])
    assert [d.metadata["url"] for d in docs] == ["http://ru.example/"] and docs[0].text == "<p>Привет</p>"
    assert dict(stats.dropped) == {"undecodable": 1} and removed[0][0].metadata["url"] == "http://bin.example/"


# ---- damaged files -------------------------------------------------------------------------------

def urls(docs):
    return [d.metadata["url"] for d in docs]


def test_truncated_last_member(crawl_dir, caplog):
    path = crawl_dir / "t.warc.gz"
    offsets = write_warc(path, html_pages(4))
    data = path.read_bytes()
    path.write_bytes(data[: offsets[3] + 60])  # the 4th response cut 60 bytes into its member
    with caplog.at_level(logging.WARNING, logger="pipelines.warc_reader"):
        docs, stats, _ = read([path])
    assert urls(docs) == [f"http://site{i}.example/" for i in range(3)]
    assert stats.counters["truncated_gzip"] == 1
    assert sum("truncated gzip" in r.message for r in caplog.records) == 1


def test_truncated_member_in_the_middle_loses_only_that_record(crawl_dir):
    path = crawl_dir / "m.warc.gz"
    offsets = write_warc(path, html_pages(5))
    data = path.read_bytes()
    # the 2nd response's member cut short (as a resumed download that lost bytes), then the
    # following members intact
    d = zlib.decompressobj(wbits=31)
    d.decompress(data[offsets[1]:])
    member_end = len(data) - len(d.unused_data)
    path.write_bytes(data[: offsets[1] + 50] + data[member_end:])
    docs, stats, _ = read([path])
    assert urls(docs) == [f"http://site{i}.example/" for i in (0, 2, 3, 4)]
    assert stats.counters["truncated_gzip"] == 1
    # offsets of the records after the damage still point at their members
    raw = path.read_bytes()
    for d in docs:
        member = zlib.decompressobj(wbits=31).decompress(raw[d.metadata["warc_record_offset"]:])
        assert d.id.encode() in member


def test_corrupt_bytes_in_a_member(crawl_dir):
    path = crawl_dir / "x.warc.gz"
    offsets = write_warc(path, html_pages(5))
    data = bytearray(path.read_bytes())
    for k in range(offsets[2] + 40, offsets[2] + 90):
        data[k] ^= 0x5A
    path.write_bytes(bytes(data))
    docs, stats, _ = read([path])
    assert urls(docs) == [f"http://site{i}.example/" for i in (0, 1, 3, 4)]
    assert stats.counters["corrupt_gzip"] == 1
    assert stats.docs_in == 4


def test_garbage_between_and_before_members(crawl_dir):
    path = crawl_dir / "g.warc.gz"
    offsets = write_warc(path, html_pages(3))
    data = path.read_bytes()
    path.write_bytes(b"\x00junk\x1f\x8b\x08junk" * 5 + data[: offsets[1]] + b"garbage!" * 30 + data[offsets[1]:])
    docs, stats, _ = read([path])
    assert urls(docs) == [f"http://site{i}.example/" for i in range(3)]
    assert sum(damage(stats).values()) >= 2


def test_one_gzip_stream_for_the_whole_file(crawl_dir):
    plain = crawl_dir / "p.warc"
    write_warc(plain, html_pages(4), gz=False)
    path = crawl_dir / "s.warc.gz"
    path.write_bytes(gzip.compress(plain.read_bytes()))
    docs, stats, _ = read([path])
    assert urls(docs) == [f"http://site{i}.example/" for i in range(4)]
    assert stats.counters["single_gzip_stream"] == 1
    assert all(d.metadata["warc_record_offset"] is None for d in docs)  # not seekable offsets
    # cut short: the records before the cut survive, the cut is counted
    path.write_bytes(gzip.compress(plain.read_bytes())[:-150])
    docs, stats, _ = read([path])
    assert 1 <= len(docs) < 4 and urls(docs) == [f"http://site{i}.example/" for i in range(len(docs))]
    assert stats.counters["truncated_gzip"] == 1
    # an uncompressed WARC reads too, with real offsets
    docs, stats, _ = read([plain])
    assert len(docs) == 4 and not damage(stats) and docs[0].metadata["warc_record_offset"] > 0


@pytest.mark.parametrize("delta", [-25, 40, 100_000])
def test_wrong_content_length(crawl_dir, delta):
    path = crawl_dir / "l.warc.gz"
    good = [raw_record(f"http://site{i}.example/", http_block(200, "text/html", page(i))) for i in range(4)]
    bad_block = http_block(200, "text/html", page(1, "the record with the lying header"))
    good[1] = raw_record("http://site1.example/", bad_block, length=len(bad_block) + delta)
    write_warc(path, good)
    docs, stats, _ = read([path])
    assert urls(docs) == [f"http://site{i}.example/" for i in range(4)]
    assert stats.counters["bad_content_length"] == 1
    assert docs[1].text == page(1, "the record with the lying header").decode()  # repaired from its member


def test_records_without_http_headers(crawl_dir, caplog):
    """Policy (pipelines/http_payload.py): no status line -> the block is the payload; HTML-looking
    payloads are 200 text/html pages, the rest are dropped as no_http_headers (not http_status,
    which said a server answered 4xx). All of them are counted, one warning line per file."""
    path = crawl_dir / "h.warc.gz"
    long_html = b"<!DOCTYPE html><html><body><p>" + b"one long line of words " * 4000 + b"</p></body></html>"
    blank_first = b"<html>\r\n\r\n<body><p>A page whose second line is empty.</p></body></html>"
    write_warc(path, [raw_record("http://nohttp.example/", page(1)),
                      raw_record("http://plain.example/", page(2), content_type="text/html"),
                      raw_record("http://ok.example/", http_block(200, "text/html", page(3))),
                      raw_record("http://png.example/", b"\x89PNG\r\n\x1a\n" + os.urandom(300)),
                      # 90 KB without a blank line: fastwarc's HTTP parser gave up on the file here
                      raw_record("http://long.example/", long_html),
                      # fastwarc took "<html>" for the headers and the rest for the body
                      raw_record("http://blank.example/", blank_first),
                      raw_record("http://after.example/", http_block(200, "text/html", page(4)))])
    with caplog.at_level(logging.WARNING, logger="pipelines.warc_reader"):
        docs, stats, removed = read([path])
    assert urls(docs) == ["http://nohttp.example/", "http://plain.example/", "http://ok.example/",
                          "http://long.example/", "http://blank.example/", "http://after.example/"]
    texts = {d.metadata["url"]: d.text for d in docs}
    assert texts["http://nohttp.example/"] == page(1).decode()
    assert texts["http://long.example/"] == long_html.decode()
    assert texts["http://blank.example/"] == blank_first.decode()
    assert [(d.metadata["url"], r) for d, r in removed] == [("http://png.example/", "no_http_headers")]
    assert damage(stats) == {"no_http_headers": 5}
    assert stats.counters["records"] == stats.docs_in == 7  # every record accounted for
    assert sum("no HTTP status line" in r.message for r in caplog.records) == 1


def chunked(body: bytes, size: int = 40) -> bytes:
    """`body` in real chunked transfer coding."""
    parts = [b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size)]
    return b"".join(parts) + b"0\r\n\r\n"


def te_block(body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n{extra}\r\n".encode() + body


def test_chunked_header_on_a_dechunked_body(crawl_dir, caplog):
    """pywb/webrecorder keep `Transfer-Encoding: chunked` but store the body de-chunked: fastwarc's
    de-chunking fails on it (the old reader lost the record as damage, `invalid_record`). The body
    is read raw instead and counted as dechunk_fallback; it equals what warcio gives, for these and
    for real chunked bodies (which fastwarc decodes itself, not counted)."""
    path = crawl_dir / "chunk.warc.gz"
    html = {i: page(i, "A paragraph long enough to need several chunks of forty bytes each.") for i in range(6)}
    write_warc(path, [
        raw_record("http://pywb.example/", te_block(html[0])),                                # stored de-chunked
        raw_record("http://real.example/", te_block(chunked(html[1]))),                      # really chunked
        raw_record("http://gz.example/", te_block(chunked(gzip.compress(html[2])), "Content-Encoding: gzip\r\n")),
        raw_record("http://pywb-gz.example/", te_block(gzip.compress(html[3]), "Content-Encoding: gzip\r\n")),
        raw_record("http://cut.example/", te_block(chunked(html[4])[:150])),                 # cut inside a chunk
        raw_record("http://hexlike.example/", te_block(b"abc\r\n" + html[5])),               # starts like a size line
        raw_record("http://ok.example/", http_block(200, "text/html", page(9))),
    ])
    with caplog.at_level(logging.WARNING, logger="pipelines.warc_reader"):
        docs, stats, removed = read([path])
    assert not removed and len(docs) == 7
    assert damage(stats) == {"dechunk_fallback": 4}  # pywb, pywb-gz, cut, hexlike
    assert sum("Transfer-Encoding: chunked" in r.message for r in caplog.records) == 1
    from warcio.archiveiterator import ArchiveIterator as WarcioIterator
    with open(path, "rb") as fh:
        warcio_bodies = {r.rec_headers.get_header("WARC-Target-URI"): r.content_stream().read()
                         for r in WarcioIterator(fh) if r.rec_type == "response"}
    for d in docs:
        assert d.text.encode() == warcio_bodies[d.metadata["url"]], d.metadata["url"]
    assert docs[0].text == html[0].decode() and docs[2].text == html[2].decode()


def test_content_encoding_that_does_not_decode_is_undecodable(crawl_dir):
    path = crawl_dir / "ce-bad.warc.gz"
    write_warc(path, [raw_record("http://bad.example/", b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                                 b"Content-Encoding: gzip\r\n\r\n\x1f\x8b\x08\x00not gzip at all"),
                      raw_record("http://ok.example/", http_block(200, "text/html", page(1)))])
    docs, stats, removed = read([path])
    assert urls(docs) == ["http://ok.example/"]  # the file goes on: no damage, no resync
    assert [(d.metadata["url"], r) for d, r in removed] == [("http://bad.example/", "undecodable")]
    assert damage(stats) == {"content_decoding_failed": 1}


def clueweb_record(url: str, body: bytes, version="WARC/0.18", nl="\n", length_delta=0) -> bytes:
    """A record as ClueWeb09 has them: pre-ISO version line, every header line ending in LF."""
    http = nl.join(["HTTP/1.1 200 OK", "Content-Type: text/html", "", ""]).encode() + body
    head = nl.join([version, "WARC-Type: response", f"WARC-Target-URI: {url}", "WARC-Date: 2009-01-13T18:05:37-0800",
                    f"WARC-Record-ID: <urn:uuid:{abs(hash(url)):032x}>", "Content-Type: application/http;msgtype=response",
                    f"Content-Length: {len(http) + length_delta}", "", ""])
    return head.encode() + http + (nl * 2).encode()


@pytest.mark.parametrize("layout", ["members", "plain"])
def test_pre_1_0_warc_versions_are_read(crawl_dir, caplog, layout):
    """WARC/0.18 with bare-LF lines (ClueWeb09) vanished: fastwarc's strict parser yields them as
    records of unknown type. The file is read in fastwarc's lenient mode (chosen per file, from
    its first record) and counted once as lenient_warc_parsing. WARC/0.17 with CRLF lines
    (Heritrix 1.x) parses strictly."""
    gz = layout == "members"
    ext = ".warc.gz" if gz else ".warc"
    clue, heritrix = crawl_dir / f"clueweb{ext}", crawl_dir / f"heritrix{ext}"
    records = [clueweb_record(f"http://cw{i}.example/", page(i)) for i in range(4)]
    old = [clueweb_record(f"http://h{i}.example/", page(i), "WARC/0.17", "\r\n") for i in range(3)]
    clue.parent.mkdir(parents=True, exist_ok=True)
    for path, recs in ((clue, records), (heritrix, old)):
        path.write_bytes(b"".join(gzip.compress(r) for r in recs) if gz else b"".join(recs))
    with caplog.at_level(logging.WARNING, logger="pipelines.warc_reader"):
        docs, stats, _ = read([clue, heritrix])
    assert urls(docs) == [f"http://cw{i}.example/" for i in range(4)] + [f"http://h{i}.example/" for i in range(3)]
    assert docs[1].text == page(1).decode()
    assert damage(stats) == {"lenient_warc_parsing": 1}
    assert any("WARC/0.18 records with header lines ending in a bare LF" in r.message for r in caplog.records)


def test_clueweb_lengths_are_repaired_and_damage_resyncs_on_old_versions(crawl_dir):
    """ClueWeb09's Content-Length counts the CRs its lines lost: too long. One gzip member per
    record tells the true length (repaired, counted); in a plain file, damage resynchronises on
    the next WARC/0.x version line (the old reader looked for `WARC/1.` only)."""
    path = crawl_dir / "cw-len.warc.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(gzip.compress(clueweb_record(f"http://cw{i}.example/", page(i), length_delta=9))
                              for i in range(3)))
    docs, stats, _ = read([path])
    assert urls(docs) == [f"http://cw{i}.example/" for i in range(3)] and docs[2].text == page(2).decode()
    assert damage(stats) == {"lenient_warc_parsing": 1, "bad_content_length": 3}
    plain = crawl_dir / "h-damaged.warc"
    recs = [clueweb_record(f"http://h{i}.example/", page(i), "WARC/0.17", "\r\n") for i in range(3)]
    plain.write_bytes(recs[0] + b"\x00\x01garbage in the middle\r\n" * 3 + recs[1] + recs[2])
    docs, stats, _ = read([plain])
    assert urls(docs) == [f"http://h{i}.example/" for i in range(3)]
    assert damage(stats) == {"corrupt_record": 1}
    # a plain LF file has no members to check against: a record the lenient parser skips (read
    # into by its neighbour's long Content-Length) is lost, but counted, never silent
    plain_lf = crawl_dir / "cw-plain.warc"
    plain_lf.write_bytes(b"".join(clueweb_record(f"http://cw{i}.example/", page(i), length_delta=9 * (i == 1))
                                  for i in range(4)))
    docs, stats, _ = read([plain_lf])
    assert urls(docs) == ["http://cw0.example/", "http://cw1.example/", "http://cw3.example/"]
    assert damage(stats) == {"lenient_warc_parsing": 1, "unparsed_record": 1}


def test_unreadable_file_does_not_stop_the_others(tmp_path):
    good = tmp_path / "ok.warc.gz"
    write_warc(good, html_pages(2))
    docs, stats, _ = read([tmp_path / "missing.warc.gz", good])
    assert len(docs) == 2 and stats.counters["unreadable_file"] == 1


def test_iter_warc_documents_and_stats(tmp_path):
    a, b = tmp_path / "a.warc.gz", tmp_path / "b.warc.gz"
    write_warc(a, html_pages(2))
    write_warc(b, html_pages(3, start=2) + [("http://e.example/", 500, "text/html", b"")])
    stats = StageStats("warc_reader")
    docs = list(iter_warc_documents([a, b], stats=stats))
    assert all(isinstance(d, Document) for d in docs) and len(docs) == 5
    assert stats.docs_in == 6 and stats.docs_out == 5 and stats.dropped["http_status"] == 1


def test_sample_crawl_matches_manifest(tmp_path):
    samplecrawl = pytest.importorskip("pipelines.samplecrawl")
    if not hasattr(samplecrawl, "generate_crawl"):
        pytest.skip("generate_crawl not written yet")
    import json
    info = samplecrawl.generate_crawl(tmp_path, pages=60, seed=3, crawl=CRAWL, files=2)
    docs, stats, removed = read(info.warc_paths)
    manifest = [json.loads(line) for line in info.manifest_path.read_text().splitlines() if line.strip()]
    expected_drops = {m["url"]: m["reason"] for m in manifest
                      if m.get("fate") == "dropped" and m.get("stage") == "warc_reader"}
    got_drops = {d.metadata["url"]: r for d, r in removed}
    assert expected_drops and got_drops == expected_drops
    assert stats.docs_in == len(manifest) and not damage(stats)  # a clean crawl: nothing broken
    kept = {d.metadata["url"] for d in docs}
    assert not kept & set(expected_drops)
    by_url = {m["url"]: m for m in manifest}
    for d in docs:
        m = by_url.get(d.metadata["url"])
        if m and m.get("record_id"):
            assert d.id == m["record_id"]
        if m and m.get("offset") is not None:
            assert d.metadata["warc_record_offset"] == m["offset"]
        assert d.metadata["dump"] == CRAWL


# ---- bounded memory, and files that hold no document ----------------------------------------------

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


@pytest.fixture(scope="module")
def bomb():
    return bomb_member("http://bomb.example/")


# Reads a file in a fresh process and reports what it kept and dropped, and its peak RSS above the
# one it had before reading (the bomb lives in that process alone, so its peak is the reader's).
_READ_IN_CHILD = """
import json, resource, sys, time
from pipelines.runner import run_stages
from pipelines.warc_reader import WarcReader
removed = []
docs, stats = run_stages(iter(()), [WarcReader([sys.argv[1]])], sink=lambda d, s, r: removed.append((d.metadata["url"], r, len(d.text))))
before, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
kept = [(d.metadata["url"], len(d.text)) for d in docs]
s = stats["warc_reader"]
print(json.dumps({"kept": kept, "removed": removed, "dropped": dict(s.dropped), "counters": dict(s.counters),
                  "rss_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024,
                  "seconds": time.perf_counter() - t0}))
"""


def test_decompression_bomb_is_dropped_in_bounded_memory(tmp_path, bomb):
    """1 GiB of HTML inflated from ~5 MB: dropped as oversize_body, the pages around it kept, and the
    reading process grows by a few MB (the reader that read bodies whole grew by 4 GB, took 22 s,
    kept two bombs as documents and counted the other two as damage on this file). The bomb comes
    first (fastwarc skips it), after a page (the reader resumes past its member) and last (its member
    is checked without inflating it whole), and once more after damage (resynchronised onto it)."""
    path = tmp_path / "bomb.warc.gz"
    pages = [gzip.compress(raw_record(f"http://site{i}.example/", http_block(200, "text/html", page(i))))
             for i in range(3)]
    path.write_bytes(bomb + pages[0] + bomb + pages[1] + b"garbage!" * 8 + bomb + pages[2] + bomb)
    out = subprocess.run([sys.executable, "-c", _READ_IN_CHILD, str(path)], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout)
    assert [u for u, _ in got["kept"]] == [f"http://site{i}.example/" for i in range(3)]
    assert got["dropped"] == {"oversize_body": 4}
    assert {tuple(r) for r in got["removed"]} == {("http://bomb.example/", "oversize_body", 0)}
    assert damage(got["counters"]) == {"corrupt_gzip": 1}  # the garbage, not the bombs
    assert got["rss_mb"] < 200, f"the reader grew by {got['rss_mb']:.0f} MB on a bomb"


def test_bomb_member_is_not_inflated_whole(tmp_path, bomb):
    """The checks on a member (kept-record check, resync candidates) give up past cap + headers."""
    from pipelines.warc_reader import _member_at, _next_member
    path = tmp_path / "b.warc.gz"
    path.write_bytes(b"junk" + bomb)
    cap = 1 << 20
    with open(path, "rb") as f:
        data, end = _member_at(f.fileno(), 4, path.stat().st_size, cap)
        assert end is None and data.startswith(b"WARC/1.0") and len(data) <= 3 * cap
        assert _next_member(f.fileno(), 0, path.stat().st_size, True, cap) == 4  # still a record start


@pytest.mark.parametrize("layout", ["members", "one_stream", "plain"])
def test_oversize_body_is_dropped_and_the_file_goes_on(crawl_dir, layout):
    path = crawl_dir / f"o-{layout}.warc{'' if layout == 'plain' else '.gz'}"
    big = page(1, "x" * 3000)
    write_warc(path, html_pages(1) + [("http://big.example/", 200, "text/html", big)] + html_pages(2, start=2),
               gz=layout == "members")
    if layout == "one_stream":
        path.write_bytes(gzip.compress(path.read_bytes()))
    docs, stats, removed = read([path], max_body_bytes=2000)
    assert urls(docs) == ["http://site0.example/", "http://site2.example/", "http://site3.example/"]
    assert dict(stats.dropped) == {"oversize_body": 1}
    (doc, reason), = removed
    assert reason == "oversize_body" and doc.text == "" and doc.metadata["url"] == "http://big.example/"
    assert (doc.metadata["warc_record_offset"] is None) == (layout == "one_stream")
    # a body exactly at the cap is kept
    docs, stats, _ = read([path], max_body_bytes=len(big))
    assert len(docs) == 4 and not stats.dropped


def test_cap_applies_to_the_decoded_body(crawl_dir):
    """Content-Encoding: gzip is decoded by fastwarc: the cap counts what it inflates to."""
    path = crawl_dir / "ce.warc.gz"
    body = b"<html>" + b" " * 100_000 + b"</html>"
    block = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Encoding: gzip\r\n\r\n"
             + gzip.compress(body))
    write_warc(path, [raw_record("http://ce.example/", block),
                      raw_record("http://ok.example/", http_block(200, "text/html", page(1)))])
    docs, stats, _ = read([path], max_body_bytes=50_000)
    assert urls(docs) == ["http://ok.example/"] and dict(stats.dropped) == {"oversize_body": 1}
    docs, stats, _ = read([path])
    assert len(docs) == 2 and len(docs[0].text) == len(body)


def test_max_body_bytes_comes_from_the_config():
    from pipelines.config import load_config
    from pipelines.errors import ConfigError
    cfg = load_config()["warc_reader"]
    assert cfg["max_body_bytes"] == 4 << 20
    assert WarcReader([], **cfg).config()["max_body_bytes"] == 4 << 20
    with pytest.raises(ConfigError, match="max_body_bytes"):
        WarcReader([], max_body_bytes=0)


def write_requests_only(path, n: int) -> None:
    """A WARC file of n request records and no response."""
    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=True)
    for i in range(n):
        w.write_record(w.create_warc_record(f"http://site{i}.example/", "request",
                                            payload=io.BytesIO(b"GET / HTTP/1.1\r\n\r\n")))
    path.write_bytes(buf.getvalue())


def test_empty_and_request_only_files_are_counted(crawl_dir, caplog):
    empty = crawl_dir / "empty.warc.gz"
    empty.parent.mkdir(parents=True, exist_ok=True)
    empty.write_bytes(b"")
    requests_only = crawl_dir / "requests.warc.gz"
    write_requests_only(requests_only, 3)
    good = crawl_dir / "good.warc.gz"
    write_warc(good, html_pages(2))
    with caplog.at_level(logging.WARNING, logger="pipelines.warc_reader"):
        docs, stats, _ = read([empty, requests_only, good])
    assert len(docs) == 2 and stats.docs_in == 2
    assert damage(stats) == {"empty_file": 1, "no_response_records": 1}
    warnings = [r.getMessage() for r in caplog.records]
    assert any(str(empty) in m and "empty" in m for m in warnings)
    assert any(str(requests_only) in m and "3 records, none of them a response" in m for m in warnings)
