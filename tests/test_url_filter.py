"""URL filter: every drop reason, its order, the shipped README examples, a UT1 folder, offline."""
from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from pipelines.config import load_config
from pipelines.document import Document
from pipelines.errors import ConfigError
from pipelines.runner import run_stages
from pipelines.url_filter import (DEFAULT_BLOCKLIST_DIR, URLFilter, canonical_url, normalize_url, squash,
                                  url_host, url_tokens)


@pytest.fixture(scope="module")
def default_filter():
    return URLFilter(**load_config()["url_filter"])


def readme_examples():
    text = (DEFAULT_BLOCKLIST_DIR / "README.md").read_text()
    rows = re.findall(r"^\| ([^|]+?) \| `([^`]+)` \|$", text, flags=re.M)
    reasons = {"domain", "subdomain", "url", "hard_blacklisted", "soft_blacklisted", "blacklisted_subword"}
    return [(url, label if label in reasons else None) for label, url in rows]


def test_readme_examples_trip_exactly_their_reason(default_filter):
    examples = readme_examples()
    # every reason has an example, and some kept URLs are documented too
    assert {r for _, r in examples} == {None, "domain", "subdomain", "url", "hard_blacklisted",
                                        "soft_blacklisted", "blacklisted_subword"}
    for url, reason in examples:
        assert default_filter.check(url) == reason, url


@pytest.mark.parametrize("url, reason", [
    ("https://www.xvideos.com/", "domain"),
    ("https://WWW.XVIDEOS.COM/video123", "domain"),             # hosts are case-insensitive
    ("https://xvideos.com:8443/x", "domain"),                     # port ignored
    ("https://user:pw@xvideos.com./x", "domain"),                 # userinfo and trailing dot ignored
    ("https://www.nsfw.imgshare-example.net/a", "subdomain"),     # www. in front of a listed host
    ("https://other.imgshare-example.net/a", None),               # only the listed host is blocked
    ("HTTP://Forum-Example.org/threads/after-dark-lounge#top", "url"),
    ("https://forum-example.org/threads/after-dark-lounge?page=2", None),  # query makes another URL
    ("https://example.com/Gallery/HENTAI/", "hard_blacklisted"),  # tokens are lowercased
    ("https://example.com/hentaiworld", None),                    # not a token, and not a subword
    ("https://example.com/a?q=nude&sort=xxx", "soft_blacklisted"),
    ("https://example.com/sexy/sexy/sexy", None),                 # one soft word thrice is one word
    ("https://example.com/x/X-N-X-X/", "blacklisted_subword"),    # squashed before searching
    ("https://www.middlesex-example.edu/essex/sussex", None),
    ("https://192.168.1.20/index.html", None),                    # IP hosts have no registered domain
])
def test_reasons(default_filter, url, reason):
    assert default_filter.check(url) == reason


def test_reason_order_first_match_wins(default_filter):
    # on a blocked domain AND full of banned words: the domain is the recorded reason
    assert default_filter.check("https://pornhub.com/hentai/nude/sexy/xnxx") == "domain"
    # hard before soft before subword
    assert default_filter.check("https://a-example.com/hentai/nude/sexy/xnxx") == "hard_blacklisted"
    assert default_filter.check("https://a-example.com/nude/sexy/xnxx") == "soft_blacklisted"


def test_soft_banned_min_is_configurable():
    strict = URLFilter(soft_banned_min=1)
    assert strict.check("https://www.artmuseum-example.org/collections/nude-studies") == "soft_blacklisted"
    lax = URLFilter(soft_banned_min=3)
    assert lax.check("https://www.photoblog-example.com/nude/beach-sexy-pics") is None


def test_helpers():
    assert normalize_url("https://WWW.Example.com/a/b/?q=1#frag") == "example.com/a/b/?q=1"
    assert normalize_url("http://example.com/") == "example.com"
    assert normalize_url("//example.com/x/") == "example.com/x"
    assert url_host("https://u@Sub.Example.com:80/x?y") == "sub.example.com"
    assert url_host("http://[::1]:8080/x") == "[::1]"
    assert url_tokens("https://a.com/B_c-d?e=F") == {"https", "a", "com", "b", "c", "d", "e", "f"}
    assert squash("https://X-n.com/") == "httpsxncom"


def test_canonical_url_and_bracketed_uris(default_filter):
    """wget's `<...>` WARC-Target-URIs, spaces around them, scheme/host case: one URL, checked as such
    (userinfo, path, query and fragment are case-sensitive and kept as they are)."""
    assert canonical_url(" <HTTPS://Me:PW@WWW.Example.COM:8080/A/b?Q=1#F> ") == "https://Me:PW@www.example.com:8080/A/b?Q=1#F"
    assert canonical_url("\t< http://a.example/ >\r\n") == "http://a.example/"
    assert canonical_url("dns:Example.COM") == "dns:Example.COM" and canonical_url(None) is None
    assert default_filter.check("<https://www.onlyfans.com/someone>") == "domain"  # was kept
    assert default_filter.check("<https://www.xvideos.com/video123>") == "domain"  # was blacklisted_subword
    assert default_filter.check(" <HTTP://Forum-Example.org/threads/after-dark-lounge> ") == "url"


def test_ut1_folder_every_category_and_its_own_words(tmp_path):
    for cat, domains, urls in [("adult", ["bad-example.com"], ["ok-example.com/bad/page"]),
                               ("gambling", ["casino-example.net", "sub.bet-example.org"], [])]:
        (tmp_path / cat).mkdir()
        (tmp_path / cat / "domains").write_text("# comment\n\n" + "\n".join(domains) + "\n")
        (tmp_path / cat / "urls").write_text("\n".join(urls) + "\n")
    f = URLFilter(blocklist_dir=tmp_path)
    assert f.check("https://www.bad-example.com/") == "domain"
    assert f.check("https://play.casino-example.net/") == "domain"
    assert f.check("https://sub.bet-example.org/x") == "subdomain"
    assert f.check("https://bet-example.org/x") is None
    assert f.check("http://ok-example.com/bad/page/") == "url"
    # the shipped default domains are NOT added when a folder is configured...
    assert f.check("https://pornhub.com/") != "domain"
    # ...but the shipped word lists are, because the folder has no words/ of its own
    assert f.check("https://x-example.com/hentai") == "hard_blacklisted"
    # categories restricts the folders read (a full UT1 copy also has "news", "sports", ...)
    only_adult = URLFilter(blocklist_dir=tmp_path, categories=["adult"])
    assert only_adult.check("https://play.casino-example.net/") is None
    assert only_adult.check("https://www.bad-example.com/") == "domain"
    with pytest.raises(ConfigError, match="url_filter.categories: nope not a folder"):
        URLFilter(blocklist_dir=tmp_path, categories=["nope"])
    with pytest.raises(ConfigError, match="url_filter.blocklist_dir: .*missing is not a folder"):
        URLFilter(blocklist_dir=tmp_path / "missing")
    # a words/ folder in the configured dir replaces the shipped words
    (tmp_path / "words").mkdir()
    (tmp_path / "words" / "hard_banned.txt").write_text("Kitten\n")
    (tmp_path / "words" / "banned_subwords.txt").write_text("zzq\n")
    g = URLFilter(blocklist_dir=tmp_path)
    assert g.check("https://x-example.com/kitten/1") == "hard_blacklisted"
    assert g.check("https://x-example.com/hentai") is None
    assert g.check("https://x-example.com/abZZQcd") == "blacklisted_subword"
    assert g.check("https://x-example.com/nude/sexy") is None  # no soft list there


@pytest.mark.parametrize("force_regex", [False, True])
def test_subword_matcher_backends_agree(monkeypatch, force_regex):
    import sys
    from pipelines.url_filter import _SubwordMatcher
    if force_regex:  # as on a machine without pyahocorasick
        monkeypatch.setitem(sys.modules, "ahocorasick", None)
    m = _SubwordMatcher(["ab", "abcd", "q.x"])
    assert m.backend == "regex" if force_regex else m.backend in ("regex", "pyahocorasick")
    for s in ["xaby", "zzabcdzz", "a", "", "q.x", "qx"]:
        found = m.search(s)
        assert (found is not None) == any(w in s for w in ["ab", "abcd", "q.x"]), s
        assert found is None or found in s
    assert _SubwordMatcher([]).search("anything") is None


def test_no_network_is_touched(monkeypatch):
    """tldextract must run on its bundled suffix snapshot (environment.md pitfall)."""
    def refuse(*a, **kw):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    from pipelines import url_filter
    url_filter._tld_extractor.cache_clear()
    f = URLFilter()
    assert f.check("https://shop.example.co.uk/") is None
    assert f._registered("shop.example.co.uk") == "example.co.uk"


def test_as_a_stage_counts_drops_per_reason(default_filter):
    docs = [Document("t", str(i), {"url": url}) for i, (url, _) in enumerate(readme_examples())]
    docs.append(Document("no url", "x", {}))
    removed = []
    out, stats = run_stages(iter(docs), [default_filter], sink=lambda d, s, r: removed.append((d.id, s, r)))
    kept = list(out)
    s = stats["url_filter"]
    expected = [r for _, r in readme_examples()]
    assert len(kept) == expected.count(None) + 1
    assert s.docs_in == len(docs) and s.docs_out == len(kept)
    assert dict(s.dropped) == {r: expected.count(r) for r in set(expected) - {None}}
    assert all(stage == "url_filter" for _, stage, _ in removed)
    cfg = default_filter.config()
    assert cfg["soft_banned_min"] == 2 and cfg["n_domains"] > 0 and Path(cfg["blocklist_dir"]).is_dir()


def test_sample_crawl_url_filter_ground_truth(tmp_path, default_filter):
    """The generated crawl plants URLs for this filter (from blocklists/README.md): each is
    dropped with the manifest's reason, and nothing else the reader keeps is dropped here."""
    samplecrawl = pytest.importorskip("pipelines.samplecrawl")
    if not hasattr(samplecrawl, "generate_crawl"):
        pytest.skip("generate_crawl not written yet")
    import json
    from pipelines.warc_reader import iter_warc_documents
    info = samplecrawl.generate_crawl(tmp_path, pages=60, seed=5, files=1)
    manifest = [json.loads(line) for line in info.manifest_path.read_text().splitlines() if line.strip()]
    expected = {m["url"]: m["reason"] for m in manifest if m.get("stage") == "url_filter"}
    got = {d.metadata["url"]: default_filter.check(d.metadata["url"]) for d in iter_warc_documents(info.warc_paths)}
    assert expected and {u: r for u, r in got.items() if r is not None} == expected
