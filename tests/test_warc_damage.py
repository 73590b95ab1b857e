"""WARC reader on damaged files: truncated and corrupt gzip members, garbage, wrong lengths and
decompression bombs lose only what they hit, in bounded memory, and never stop a run."""
from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from warc_fixtures import (bomb_member, clueweb_record, crawl_dir, damage, html_pages, http_block,  # noqa: F401
                           page, raw_record, read, urls, write_warc)                   # (crawl_dir: a fixture)


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
    from pipelines.warc_records import _member_at, _next_member
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


def test_plain_record_whose_length_runs_past_the_end(crawl_dir, caplog):
    """A plain .warc whose first record claims 3 GiB lost the 9 records after it without a word
    (fastwarc stops at the end of the file) and kept the first with all of them as its body. The
    record is read up to the next version line (bad_content_length) and the reader goes on; a file
    cut short in its last record keeps what is there, counted truncated_record."""
    path = crawl_dir / "claims-3gib.warc"
    liar = raw_record("http://liar.example/", http_block(200, "text/html", page(0)), length=3 << 30)
    rest = [raw_record(f"http://site{i}.example/", http_block(200, "text/html", page(i))) for i in range(1, 10)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(liar + b"".join(rest))
    with caplog.at_level(logging.WARNING, logger="pipelines.warc_records"):
        docs, stats, _ = read([path])
    assert urls(docs) == ["http://liar.example/"] + [f"http://site{i}.example/" for i in range(1, 10)]
    assert [d.text for d in docs] == [page(i).decode() for i in range(10)]
    assert damage(stats) == {"bad_content_length": 1}
    assert any("past the end of the file" in r.message for r in caplog.records)
    # the same with a body over the cap up to the next record: dropped as oversize, the rest read
    big = raw_record("http://big.example/", http_block(200, "text/html", page(0, "x" * 5000)), length=3 << 30)
    path.write_bytes(big + b"".join(rest))
    docs, stats, removed = read([path], max_body_bytes=2000)
    assert urls(docs) == [f"http://site{i}.example/" for i in range(1, 10)]
    assert [(d.metadata["url"], r) for d, r in removed] == [("http://big.example/", "oversize_body")]
    # cut short inside the last record: kept as far as it goes, and counted
    cut = crawl_dir / "cut.warc"
    cut.write_bytes(b"".join(rest[:3])[:-30])
    docs, stats, _ = read([cut])
    assert len(docs) == 3 and damage(stats) == {"truncated_record": 1}
