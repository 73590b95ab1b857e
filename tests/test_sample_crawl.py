"""The sample crawl generator: real, parseable WARC files whose manifest tells the truth."""
from __future__ import annotations

import gzip
import hashlib
import json
import base64
from collections import Counter
from pathlib import Path

import pytest

from pipelines.samplecrawl import CrawlInfo, generate_crawl
from pipelines.samplecrawl.lowquality import ALL_RULES
from pipelines.samplecrawl.pii import iban_ok, luhn_ok
from pipelines.samplecrawl.plan import plan_counts

PAGES = 80


@pytest.fixture(scope="module")
def crawl(tmp_path_factory) -> CrawlInfo:
    return generate_crawl(tmp_path_factory.mktemp("crawl"), pages=PAGES, seed=7, files=2)


@pytest.fixture(scope="module")
def manifest(crawl) -> list[dict]:
    return [json.loads(line) for line in crawl.manifest_path.read_text(encoding="utf-8").splitlines()]


def _files(crawl: CrawlInfo) -> dict[str, bytes]:
    return {str(p.relative_to(crawl.out_dir)): p.read_bytes()
            for p in sorted(crawl.out_dir.rglob("*")) if p.is_file()}


def test_layout_and_listing(crawl):
    root = crawl.out_dir / "crawl-data" / "CC-MAIN-2099-01"
    assert crawl.paths_listing == root / "warc.paths.gz"
    listed = gzip.decompress(crawl.paths_listing.read_bytes()).decode().split()
    assert listed == [str(p.relative_to(crawl.out_dir)) for p in crawl.warc_paths]
    assert len(listed) == 2
    for rel in listed:
        assert rel.startswith("crawl-data/CC-MAIN-2099-01/segments/") and "/warc/" in rel
        assert rel.endswith(".warc.gz") and (crawl.out_dir / rel).is_file()


def test_warcio_reads_every_record_and_offsets_match(crawl, manifest):
    from warcio.archiveiterator import ArchiveIterator

    by_offset = {(m["warc_file"], m["offset"]): m for m in manifest}
    responses = 0
    for path in crawl.warc_paths:
        rel = str(path.relative_to(crawl.out_dir))
        with open(path, "rb") as fh:
            it = ArchiveIterator(fh)
            types = []
            for rec in it:
                types.append(rec.rec_type)
                if rec.rec_type == "response":
                    responses += 1
                    body = rec.content_stream().read()  # before get_record_offset(), which consumes the record
                    m = by_offset[(rel, it.get_record_offset())]
                    assert rec.rec_headers.get_header("WARC-Record-ID") == m["record_id"]
                    assert rec.rec_headers.get_header("WARC-Target-URI") == m["url"]
                    assert rec.rec_headers.get_header("WARC-Date").startswith("2099-01-")
                    assert int(rec.http_headers.get_statuscode()) == m["status"]
                    digest = "sha1:" + base64.b32encode(hashlib.sha1(body).digest()).decode()
                    assert rec.rec_headers.get_header("WARC-Payload-Digest") == digest, (m["category"], m["content_type"], len(body))
        assert types[0] == "warcinfo"
        # Common Crawl's order per capture: request, response, metadata
        assert types[1:4] == ["request", "response", "metadata"]
    assert responses == len(manifest) == PAGES


def test_fastwarc_parses_and_checks_digests(crawl, manifest):
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    ids = {m["record_id"] for m in manifest}
    seen = Counter()
    for path in crawl.warc_paths:
        # block digests are checked on the raw block, payload digests after HTTP parsing
        with open(path, "rb") as fh:
            for rec in ArchiveIterator(fh, parse_http=False):
                seen[rec.headers["WARC-Type"]] += 1
                if rec.record_type in (WarcRecordType.response, WarcRecordType.request):
                    assert rec.verify_block_digest(consume=False)
                assert rec.content_length == int(rec.headers["Content-Length"])
        with open(path, "rb") as fh:
            for rec in ArchiveIterator(fh, parse_http=True, record_types=WarcRecordType.response):
                assert rec.record_id in ids
                assert rec.verify_payload_digest(consume=False)
    assert seen["response"] == seen["request"] == seen["metadata"] == PAGES
    assert seen["warcinfo"] == 2


def test_manifest_fields_and_fates(manifest):
    keys = {"url", "warc_file", "record_id", "offset", "language", "category", "fate", "stage", "reason",
            "dup_cluster", "pii", "status", "content_type", "charset"}
    for m in manifest:
        assert set(m) == keys
        assert m["fate"] in ("kept", "dropped", "any")
        assert (m["stage"] is None) == (m["fate"] != "dropped")
    assert len({m["record_id"] for m in manifest}) == len(manifest)
    kept_good = sum(m["category"] == "good" for m in manifest)
    assert 0.4 <= kept_good / len(manifest) <= 0.65


def test_proportions_as_planned(crawl, manifest):
    counts = Counter(m["category"] for m in manifest)
    assert dict(counts) == {k: v for k, v in plan_counts(PAGES).items() if v}
    assert crawl.counts == plan_counts(PAGES)
    big = plan_counts(1000)
    assert sum(big.values()) == 1000 and 0.5 <= big["good"] / 1000 <= 0.6
    assert big["low_quality"] >= 2 * len(ALL_RULES)  # a few pages per rule at 1,000 pages


def test_planted_reasons_use_agreed_names(manifest):
    stages = {"warc_reader": {"non_html", "http_status", "no_http_headers"}, "url_filter": {"domain", "subdomain", "url",
              "hard_blacklisted", "soft_blacklisted", "blacklisted_subword"}, "language": {"wrong_language"},
              "minhash": {"duplicate"}}
    for stage, reason in ALL_RULES:
        stages.setdefault(stage, set()).add(reason)
    for m in manifest:
        if m["fate"] == "dropped":
            assert m["reason"] in stages[m["stage"]], m


def test_languages_present_and_decodable(crawl, manifest):
    from warcio.archiveiterator import ArchiveIterator

    langs = {m["language"] for m in manifest if m["language"]}
    assert {"en", "fr", "de", "es", "ru", "zh", "ja"} <= langs
    charsets = {m["charset"] for m in manifest if m["category"] == "charset"}
    assert charsets == {"windows-1252", "shift_jis", "gb2312"}
    for m in manifest:
        if m["category"] != "charset":
            continue
        with open(crawl.out_dir / m["warc_file"], "rb") as fh:
            fh.seek(m["offset"])
            rec = next(iter(ArchiveIterator(fh)))
            body = rec.content_stream().read()
        text = body.decode(m["charset"])  # really encoded in the declared charset
        if m["charset"] != "windows-1252":
            with pytest.raises(UnicodeDecodeError):
                body.decode("utf-8")
            assert any("\u3040" <= c <= "\u9fff" for c in text)


def test_pii_values_are_in_the_page_and_valid(crawl, manifest):
    from warcio.archiveiterator import ArchiveIterator

    planted = [m for m in manifest if m["pii"]]
    assert planted
    types = Counter()
    for m in planted:
        with open(crawl.out_dir / m["warc_file"], "rb") as fh:
            fh.seek(m["offset"])
            html = next(iter(ArchiveIterator(fh))).content_stream().read().decode("utf-8")
        for item in m["pii"]:
            types[item["type"]] += 1
            assert item["value"] in html
            if item["type"] == "CREDIT_CARD":
                assert luhn_ok(item["value"])
            if item["type"] == "IBAN_CODE":
                assert iban_ok(item["value"])
            if item["type"] == "IP_ADDRESS":
                assert isinstance(item["public"], bool)
    assert {"EMAIL_ADDRESS", "PHONE_NUMBER", "PERSON"} <= set(types)


def test_card_and_iban_generators_are_checksum_valid():
    import random

    from pipelines.samplecrawl.pii import credit_card, iban

    rng = random.Random(0)
    for _ in range(200):
        assert luhn_ok(credit_card(rng)) and iban_ok(iban(rng))
    assert not luhn_ok("4111 1111 1111 1112") and not iban_ok("DE89 3704 0044 0532 0130 01")


def _warc_dates(crawl: CrawlInfo) -> dict[str, str]:
    from warcio.archiveiterator import ArchiveIterator
    dates = {}
    for path in crawl.warc_paths:
        with open(path, "rb") as fh:
            for rec in ArchiveIterator(fh):
                dates[rec.rec_headers.get_header("WARC-Record-ID")] = rec.rec_headers.get_header("WARC-Date")
    return dates


def test_duplicate_clusters_keep_the_earliest_capture(crawl, manifest):
    """The manifest plants MinHash's survivor rule (pipelines.minhash.survivor_key): the member
    with the earliest WARC-Date is kept, the cluster is named after it."""
    dates = _warc_dates(crawl)
    clusters: dict[str, list[dict]] = {}
    for m in manifest:
        if m["dup_cluster"]:
            clusters.setdefault(m["dup_cluster"], []).append(m)
    assert {len(v) for v in clusters.values()} <= {2, 3} and clusters
    assert len({dates[m["record_id"]] for m in manifest}) == len(manifest)  # no ties to break
    for cid, members in clusters.items():
        kept = [m for m in members if m["fate"] == "kept"]
        first = min(members, key=lambda m: dates[m["record_id"]])
        assert len(kept) == 1 and kept[0]["record_id"] == cid == first["record_id"]
        assert all(m["reason"] == "duplicate" for m in members if m["fate"] == "dropped")


def test_same_seed_same_bytes_different_seed_differs(crawl, tmp_path):
    again = generate_crawl(tmp_path / "a", pages=PAGES, seed=7, files=2)
    assert _files(again) == _files(crawl)
    other = generate_crawl(tmp_path / "b", pages=PAGES, seed=8, files=2)
    a, b = _files(crawl), _files(other)
    assert a.keys() != b.keys() or any(a[k] != b[k] for k in a)
    assert a["manifest.jsonl"] != b["manifest.jsonl"]


def test_cli_writes_a_crawl(tmp_path, capsys):
    from pipelines.cli import main

    assert main(["sample-crawl", "--out", str(tmp_path), "--pages", "30", "--seed", "1", "--files", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["captures"] == 30
    assert len(Path(tmp_path, "manifest.jsonl").read_text().splitlines()) == 30
    assert main(["sample-crawl", "--out", str(tmp_path / "q"), "--pages", "30", "--seed", "1", "--quirks"]) == 0
    lines = [json.loads(x) for x in Path(tmp_path, "q", "manifest.jsonl").read_text().splitlines()]
    assert any("warc_0_18_lf" in m["quirks"] for m in lines) and any("no_http_headers" in m["quirks"] for m in lines)


def test_pages_weigh_what_real_pages_weigh(crawl, tmp_path, capsys):
    """HTML pages as heavy as real ones (boilerplate.py: median ~42 KB, mean ~54 KB; realweb's
    Common-Crawl-like pages: median 62 KB; Common Crawl: ~50 KB on average), mostly chrome: the
    light pages of old (~4 KB, small_pages=True) have the same texts, URLs and planted fates."""
    sizes = crawl.page_bytes
    assert 25_000 <= sizes["median"] <= 80_000 and 30_000 <= sizes["mean"] <= 100_000, sizes
    # the lightest may be a malformed page, cut to half of one
    assert 5_000 <= sizes["min"] and sizes["max"] <= 1_000_000 and sizes["p90"] > 1.5 * sizes["median"], sizes
    light = generate_crawl(tmp_path / "light", pages=PAGES, seed=7, files=2, small_pages=True)
    assert light.page_bytes["median"] < 8_000, light.page_bytes

    def facts(info):
        return [{k: v for k, v in json.loads(line).items() if k != "offset"}
                for line in info.manifest_path.read_text(encoding="utf-8").splitlines()]
    assert facts(light) == facts(crawl)

    from pipelines.cli import main
    assert main(["sample-crawl", "--out", str(tmp_path / "cli"), "--pages", "20", "--seed", "1"]) == 0
    printed = json.loads(capsys.readouterr().out)["page_bytes"]
    assert set(printed) == {"pages", "min", "median", "mean", "p90", "max"} and printed["median"] > 12_000


def test_planted_fates_hold_through_the_real_stages(crawl, manifest):
    """Ground truth check: each capture through the real stages stops where the manifest says.

    Runs the project's own URL filter, trafilatura (the recipe's settings), LID and the quality
    filters in pipeline order on every capture of the 80-page crawl (a few seconds).
    """
    import trafilatura
    from warcio.archiveiterator import ArchiveIterator

    from pipelines.config import load_config
    from pipelines.document import Document
    from pipelines.lid import LanguageFilter
    from pipelines.quality import build_quality_stages
    from pipelines.url_filter import URLFilter

    cfg = load_config()
    url_filter, lid = URLFilter(**cfg["url_filter"]), LanguageFilter(**cfg["language"])
    quality = build_quality_stages(cfg)
    wrong = []
    for m in manifest:
        if m["fate"] == "any":
            continue
        with open(crawl.out_dir / m["warc_file"], "rb") as fh:  # a real page is more than one read buffer
            fh.seek(m["offset"])
            rec = next(iter(ArchiveIterator(fh)))
            ctype = rec.http_headers.get_header("Content-Type") or ""
            body = rec.content_stream().read()
        got = None
        if rec.http_headers.get_statuscode() != "200":
            got = ("warc_reader", "http_status")
        elif not ctype.startswith("text/html"):
            got = ("warc_reader", "non_html")
        else:
            doc = Document(body.decode(m["charset"]), m["record_id"], {"url": m["url"]})
            verdict = url_filter.filter(doc)
            if verdict is not True:
                got = ("url_filter", verdict[1])
            else:
                doc.text = trafilatura.extract(doc.text, favor_precision=True, include_comments=False,
                                               deduplicate=True) or ""
                for stage in [lid] + quality:
                    if hasattr(stage, "clean"):
                        doc.text, _ = stage.clean(doc.text)
                        continue
                    verdict = stage.filter(doc)
                    if verdict is not True:
                        got = (stage.name, verdict[1])
                        break
                if got is None:  # what reaches dedup and PII still carries the planted values
                    assert all(p["value"] in doc.text for p in m["pii"])
        expected = (m["stage"], m["reason"]) if m["fate"] == "dropped" and m["stage"] != "minhash" else None
        if got != expected:
            wrong.append((m["category"], expected, got, m["url"]))
    assert not wrong


# ---- reader quirks (generate_crawl(quirks=True)) --------------------------------------------------

@pytest.fixture(scope="module")
def quirky(tmp_path_factory) -> CrawlInfo:
    return generate_crawl(tmp_path_factory.mktemp("quirky"), pages=PAGES, seed=7, files=2, quirks=True)


def test_quirks_are_off_by_default_and_change_only_what_they_plant(crawl, manifest, quirky):
    from pipelines.samplecrawl.crawl import QUIRKS
    lines = [json.loads(line) for line in quirky.manifest_path.read_text(encoding="utf-8").splitlines()]
    assert not any("quirks" in m for m in manifest)
    planted = Counter(q for m in lines for q in m["quirks"])
    assert set(planted) == set(QUIRKS)
    # the ClueWeb-style file is the last one, every record in it
    old = str(quirky.warc_paths[-1].relative_to(quirky.out_dir))
    assert all(("warc_0_18_lf" in m["quirks"]) == (m["warc_file"] == old) for m in lines)
    assert quirky.warc_paths[-1].read_bytes() != crawl.warc_paths[-1].read_bytes()
    assert gzip.decompress(quirky.warc_paths[-1].read_bytes()).startswith(b"WARC/0.18\nWARC-Type: warcinfo\n")
    # same captures and fates, but for non-HTML bodies stored without headers
    for a, b in zip(manifest, lines):
        assert (a["url"], a["category"]) == (b["url"], b["category"])
        if b["reason"] == "no_http_headers":
            assert (a["reason"], b["category"], b["quirks"][0]) == ("non_html", "non_html", "no_http_headers")
        else:
            assert (a["fate"], a["reason"]) == (b["fate"], b["reason"])
    again = generate_crawl(quirky.out_dir.parent / "again", pages=PAGES, seed=7, files=2, quirks=True)
    assert _files(again) == _files(quirky)


def test_reader_recovers_every_planted_quirk(quirky):
    """Every record lands in docs_in or a named reason, per file, and each quirk is counted (the
    old reader lost every record of the ClueWeb-style file as `invalid_record`, and the chunked
    one)."""
    from warcio.archiveiterator import ArchiveIterator

    from pipelines.runner import run_stages
    from pipelines.warc_reader import WarcReader
    lines = [json.loads(line) for line in quirky.manifest_path.read_text(encoding="utf-8").splitlines()]
    planted = Counter(q for m in lines for q in m["quirks"])
    for path in quirky.warc_paths:
        rel = str(path.relative_to(quirky.out_dir))
        mine = {m["record_id"]: m for m in lines if m["warc_file"] == rel}
        removed = {}
        docs, stats = run_stages(iter(()), [WarcReader([path])],
                                 sink=lambda d, s, r: removed.__setitem__(d.id, r))
        docs = {d.id: d for d in docs}
        s = stats["warc_reader"]
        assert s.counters["records"] == 1 + 3 * len(mine)  # warcinfo + request, response, metadata
        assert s.docs_in == len(mine) == len(docs) + len(removed)
        assert s.counters["records"] == s.docs_in + s.counters["other_records"]
        assert removed == {i: m["reason"] for i, m in mine.items() if m["stage"] == "warc_reader"}
        counted = {k: n for k, n in s.counters.items() if k not in ("records", "other_records")}
        expected = Counter(q for m in mine.values() for q in m["quirks"] if q != "warc_0_18_lf")
        expected["dechunk_fallback"] = expected.pop("chunked_dechunked", 0)
        if any("warc_0_18_lf" in m["quirks"] for m in mine.values()):
            expected["lenient_warc_parsing"] = 1
        assert counted == {k: n for k, n in expected.items() if n}
        # the kept pages are the payloads warcio reads (de-chunked as warcio does), decoded; for a
        # block without headers warcio takes the page's first lines for headers: there the block is
        # the payload, as fastwarc reads it without HTTP parsing
        from fastwarc.warc import ArchiveIterator as Blocks
        with open(path, "rb") as fh:
            blocks = {r.record_id: r.reader.read() for r in Blocks(fh, parse_http=False, quirks_mode=True)
                      if r.record_id in docs}
        with open(path, "rb") as fh:
            for rec in ArchiveIterator(fh):
                rid = rec.rec_headers.get_header("WARC-Record-ID")
                if rid in docs:
                    payload = blocks[rid] if "no_http_headers" in mine[rid]["quirks"] else rec.content_stream().read()
                    assert docs[rid].text.encode(mine[rid]["charset"]) == payload, mine[rid]["url"]
    assert planted["chunked_dechunked"] >= 1 and planted["no_http_headers"] >= 2
