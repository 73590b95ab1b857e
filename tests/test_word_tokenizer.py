"""The word tokenizer, the punkt port and the array-based n-gram statistics of pipelines.quality
against their references: NLTK itself (a dev dependency, used only here) and the pure-Python n-gram
definitions of datatrove.

The reference for words is `nltk.word_tokenize(text)` - what FineWeb's filters call - with NLTK's
punkt loaded from the minimal `punkt_tab` files (an untrained English model; the pretrained data
cannot be downloaded), and `PunktSentenceTokenizer().span_tokenize` for sentences. Checked on real
text (CPython's help topics and module docstrings, pages of a generated crawl extracted by
trafilatura), on thousands of strings from a grammar of the pieces that move tokens (abbreviations,
initials, numbers, brackets, quotes, URLs, contractions, non-English punctuation, Unicode letters and
separators), and on hypothesis-generated strings of fragments and arbitrary characters. The only
documented difference is characters unassigned in Python's Unicode database next to an apostrophe
or after ":" / "," (see word_tokenizer), which the generated strings leave out.
"""
from __future__ import annotations

import importlib
import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.quality import punkt
from pipelines.quality import text_utils as tu
from pipelines.quality import word_tokenizer as wt

nltk = pytest.importorskip("nltk")
from nltk.tokenize import NLTKWordTokenizer, PunktSentenceTokenizer  # noqa: E402

_TREEBANK = NLTKWordTokenizer()
_PUNKT = PunktSentenceTokenizer()


@pytest.fixture(scope="module", autouse=True)
def nltk_punkt_tab(tmp_path_factory):
    """NLTK's word_tokenize needs punkt data: the untrained model's punkt_tab files, first on
    NLTK's search path for this module (then restored)."""
    root = str(punkt.write_untrained_punkt_tab(tmp_path_factory.mktemp("nltk_data")))
    nltk.data.path.insert(0, root)
    from nltk.tokenize import _get_punkt_tokenizer
    cache_clear = getattr(_get_punkt_tokenizer, "cache_clear", lambda: None)
    cache_clear()  # a model loaded from elsewhere before would be used otherwise
    yield root
    nltk.data.path.remove(root)
    cache_clear()


def reference_tokens(text: str) -> list[str]:
    return nltk.word_tokenize(text)


def ours(text: str) -> list[str]:
    return tu.word_tokenize(text)


def mismatches(texts) -> list:
    out = []
    for text in texts:
        mine, ref = ours(text), reference_tokens(text)
        if mine != ref:
            at = next((i for i, (a, b) in enumerate(zip(mine, ref)) if a != b), min(len(mine), len(ref)))
            out.append((text[:80], mine[max(0, at - 3):at + 3], ref[max(0, at - 3):at + 3]))
    return out


def assert_same_tokens(texts):
    bad = mismatches(texts)
    assert not bad, f"{len(bad)} of {len(texts)} texts differ, e.g. {bad[:3]}"


# ---------------------------------------------------------------- corpora

def _pydoc_paragraphs() -> list[str]:
    from pydoc_data.topics import topics
    paragraphs = [p for text in topics.values() for p in text.split("\n\n") if p.strip()]
    return paragraphs + list(topics.values())


_STDLIB_MODULES = ("abc", "argparse", "ast", "asyncio", "base64", "bisect", "calendar", "collections", "contextlib",
                   "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email", "enum", "fnmatch",
                   "fractions", "functools", "glob", "gzip", "hashlib", "heapq", "html", "http.client", "inspect",
                   "io", "itertools", "json", "logging", "math", "mimetypes", "operator", "os", "pathlib", "pickle",
                   "pprint", "queue", "random", "re", "shlex", "shutil", "socket", "sqlite3", "statistics", "string",
                   "struct", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "time", "timeit",
                   "tokenize", "typing", "unicodedata", "unittest", "urllib.parse", "uuid", "warnings", "weakref",
                   "xml.dom.minidom", "zipfile", "zlib")


def _module_docstrings() -> list[str]:
    """Docstrings of some standard-library modules and of their public classes and functions."""
    docs = []
    for name in _STDLIB_MODULES:
        module = importlib.import_module(name)
        docs.append(module.__doc__ or "")
        docs += [getattr(module, attr).__doc__ or "" for attr in sorted(vars(module)) if not attr.startswith("_")]
    return sorted({d for d in docs if isinstance(d, str) and d.strip()})


@pytest.fixture(scope="module")
def crawl_texts(tmp_path_factory) -> list[str]:
    from pipelines.extraction import trafilatura_extractor
    from pipelines.samplecrawl import generate_crawl
    from pipelines.warc_reader import iter_warc_documents

    info = generate_crawl(tmp_path_factory.mktemp("crawl"), pages=150, seed=1, files=1)
    extract = trafilatura_extractor()
    texts = [extract(doc.text) for doc in iter_warc_documents(info.warc_paths)]
    return [t for t in texts if t]


def test_known_sentence():
    text = ("Good muffins cost $3.88 (roughly 3,36 euros)\nin New York.  Please buy me\ntwo of them.\n"
            "Thanks. \"Hi,\" she said; I can't--won't. 'Tis gonna be ok... J. Smith's [1] «quote»")
    assert ours(text) == reference_tokens(text)
    assert ours(text)[:12] == ["Good", "muffins", "cost", "$", "3.88", "(", "roughly", "3,36",
                               "euros", ")", "in", "New"]


@pytest.mark.parametrize("text", [
    "He holds a (Ph.D.) in physics.", "A Ph.D. from MIT. The end.", "See (e.g.) this.", "x.) y",
    "Met J. 12:30 and J. Smith and j. doe.", "Item 1. 50% off. 1. then 2.", "U.S.A. is big. Wait.. no.",
    "Ends.\n\"Quoted.\" ''Two.'' (Paren.) [1]", "“Curly.” ‘single.’ «guillemets.» next.", "a.(b c. (d",
    "ftp://a.b/c. next", "Mr. Smith (Ph.D.) and Dr. No.", "¿Qué? ¡Sí! 終わり。 Next.", "x.\x1c y. z"])
def test_abbreviations_initials_and_brackets(text):
    # the cases that put a period inside or outside a token; "(Ph.D.)" once moved a page across
    # the Gopher alphabetic-word threshold
    assert ours(text) == reference_tokens(text)


def test_pydoc_topics_match_nltk():
    texts = _pydoc_paragraphs()
    assert len(texts) > 1000
    assert_same_tokens(texts)


def test_module_docstrings_match_nltk():
    texts = _module_docstrings()
    assert len(texts) > 1000
    assert_same_tokens(texts)


def test_crawl_pages_match_nltk(crawl_texts):
    assert len(crawl_texts) > 100
    assert_same_tokens(crawl_texts)
    assert_same_tokens(["\n".join(crawl_texts[i:i + 3]) for i in range(0, len(crawl_texts), 3)])


# ---------------------------------------------------------------- a grammar of what moves tokens

PIECES = {
    "word": ["the", "The", "dog", "a", "I", "physics", "naïve", "café", "Straße", "niño", "日本語", "Ελληνικά",
             "русский", "עברית", "العربية", "x", "Z", "ok", "OK", "İstanbul", "ſ"],
    "abbreviation": ["Ph.D.", "Ph.D", "U.S.", "U.S.A.", "e.g.", "i.e.", "Dr.", "Mr.", "Mrs.", "etc.", "a.m.", "p.m.",
                     "St.", "No.", "vs.", "Inc.", "Jr.", "J.", "A.B.", "x.", "approx.", "é."],
    "open": ["(", "[", "{", "<", "\"", "'", "``", "“", "‘", "«", "„", "¿", "¡", "「"],
    "close": [")", "]", "}", ">", "\"", "'", "''", "”", "’", "»", "」"],
    "url": ["http://example.com/a?b=c&d=1#x", "https://www.Example.org/path/to.html", "www.x.org", "user@example.com",
            "ftp://a.b/c.", "example.com/x.y", "http://a.b/(c)", "C:\\Users\\x"],
    "number": ["3.88", "1,000", "12:30", "50%", "$5", "3rd", "2024-01-05", "1.", "10.5.", "#3", "+1", "-2", "½", "²",
               "٣", "1.5e-3"],
    "contraction": ["can't", "won't", "I'm", "'tis", "gonna", "cannot", "they'll", "we're", "it's", "dogs'",
                    "o'clock", "rock'n'roll", "y'all", "'90s", "don’t", "WANNA", "d'ye", "more'n"],
    "punctuation": [".", "!", "?", "...", "…", ",", ";", ":", "--", "—", "–", "-", "*", "&", "@", "#", "·", "。", "、",
                    "؟", "،", "!?", "?!", ".\"", ".)", ".'", "'.", "\".", ").", "..", ". .", ".,"],
    "space": [" ", " ", " ", "  ", "\n", "\n\n", "\t", "\xa0", " \n", "\u2028", "\u3000", "\x1c"],
}
_KINDS = sorted(PIECES)


def grammar_text(rng: random.Random) -> str:
    out = []
    for _ in range(rng.randint(1, 30)):
        out.append(rng.choice(PIECES[rng.choice(_KINDS)]))
        if rng.random() < 0.6:
            out.append(rng.choice(PIECES["space"]))
    return "".join(out)


def test_grammar_sample_matches_nltk():
    texts = [grammar_text(random.Random(seed)) for seed in range(4000)]
    assert_same_tokens(texts)


_GRAMMAR = st.lists(st.one_of(*(st.sampled_from(v) for v in PIECES.values())), max_size=40).map("".join)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_GRAMMAR)
def test_generated_grammar_matches_nltk(text):
    assert ours(text) == reference_tokens(text)


# pieces that trigger each Treebank rule, in several cases, plus odd Unicode (combining marks, "²",
# separators \x1c-\x1f, the case-folding oddities "İ", "ı", "ſ", circled letters, ZWJ)
FRAGMENTS = ["the", "The", "dog", "a", "J", "U.S", "e.g", "3.88", "1,000", "12:30", " ", " ", "  ", "\n", "\t",
             "\xa0", ".", "..", "...", ",", ":", ";", "!", "?", "'", "''", '"', "`", "``", "-", "--", "---", "*",
             "(", ")", "[", "]", "{", "}", "<", ">", "@", "#", "$", "%", "&", "«", "»", "“", "”", "‘", "’", "„",
             "…", "\u2012", "–", "—", "\u2015", "n't", "N'T", "'s", "'S", "'m", "'d", "'ll", "'LL", "'re", "'ve",
             "'VE", "can", "not", "cannot", "CanNot", "gonna", "GONNA", "wanna", "gimme", "lemme", "gotta",
             "more'n", "d'ye", "'tis", "'Twas", "'t", "is", "é", "e\u0301", "\u0301", "²", "½", "\x1c", "\x1f",
             "\u2028", "İ", "ı", "ſ", "Ⓐ", "\u200d", "‿", "日本", "٣", "🙂"]
_CHARS = st.characters(blacklist_categories=("Cs", "Cn"))
_TEXT = st.lists(st.one_of(st.sampled_from(FRAGMENTS), _CHARS), max_size=40).map("".join)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TEXT)
def test_generated_strings_match_nltk(text):
    assert ours(text) == reference_tokens(text)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_TEXT, _GRAMMAR))
def test_treebank_rules_match_nltk_on_any_string(text):
    # the Treebank port alone, on strings that are not one sentence
    assert wt._nltk_word_tokenize(text) == _TREEBANK.tokenize(text)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_TEXT, _GRAMMAR))
def test_tokens_only_split_whitespace_tokens(text):
    # FineWebQualityFilter's list_ratio shortcut relies on len(text.split()) <= the NLTK token count
    assert len(tu.words_of(text)) >= len(text.split())
    assert len(reference_tokens(text)) >= len(text.split())


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_TEXT, _GRAMMAR))
def test_sentence_spans_match_punkt(text):
    assert punkt.sentence_spans(text) == list(_PUNKT.span_tokenize(text))
    assert tu.split_sentences(text) == [s.strip() for s in _PUNKT.tokenize(text) if s.strip()]


# ---------------------------------------------------------------- n-gram statistics

def reference_top_n_gram_chars(words, n):
    grams = [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0
    gram, count = Counter(grams).most_common(1)[0]
    return len(gram) * count


def reference_duplicated_n_gram_chars(words, n):
    seen, repeated, idx = set(), 0, 0
    while idx <= len(words) - n:
        gram = "".join(words[idx:idx + n])
        if gram in seen:
            repeated += len(gram)
            idx += n
        else:
            seen.add(gram)
            idx += 1
    return repeated


def assert_same_n_gram_stats(words):
    grams = tu.WordNGrams(words)
    ns = list(range(1, 12))
    top, dup, bound = grams.top_chars(ns), grams.duplicated_chars(ns), grams.duplicated_chars_bound(ns)
    top_bounds = [tu.WordNGrams(words).top_chars_bound(ns[i:]) for i in range(3)]  # each n0 = 1, 2, 3
    for n in ns:
        assert top[n] == reference_top_n_gram_chars(words, n), (n, words[:20])
        assert all(top[n] <= b[n] for b in top_bounds if n in b), (n, words[:20])
        assert dup[n] == reference_duplicated_n_gram_chars(words, n), (n, words[:20])
        assert dup[n] <= bound[n] and (bound[n] > 0 or not _any_repeat(words, n))
        assert dup[n] <= grams.duplicated_chars_covered(n)


def _any_repeat(words, n):
    grams = ["".join(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) < len(grams)


def test_n_gram_stats_on_crawl_pages(crawl_texts):
    for text in crawl_texts:
        assert_same_n_gram_stats(tu.words_of(text))


# few distinct "words" whose concatenations collide ("ab" + "c" == "a" + "bc"), so that n-grams
# repeat often, with and without the same word boundaries
_WORDS = st.lists(st.sampled_from(["a", "b", "ab", "c", "bc", "abc", "é", "🙂", "the", "."]), max_size=60)


@settings(max_examples=500, deadline=None)
@given(_WORDS)
def test_n_gram_stats_match_reference(words):
    assert_same_n_gram_stats(words)


def test_n_gram_stats_large_vocabulary():
    # more distinct words than fit 4-gram numbers in 64 bits: the renumbering path
    words = [f"w{i % 70_000}x{i // 70_000}" for i in range(150_000)] + ["x", "y", "z", "q"] * 3
    grams = tu.WordNGrams(words)
    assert grams.top_chars([2, 3, 4]) == {n: reference_top_n_gram_chars(words, n) for n in (2, 3, 4)}


# ---------------------------------------------------------------- C4 sentence count shortcut

@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["Mr", ".", "J.", " ", "word", "?", "!", '"', ")", "(", "...", "\t", "é"]),
                min_size=1, max_size=20).map("".join))
def test_every_non_blank_line_holds_a_sentence(line):
    # C4QualityFilter skips punkt when a page has min_num_sentences non-blank lines
    if line.strip():
        assert len(tu.split_sentences(line)) >= 1
