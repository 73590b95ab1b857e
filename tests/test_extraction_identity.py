"""Our trafilatura extractor (pipelines/trafilatura_fast.py: Python selectors for trafilatura's costliest
XPath expressions, element classes chosen in C) must give byte-identical text to FineWeb's plain
`trafilatura.extract` call. The full check over all 1,310 realweb pages is bench/extraction_identity.py."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import trafilatura
from lxml import html as lxml_html
from trafilatura import deduplication, xpaths

from pipelines import trafilatura_fast
from pipelines.extraction import trafilatura_extractor

REALWEB = Path(__file__).resolve().parents[2] / "shared" / "realweb"
FINEWEB_CALL = dict(favor_precision=True, include_comments=False, deduplicate=True, fast=False)
# Corners of XPath semantics the selectors must reproduce: `@id|@class` is the attribute written first,
# `.//*[p][1]` the first matching child per parent, an absent attribute tests '', `not(.//h1)`, ol/ul.
EDGE_CASES = """<html><head><title>t</title></head><body>
<div class="x" id="cookie-bar">a</div><div id="x" class="cookie">b</div><div class="cookie" id="x">c</div>
<section class="reply-1" id="r">d</section><p id="reply-2" class="q">e</p><span id="hidden-1" style="color:red">f</span>
<span style="x" id="hidden-2">g</span><div aria-hidden="true">h</div><div style="display: none">i</div>
<main><div class="post">one</div><div class="post">two</div><section><article class="entry">three</article></section></main>
<div class="infinite-scroll"><h1>kept</h1></div><div class="infinite-scroll">gone</div><div id="mvp-post-add-box"><h1>x</h1></div>
<ul class="comments">l</ul><ul class="article-comments">m</ul><ol id="comol">n</ol><div id="Commentary">o</div>
<div class="bottom-bar">p</div><div class="Padding-bottom-lg">q</div><p class="link">r</p><div style="border:1px">s</div>
<div role="Navigation">t</div><div data-component="MostPopularStories">u</div><div data-lp-replacement-content="">v</div>
<div class="comments-title">w</div><div class="ad-slot">x</div><div class=" ad ">y</div><div class="">z</div>
</body></html>"""


def _slice(every: int = 40) -> list[str]:
    files = sorted((REALWEB / "html").glob("*.jsonl.gz"))
    if not files:
        pytest.skip(f"no realweb pages under {REALWEB} (see ../shared/realweb/README.md)")
    pages = []
    for path in files:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            pages.extend(json.loads(line)["html"] for line in fh)
    return pages[::every]


def _texts(extract, pages: list[str]) -> list:
    deduplication.LRU_TEST.clear()  # each pass starts from an empty `deduplicate` memory
    try:
        return [extract(page) for page in pages]
    finally:
        deduplication.LRU_TEST.clear()


def _fineweb(page: str):
    return trafilatura.extract(page, **FINEWEB_CALL)


def test_pins_hold_for_the_installed_trafilatura():
    # A trafilatura upgrade that changes a pinned expression only loses that selector's speed-up;
    # this says so, so that the selectors are re-checked (bench/extraction_identity.py) and re-pinned.
    assert trafilatura_fast.BROKEN_PINS == []
    assert trafilatura_fast._PARSER is not None
    assert len(trafilatura_fast._SWAPS) == len(trafilatura_fast._SELECTORS)


@pytest.mark.parametrize("swap", range(len(trafilatura_fast._SELECTORS)))
def test_each_selector_selects_what_its_xpath_selects(swap):
    selectors, index, original, fast = trafilatura_fast._SWAPS[swap]
    pages = [EDGE_CASES] + (_slice(every=97) if (REALWEB / "html").is_dir() else [])
    for page in pages:
        tree = lxml_html.fromstring(page)
        expected = original(tree)
        assert fast(tree) == expected
    assert selectors[index] is original  # trafilatura's list is untouched outside the block


def test_edge_cases_page_is_extracted_identically():
    assert _texts(trafilatura_extractor(), [EDGE_CASES]) == _texts(_fineweb, [EDGE_CASES])


def test_realweb_slice_is_byte_identical():
    pages = _slice()
    new = _texts(trafilatura_extractor(), pages)
    old = _texts(_fineweb, pages)
    assert sum(t is not None for t in old) > len(pages) // 2  # real text was extracted, not all None
    assert [i for i, (a, b) in enumerate(zip(old, new)) if a != b] == []
    # the block restores trafilatura's own state: the original XPath objects, lxml.html's element classes
    assert all(lst[i] is orig for lst, i, orig, _ in trafilatura_fast._SWAPS)
    tree = lxml_html.fromstring("<html><body><form><input name='q'></form></body></html>",
                                parser=trafilatura_fast._PARSER)
    assert type(tree.find(".//form")) is lxml_html.FormElement


def test_the_comparison_would_catch_a_changed_text(monkeypatch):
    # A selector that selects nothing (no boilerplate pruned) must change some page's text on the
    # slice: the byte-identity test above exercises the selectors, it does not pass vacuously.
    selectors, index, original, _ = trafilatura_fast._SWAPS[0]
    monkeypatch.setattr(trafilatura_fast, "_SWAPS", [(selectors, index, original, lambda tree: [])])
    pages = _slice()
    assert _texts(trafilatura_extractor(), pages) != _texts(_fineweb, pages)
