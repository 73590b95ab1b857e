"""WARC reader: kept/dropped records, provenance, charsets, the quirks of real archives (no status line,
chunked labels on de-chunked bodies, pre-1.0 versions) and files that hold no document."""
from __future__ import annotations

import gzip
import json
import logging
import os
import re
import zlib

import pytest

from pipelines.document import Document
from pipelines.runner import StageStats
from pipelines.warc_reader import WarcReader, crawl_from_path, decode_html, iter_warc_documents
from warc_fixtures import (CRAWL, chunked, clueweb_record, crawl_dir, damage, html_pages,  # noqa: F401
                           http_block, page, raw_record, read, te_block, urls, write_requests_only,
                           write_warc)                                             # (crawl_dir: a fixture)


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
    assert [d.metadata["url"] for d in docs] == ["http://ok.example/"]  # XHTML: FineWeb's choice, below
    assert stats.docs_in == 7 and stats.docs_out == 1  # request/metadata records are not documents
    assert dict(stats.dropped) == {"http_status": 2, "non_html": 4}
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
    assert decode_html(body, http_charset) == (expected, encoding, 0)
    assert decode_html(body, http_charset, max_invalid_frac=0.01) == (expected, encoding, 0)  # strict wins


def test_decode_html_rejects_binary():
    junk = bytes(range(256)) * 20
    assert decode_html(junk, "utf-8") is None
    assert decode_html(junk, "iso-8859-1") is None  # decodes as cp1252, but is mostly control characters


def test_control_bytes_counts_exactly_the_control_set():
    from pipelines.http_payload import _CONTROL_BYTES, control_bytes
    for value in range(256):
        assert control_bytes(bytes([value]) * 3) == (3 if value in _CONTROL_BYTES else 0), value
    data = os.urandom(100_000) + b"<p>text</p>\n\t\r\x0c" * 100
    assert control_bytes(data) == len(data) - len(data.translate(None, _CONTROL_BYTES))
    assert control_bytes(b"") == 0


def test_undecodable_is_dropped_and_counted(crawl_dir):
    path = crawl_dir / "c.warc.gz"
    write_warc(path, [("http://bin.example/", 200, "text/html; charset=utf-8", bytes(range(256)) * 8),
                      ("http://ru.example/", 200, "text/html; charset=windows-1251", "<p>Привет</p>".encode("cp1251"))])
    docs, stats, removed = read([path])
    assert [d.metadata["url"] for d in docs] == ["http://ru.example/"] and docs[0].text == "<p>Привет</p>"
    assert dict(stats.dropped) == {"undecodable": 1} and removed[0][0].metadata["url"] == "http://bin.example/"


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


def test_max_body_bytes_comes_from_the_config():
    from pipelines.config import load_config
    from pipelines.errors import ConfigError
    cfg = load_config()["warc_reader"]
    assert cfg["max_body_bytes"] == 4 << 20
    assert WarcReader([], **cfg).config()["max_body_bytes"] == 4 << 20
    with pytest.raises(ConfigError, match="max_body_bytes"):
        WarcReader([], max_body_bytes=0)


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


def test_xhtml_follows_fineweb_unless_listed(crawl_dir):
    """FineWeb (datatrove 0.2.0) reads a record when its WARC-Identified-Payload-Type (Common Crawl's
    type, detected from the bytes) is text/html, or, without that header, when the payload is HTML:
    XHTML pages are skipped, including those served as text/html. The config says so (mime_types:
    [text/html]); listing application/xhtml+xml reads them all."""
    path = crawl_dir / "xhtml.warc.gz"
    cc = lambda t: {"WARC-Identified-Payload-Type": t}  # noqa: E731
    write_warc(path, [
        raw_record("http://served-xhtml.example/", http_block(200, "application/xhtml+xml", page(1))),
        raw_record("http://cc-xhtml.example/", http_block(200, "text/html", page(2)), headers=cc("application/xhtml+xml")),
        raw_record("http://cc-html.example/", http_block(200, "text/html", page(3)), headers=cc("text/html")),
        # the server said octet-stream, Common Crawl's detector says HTML: FineWeb read it
        raw_record("http://cc-sniffed.example/", http_block(200, "application/octet-stream", page(4)),
                   headers=cc("text/html")),
    ])
    from pipelines.config import load_config
    cfg = load_config()["warc_reader"]
    assert cfg["mime_types"] == ["text/html"]
    docs, stats, removed = read([path], **cfg)
    assert urls(docs) == ["http://cc-html.example/", "http://cc-sniffed.example/"]
    assert [(d.metadata["url"], r) for d, r in removed] == [("http://served-xhtml.example/", "non_html"),
                                                             ("http://cc-xhtml.example/", "non_html")]
    docs, _, removed = read([path], **{**cfg, "mime_types": ["text/html", "application/xhtml+xml"]})
    assert len(docs) == 4 and not removed and docs[1].text == page(2).decode()


def test_content_encoding_on_a_body_stored_decoded(crawl_dir, caplog):
    """`Content-Encoding: gzip` (or deflate, br) on a body the archiver stored decoded lost the page as
    undecodable (a Japanese crawl: 29 of 29 pages); the chunked case already had a fallback. One
    policy now: a coding the body does not carry is read as stored and counted; a body that carries
    it and does not decode is still undecodable; a real gzip body is decoded, not counted."""
    path = crawl_dir / "ce-decoded.warc.gz"
    html = {i: ('<html><body><p>' + '日本語のページです。' * 40 + f' {i}</p></body></html>').encode() for i in range(7)}
    ce = lambda c: f"Content-Encoding: {c}\r\n"  # noqa: E731
    corrupt = gzip.compress(html[6])
    corrupt = corrupt[:20] + bytes(40) + corrupt[60:]  # a gzip stream, damaged: still undecodable
    write_warc(path, [
        raw_record("http://gzip.example/", http_block(200, "text/html; charset=utf-8", html[0], ce("gzip"))),
        raw_record("http://deflate.example/", http_block(200, "text/html", html[1], ce("deflate"))),
        raw_record("http://br.example/", http_block(200, "text/html", html[2], ce("br"))),
        raw_record("http://real-gzip.example/", http_block(200, "text/html", gzip.compress(html[3]), ce("gzip"))),
        # really chunked, its content stored decoded; then chunked label and gzip label both stale
        raw_record("http://chunked.example/", te_block(chunked(html[4]), ce("gzip"))),
        raw_record("http://both.example/", te_block(html[5], ce("gzip"))),
        raw_record("http://broken.example/", http_block(200, "text/html", corrupt, ce("gzip"))),
    ])
    with caplog.at_level(logging.WARNING, logger="pipelines.warc_reader"):
        docs, stats, removed = read([path])
    assert urls(docs) == ["http://gzip.example/", "http://deflate.example/", "http://br.example/",
                          "http://real-gzip.example/", "http://chunked.example/", "http://both.example/"]
    assert [d.text.encode() for d in docs] == [html[i] for i in range(6)]
    assert [(d.metadata["url"], r) for d, r in removed] == [("http://broken.example/", "undecodable")]
    assert damage(stats) == {"content_encoding_fallback": 5, "dechunk_fallback": 1, "content_decoding_failed": 1}
    assert sum("stored decoded" in r.message for r in caplog.records) == 1


def test_a_few_invalid_bytes_are_replaced_many_are_undecodable(crawl_dir):
    """Real pages with 0.1-0.4% invalid UTF-8 bytes were dropped (only strict decodes were tried).
    When no charset decodes a body cleanly and its invalid bytes are at most max_invalid_bytes_frac
    of it, they become U+FFFD (counted lenient_decode); more than that is undecodable; 0 is strict."""
    path = crawl_dir / "invalid.warc.gz"
    body = ('<html><body><p>' + 'これは日本語のページです。' * 300 + '</p></body></html>').encode()
    few = body[:300] + b"\xff" + body[300:3000] + b"\xc3" + body[3000:]     # 2 stray bytes in 11.7 KB
    many = bytes(b if i % 50 else 0xFF for i, b in enumerate(body))        # 2% of the bytes
    write_warc(path, [raw_record("http://few.example/", http_block(200, "text/html", few)),
                      raw_record("http://many.example/", http_block(200, "text/html", many)),
                      raw_record("http://clean.example/", http_block(200, "text/html", body))])
    docs, stats, removed = read([path])
    assert urls(docs) == ["http://few.example/", "http://clean.example/"]
    assert docs[0].text == few.decode("utf-8", "replace") and docs[0].text.count("\ufffd") == 2
    assert [(d.metadata["url"], r) for d, r in removed] == [("http://many.example/", "undecodable")]
    assert damage(stats) == {"lenient_decode": 1}
    docs, stats, _ = read([path], max_invalid_bytes_frac=0)  # datatrove 0.2.0: strict only
    assert urls(docs) == ["http://clean.example/"] and dict(stats.dropped) == {"undecodable": 2}
    assert decode_html(few, None, 0.005)[1:] == ("utf-8", 2)
    assert decode_html(many, None, 0.005) is None


def test_wget_angle_bracket_uris_are_canonical_and_filtered(crawl_dir):
    """wget writes `WARC-Target-URI: <https://...>` (WARC/1.0's grammar): the brackets were kept, the
    URL filter took `<https` for the host, and a block-listed domain went through. The reader stores
    one canonical URL (no brackets or surrounding spaces, lower-case scheme and host), which is what
    the URL filter checks and every later stage keeps."""
    from pipelines.runner import run_stages
    from pipelines.url_filter import URLFilter
    path = crawl_dir / "wget.warc"
    # onlyfans.com is on the shipped domain list and has no banned word: in brackets it was kept
    write_warc(path, [raw_record("<https://www.OnlyFans.COM/someone>", http_block(200, "text/html", page(1))),
                      raw_record("< HTTP://News.Example.COM/A/Story?ID=7 >", http_block(200, "text/html", page(2))),
                      raw_record("<http://blocked-by-url.example/Path>", http_block(200, "text/html", page(3)))],
               gz=False)
    removed = []
    out, stats = run_stages(iter(()), [WarcReader([path]), URLFilter(extra_urls=["blocked-by-url.example/Path"])],
                            sink=lambda d, s, r: removed.append((d.metadata["url"], s, r)))
    assert urls(list(out)) == ["http://news.example.com/A/Story?ID=7"]
    assert removed == [("https://www.onlyfans.com/someone", "url_filter", "domain"),
                       ("http://blocked-by-url.example/Path", "url_filter", "url")]
