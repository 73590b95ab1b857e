"""trafilatura.extract with byte-identical output and less CPU (used by pipelines.extraction).

Profile (cProfile, 219 realweb pages, FineWeb's options, trafilatura 2.3.1): ~52% of trafilatura's
CPU time was inside eight XPath expressions of trafilatura.xpaths (prune_unwanted_nodes and the body
search; OVERALL_DISCARD_XPATH alone ~30%, run twice a page). The cost is EXSLT `re:test(...)`:
libxml2 calls back into Python per attribute test, and lxml first turns each attribute node-set into
Python objects. Next came lxml.html's element class lookup, a Python call for every element proxy
(~0.8 M calls per 200 pages). Parsing, tree copies, readability and the rest are left as they are.

`fast_trafilatura()`, for the duration of one call, (1) swaps seven of those XPath objects in
trafilatura's own lists for Python selectors that return the same elements in the same (document)
order: lxml's C tag filter, then `str` tests and memoized `re.search` on attribute values; (2) makes
trafilatura's parser (utils.HTML_PARSER) pick element classes in C. Both are put back after the call,
so trafilatura elsewhere in the process is untouched. Measured on all 1,310 realweb pages
(bench/extraction_identity.py): 1,310 texts identical, 57.4 -> 32.9 CPU-s (1.75x).

What this relies on (trafilatura internals, pinned): `trafilatura.xpaths` and the list names and
indices in `_SELECTORS`, the exact source text of each expression (SHA-1 of `XPath.path`), and
`trafilatura.utils.HTML_PARSER` being an lxml.html.HTMLParser. A selector whose pin does not hold is
not swapped (trafilatura's own XPath runs), so an upgrade costs speed, not correctness;
tests/test_extraction_identity.py fails when a pin breaks.

XPath semantics kept here (checked call by call against the XPath on all 1,310 pages, and in the test):
- `re:test(@a, 'p')` is `re.search(p, value)`, on '' when the attribute is absent (lxml's EXSLT
  regexp: node-set -> string of its first node, re.compile(p, re.UNICODE));
- `@a|@b` as a string is the attribute written first in the source, not `@a` first;
- `.//*` is every descendant element (not comments); `self::x` compares the tag exactly;
- `.//*[p][1]` is, per parent, the first child element matching p (the [1] applies per step).
"""
from __future__ import annotations

import hashlib
import re
from contextlib import contextmanager

from lxml.etree import Element

_RE_TEST = re.compile(r"re:test\((@[\w-]+(?:\|@[\w-]+)?), '([^']*)'(?:, '(i)')?\)")


def _regexes(path: str) -> list:
    """The `re:test` patterns of an XPath, in source order, compiled the way lxml's EXSLT does."""
    return [re.compile(p, re.IGNORECASE if flag else 0) for _, p, flag in _RE_TEST.findall(path)]


def _memo_test(pattern: re.Pattern):
    """re:test on an attribute value (None: absent, tested as ''), memoized: a page repeats the
    same few hundred class names thousands of times, and one search of the 60-way class
    alternation costs ~1.5 us against ~0.05 us for a dict hit."""
    empty = pattern.search("") is not None
    cache: dict = {None: empty}

    def test(value) -> bool:
        hit = cache.get(value)
        if hit is None:
            if len(cache) > 200_000:  # bound the memory of a long-running worker
                cache.clear()
                cache[None] = empty
            hit = cache[value] = pattern.search(value) is not None
        return hit
    return test


def _first(el, value_a, value_b, name_a: str, name_b: str):
    """String value of `@a|@b`: the one of the two attributes that comes first in the source."""
    if value_a is None:
        return value_b
    if value_b is None:
        return value_a
    for name in el.keys():
        if name == name_a:
            return value_a
        if name == name_b:
            return value_b
    return None  # unreachable: both attributes exist


_BLOCKS = ("div", "item", "list", "p", "section", "span")


def _select(tags, keep):
    """A selector: the descendant elements with one of `tags` (lxml's C tag filter) for which
    keep(el) holds, in document order, as the XPath returns them."""
    def select(tree):
        return [el for el in tree.iterdescendants(tags) if keep(el)]
    return select


def _overall_discard_0(rx):
    cookie, by_id, by_class = rx

    def keep(el):
        get = el.get
        i, c = get("id"), get("class")
        return (by_class(c) or by_id(i) or get("data-lp-replacement-content") is not None
                or "nav" in (get("role") or "").replace("N", "n")
                or "MostPopularStories" in (get("data-component") or "")
                or cookie(_first(el, i, c, "id", "class")))
    return _select(_BLOCKS, keep)


def _overall_discard_1(rx):
    hidden, by_id, by_class = rx

    def keep(el):
        get = el.get
        i, c, s = get("id"), get("class"), get("style")
        return (by_class(c) or by_id(i) or c == "comments-title" or get("aria-hidden") == "true"
                or (s is not None and ("display:none" in s or "display: none" in s))
                or (_first(el, i, c, "id", "class") or "").startswith("reply-")
                or hidden(_first(el, i, s, "id", "style")))
    return _select(Element, keep)


def _comments(rx):
    by_id, by_class = rx
    return _select(("div", "list", "section", "details"), lambda el: by_id(el.get("id")) or by_class(el.get("class")))


def _comments_and_lists(rx):
    by_id, by_class, list_by_id, list_by_class = rx

    def keep(el):
        i, c = el.get("id"), el.get("class")
        return (by_id(i) or by_class(c)) and (el.tag not in ("ol", "ul") or list_by_id(i) or list_by_class(c))
    return _select(("div", "list", "section", "details", "ol", "ul"), keep)


def _infinite_scroll(rx):
    any_id, any_class, mvp_id, mvp_class = rx

    def keep(el):
        i, c = el.get("id"), el.get("class")
        return (any_id(i) or any_class(c)) and (
            next(el.iterdescendants("h1"), None) is None or mvp_id(i) or mvp_class(c))
    return _select(("div", "section", "aside"), keep)


def _precision_discard(rx):
    bottom, link = rx

    def keep(el):
        get = el.get
        first = _first(el, get("id"), get("class"), "id", "class")
        return bottom(first) or link(first) or "border" in (get("style") or "")
    return _select(_BLOCKS, keep)


def _body_first(rx):
    by_id, by_class = rx
    tags = ("article", "div", "main", "section")

    def matches(el) -> bool:
        get = el.get
        i, c = get("id"), get("class")
        return (c == "post" or c == "entry" or get("itemprop") == "articleBody" or i == "articleContent"
                or by_id(i) or by_class(c))

    # `.//*[p][1]`: a match counts only if no earlier sibling element matches too
    return _select(tags, lambda el: matches(el) and not any(
        s.tag in tags and matches(s) for s in el.itersiblings(preceding=True)))


# (list in trafilatura.xpaths, index, SHA-1 of the XPath's source text, Python selector factory)
_SELECTORS = (
    ("OVERALL_DISCARD_XPATH", 0, "d00545c1e3acd7dd0585191cc70e0104d49e5586", _overall_discard_0),
    ("OVERALL_DISCARD_XPATH", 1, "8c88600b03181df7a8d96c7c92ca3b0351f47e78", _overall_discard_1),
    ("REMOVE_COMMENTS_AND_LISTS_XPATH", 0, "7e7d885e629a511978658d1420f16b1a4ac09d85", _comments_and_lists),
    ("RAW_TREE_PRUNE_XPATH", 0, "c15751070b078a647446175f714fc52b5d51ca8c", _infinite_scroll),
    ("REMOVE_COMMENTS_XPATH", 0, "97b3a45900e751deb0c5446b7456a1274778d954", _comments),
    ("BODY_XPATH", 0, "2465b9ddf0fc1b9b11762bba0368942a191f062d", _body_first),
    ("PRECISION_DISCARD_XPATH", 1, "1333a88a43255a90e57fad382aa978fb9b88f8bd", _precision_discard),
)


def _path_sha1(xpath) -> str:
    return hashlib.sha1(xpath.path.encode("utf-8")).hexdigest()


def _resolve() -> tuple[list, list]:
    """([(list, index, original XPath, Python selector)] for every pin that holds, [names that do not])."""
    from trafilatura import xpaths
    swaps, broken = [], []
    for name, index, sha1, factory in _SELECTORS:
        selectors = getattr(xpaths, name, [])
        original = selectors[index] if index < len(selectors) else None
        if original is None or _path_sha1(original) != sha1:
            broken.append(f"{name}[{index}]")
            continue
        swaps.append((selectors, index, original, factory([_memo_test(p) for p in _regexes(original.path)])))
    return swaps, broken


def _html_parser():
    """trafilatura's module parser, if it still is an lxml.html.HTMLParser (whose element classes
    come from HtmlElementClassLookup, a Python callback run for every new element proxy)."""
    from lxml.html import HTMLParser
    from trafilatura import utils
    parser = getattr(utils, "HTML_PARSER", None)
    return parser if type(parser) is HTMLParser else None


_SWAPS, BROKEN_PINS = _resolve()
_PARSER = _html_parser()


@contextmanager
def fast_trafilatura():
    """Within the block, trafilatura evaluates the pinned expressions with the Python selectors, and
    the trees its parser makes pick their element classes in C: ElementDefaultClassLookup with
    HtmlElement, where lxml.html's lookup (a Python call per element proxy, ~0.8 M calls per 200
    pages) would give the same HtmlElement except Form/Input/Select/Textarea/LabelElement, whose
    extra form-field API trafilatura, readability and justext never use."""
    from lxml.etree import ElementDefaultClassLookup
    from lxml.html import HtmlComment, HtmlElement, HtmlElementClassLookup, HtmlEntity, HtmlProcessingInstruction
    for selectors, index, _, fast in _SWAPS:
        selectors[index] = fast
    if _PARSER is not None:
        _PARSER.set_element_class_lookup(ElementDefaultClassLookup(
            element=HtmlElement, comment=HtmlComment, pi=HtmlProcessingInstruction, entity=HtmlEntity))
    try:
        yield
    finally:
        for selectors, index, original, _ in _SWAPS:
            selectors[index] = original
        if _PARSER is not None:
            _PARSER.set_element_class_lookup(HtmlElementClassLookup())  # what lxml.html.HTMLParser() sets
