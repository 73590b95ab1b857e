"""Shared text helpers for the quality filters: NLTK-style words, sentences, n-gram statistics.

FineWeb's datatrove called `nltk.word_tokenize(text, language="english")`: it splits the text into
sentences with the *pretrained* English punkt model, then runs the Treebank-style
`NLTKWordTokenizer` on each sentence, so the period that ends a sentence becomes its own token.
Punkt's pretrained data cannot be downloaded here, and running the tokenizer sentence by sentence
is slow. So `word_tokenize` runs the `NLTKWordTokenizer` rules ONCE over the whole text after
splitting off every sentence-final period with one regex that mimics an untrained
`PunktSentenceTokenizer()` (a period after a word of 2+ characters, followed by whitespace or
closing quotes/brackets, ends a sentence; single-letter initials such as "J." do not). On mixed
English text this gives the same tokens as untrained punkt + per-sentence Treebank. The remaining
difference to FineWeb is abbreviations that the pretrained model knows ("Dr. Smith": we emit "Dr"
"." instead of "Dr."), a one-character shift between tokens that moves no threshold in practice.

The NLTKWordTokenizer rules are reimplemented below on the stdlib `re` engine (NLTK itself, which
imports scipy and runs every pattern on `regex` under a timeout, is ~10x slower and takes seconds to
import); tests/test_word_tokenizer.py holds NLTK as the reference.

`split_sentences` (C4's sentence count) uses the untrained punkt tokenizer itself.
"""
from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from functools import lru_cache

import numpy as np

# Characters that make a token a "symbol" when a token has nothing else (Gopher's non-symbol words).
# ASCII punctuation, every Unicode punctuation character (category P*), and the typographic
# symbols datatrove lists in its PUNCTUATION constant (bullets, arrows, full-width signs).
_EXTRA_SYMBOLS = set("━►％＄～«»„“”‘’´`•·…–—") | {chr(c) for c in range(0, 32)} | {chr(c) for c in range(127, 160)}


@lru_cache(maxsize=65536)
def _is_punct_char(ch: str) -> bool:
    return ch in string.punctuation or ch in _EXTRA_SYMBOLS or unicodedata.category(ch).startswith("P")


_ASCII_SYMBOLS = "".join(ch for ch in map(chr, range(128)) if _is_punct_char(ch))


def is_symbol_word(word: str) -> bool:
    """True when every character of `word` is punctuation (so it is not a 'word' for Gopher)."""
    if word.isascii():
        return not word.strip(_ASCII_SYMBOLS)
    return all(_is_punct_char(ch) for ch in word)


def has_letter(word: str) -> bool:
    """True when some character of `word` is alphabetic (str.isalpha)."""
    if word.isascii():
        return word.lower() != word.upper()  # only ASCII letters have case
    return any(ch.isalpha() for ch in word)


# Tokens already classified, shared by the documents of a process: web text reuses most of its
# vocabulary, so most tokens are classified once and a document costs a few set operations.
_KNOWN_TOKENS: set[str] = set()
_SYMBOL_TOKENS: set[str] = set()
_LETTER_TOKENS: set[str] = set()


def gopher_word_counts(words, counts: Counter) -> tuple[int, int, int]:
    """From the tokens and their counts: (non-symbol tokens, their total length, tokens with a letter)."""
    tokens = counts.keys()
    new = tokens - _KNOWN_TOKENS
    if new and len(_KNOWN_TOKENS) < 1_000_000:
        _SYMBOL_TOKENS.update(w for w in new if is_symbol_word(w))
        _LETTER_TOKENS.update(w for w in new if has_letter(w))
        _KNOWN_TOKENS.update(new)
    elif new:  # cache full: classify this document's new tokens without keeping them
        symbols = (tokens & _SYMBOL_TOKENS) | {w for w in new if is_symbol_word(w)}
        letters = (tokens & _LETTER_TOKENS) | {w for w in new if has_letter(w)}
        return _word_counts(words, counts, symbols, letters)
    return _word_counts(words, counts, tokens & _SYMBOL_TOKENS, tokens & _LETTER_TOKENS)


def _word_counts(words, counts: Counter, symbols: set, letters: set) -> tuple[int, int, int]:
    n_tokens = len(words)
    n_chars = sum(map(len, words))
    n_symbols = sum(counts[w] for w in symbols)
    symbol_chars = sum(len(w) * counts[w] for w in symbols)
    return n_tokens - n_symbols, n_chars - symbol_chars, sum(counts[w] for w in letters)


@lru_cache(maxsize=1)
def _punkt():
    from nltk.tokenize.punkt import PunktSentenceTokenizer  # imported on first use: it takes seconds
    return PunktSentenceTokenizer()


def split_sentences(text: str) -> list[str]:
    """Sentences of `text` (untrained punkt: FineWeb's algorithm without the abbreviation list)."""
    sents = _punkt().tokenize(text)
    return [s.strip() for s in sents if s.strip()]


# ------------------------------------------------------------------ word tokenizer
# NLTKWordTokenizer.tokenize is ~25 regex substitutions run one after the other over the whole
# text; NLTK 3.10 runs them on the third-party `regex` engine under a per-call timeout, which was
# most of the quality stages' time. Below are the same substitutions in the same order, written so
# that the stdlib `re` engine can jump between candidates (every pattern starts with a literal) or
# as plain str.replace, with shortcuts that cannot change the result:
#   - a step is skipped when the characters it needs are absent (checked on the text as it is at
#     that step); most pages have no "--", no backticks, no "gonna";
#   - a step that pads single characters with spaces is str.replace per character (padding
#     different characters commutes);
#   - the steps anchored at the end of the text (final period, trailing ":" / ",") only look at
#     the tail that can match;
#   - a pattern "(X)Y" -> "\1 Y" that consumes its left context X is written as "Y(?<=XY)" where
#     consecutive matches cannot compete for X (noted where it matters).
# tests/test_word_tokenizer.py checks token-for-token equality with NLTK on real and generated text.
#
# NLTK's patterns run on `regex`, whose character classes differ from `re`'s:
#   \s  regex: Unicode White_Space = str.isspace() minus the separators \x1c-\x1f  -> _S below;
#   \w  regex: letters, marks, decimal digits, connector punctuation, ZWJ/ZWNJ, circled letters;
#       re: str.isalnum() (which includes No digits such as "²") or "_"           -> _word_char;
#   \d  identical on every character Python's Unicode database (14.0) knows.
# Known difference: characters unassigned in Unicode 14 (newer scripts and digits that `regex`
# knows) next to an apostrophe or after ":" / "," may tokenize differently. They are absent from
# the test corpora; `regex`'s tables change with its releases anyway.

_S = r"[^\S\x1c-\x1f]"
_WS_CHARS = "".join(map(chr, (9, 10, 11, 12, 13, 32, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029,
                              0x202F, 0x205F, 0x3000)))
_CIRCLED_LETTERS = ((0x24B6, 0x24E9), (0x1F130, 0x1F149), (0x1F150, 0x1F169), (0x1F170, 0x1F189))


@lru_cache(maxsize=4096)
def _word_char(ch: str) -> bool:
    """`regex`'s \\w for one character (see above)."""
    if ch.isascii():
        return ch.isalnum() or ch == "_"
    cat = unicodedata.category(ch)
    if cat == "No":
        return False
    if ch.isalnum() or cat in ("Mn", "Mc", "Me", "Pc") or ch in "\u200c\u200d":
        return True
    return cat == "So" and any(a <= ord(ch) <= b for a, b in _CIRCLED_LETTERS)


# A period that ends a sentence: after a non-space + a non-period character (so not after a lone
# initial "J." nor inside "..."), followed only by closing quotes/brackets and then whitespace/end.
_SENTENCE_END_PERIOD = re.compile(r"\.(?<=\S[^\s.]\.)(?=[\]\)}>\"']*(?:\s|$))")

_BACKTICKS = re.compile(r"``*")  # not "`+": a leading literal lets `re` skip ahead
_OPEN_DQUOTE = re.compile(r"([ \(\[{<])(\"|\'{2})")
_OPEN_DQUOTE_ONLY = re.compile(r"\"(?<=[ \(\[{<]\")")
_OPEN_2QUOTE_ONLY = re.compile(r"''(?<=[ \(\[{<]'')")
_FINAL_PERIOD_1 = re.compile(r'([^\.])(\.)([\]\)}>"\'»”’ ]*+)' + _S + r"*$")
_FINAL_PERIOD_1_TAIL = "]})>\"'»”’ " + _WS_CHARS
_COLON_COMMA = re.compile(r"([:,])([^\d])")
_COLON_ONLY = re.compile(r":(?=[^\d])")
_COMMA_ONLY = re.compile(r",(?=[^\d])")
_FINAL_COLON_COMMA = re.compile(r"([:,])$")
_ELLIPSIS = re.compile(r"\.\.+")
_FINAL_PERIOD_2 = re.compile(r'([^\.])(\.)([\]\)}>"\']*)' + _S + r"*$")
_FINAL_PERIOD_2_TAIL = "]})>\"'" + _WS_CHARS
_APOSTROPHE_SPACE = re.compile(r"' (?<=[^']' )")
_SPACES = re.compile(_S + "+")
_CLITIC_1 = re.compile(r"'(?:[sSmMdD] (?<=[^' ]'. )| (?<=[^' ]' ))")
_CLITIC_2 = re.compile(r"(?:'ll|'LL|'re|'RE|'ve|'VE|n't|N'T) (?<=[^' ]....)")
_CLITIC_2_KINDS = ((re.compile(r"'(?:ll|LL|re|RE|ve|VE) (?<=[^' ]'.. )"), ("'ll", "'LL", "'re", "'RE", "'ve", "'VE")),
                   (re.compile(r"n't (?<=[^' ]n't )"), ("n't",)),
                   (re.compile(r"N'T (?<=[^' ]N'T )"), ("N'T",)))
# (literal each pattern needs, case-insensitively; NLTK's pattern; the same pattern for texts where
# the literal only occurs in lower case, starting with the literal so that `re` can skip ahead).
# `re`'s case-insensitive matching also maps "İ" and "ı" to i and "ſ" to s: such texts run them all.
_CONTRACTIONS = [(literal, re.compile(pattern), re.compile(lower)) for literal, pattern, lower in (
    ("cannot", r"(?i)\b(can)(?#X)(not)\b", r"(can)(?<=\bcan)(not)\b"),
    ("d'ye", r"(?i)\b(d)(?#X)('ye)\b", r"(d)(?<=\bd)('ye)\b"),
    ("gimme", r"(?i)\b(gim)(?#X)(me)\b", r"(gim)(?<=\bgim)(me)\b"),
    ("gonna", r"(?i)\b(gon)(?#X)(na)\b", r"(gon)(?<=\bgon)(na)\b"),
    ("gotta", r"(?i)\b(got)(?#X)(ta)\b", r"(got)(?<=\bgot)(ta)\b"),
    ("lemme", r"(?i)\b(lem)(?#X)(me)\b", r"(lem)(?<=\blem)(me)\b"),
    ("more'n", r"(?i)\b(more)(?#X)('n)\b", r"(more)(?<=\bmore)('n)\b"),
    ("wanna", r"(?i)\b(wan)(?#X)(na)(?=\s)", r"(wan)(?<=\bwan)(na)(?=\s)"),
    ("'tis", r"(?i) ('t)(?#X)(is)\b", r" ('t)(is)\b"),
    ("'twas", r"(?i) ('t)(?#X)(was)\b", r" ('t)(was)\b"))]
_ODD_CASE_FOLDS = ("İ", "ı", "ſ")
_CLITICS_AFTER_QUOTE = ("re", "ve", "ll", "m", "t", "s", "d", "n")
_PAD_SYMBOLS_DASHES = ";@#$%&\u2012\u2013\u2014\u2015"
_PAD_STAR_BRACKETS = "*][(){}<>"


def _pad(text: str, chars: str) -> str:
    for ch in chars:
        if ch in text:
            text = text.replace(ch, f" {ch} ")
    return text


def _sub_tail(pattern: re.Pattern, repl: str, text: str, start: int) -> str:
    """pattern.sub on text[start:] only (for patterns that can only match there)."""
    start = max(start, 0)
    return text[:start] + pattern.sub(repl, text[start:])


def _final_period(pattern: re.Pattern, repl: str, tail_chars: str, text: str) -> str:
    # The pattern's "." must be followed only by tail characters, so it can only be the last
    # character that is not one of them, with a non-period before it.
    end = len(text.rstrip(tail_chars))
    if end < 2 or text[end - 1] != "." or text[end - 2] == ".":
        return text
    return _sub_tail(pattern, repl, text, end - 2)


def _opening_apostrophes(text: str) -> str:
    """NLTK's `(?i)(?<!\\w)(\\')(?!(?:re|ve|ll|m|t|s|d|n)\\b)(?=\\w)` -> `\\1 `, with regex's \\w."""
    out, last, n = [], 0, len(text)
    i = text.find("'")
    while i >= 0:
        j = i + 1
        if j < n and _word_char(text[j]) and (i == 0 or not _word_char(text[i - 1])):
            head = text[j:j + 2].replace("ſ", "s").lower()  # (?i): "ſ" matches s
            for suffix in _CLITICS_AFTER_QUOTE:
                k = j + len(suffix)
                if head.startswith(suffix) and (k >= n or not _word_char(text[k])):
                    break
            else:
                out.append(text[last:j])
                out.append(" ")
                last = j
        i = text.find("'", j)
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


def _contraction_patterns(text: str) -> list[re.Pattern]:
    """The contraction patterns that can match `text`, in NLTK's order."""
    if not text.isascii():
        if any(ch in text for ch in _ODD_CASE_FOLDS):
            return [pattern for _, pattern, _ in _CONTRACTIONS]
        # dropping non-ASCII characters keeps every match (they are all ASCII now), may add some
        text = text.encode("ascii", "ignore").decode()
    low = text.lower()
    found = []
    for literal, pattern, lower_case in _CONTRACTIONS:
        n = low.count(literal)
        if n:
            # no occurrence in another case: the case-sensitive pattern finds the same matches
            found.append(lower_case if text.count(literal) == n else pattern)
    return found


def _nltk_word_tokenize(text: str) -> list[str]:
    """NLTKWordTokenizer().tokenize(text), step by step (names of the NLTK lists in brackets)."""
    # [STARTING_QUOTES] ([«“‘„]|[`]+) -> " \1 ", ^" -> ``, (``) -> " \1 ", opening " and ''
    text = _pad(text, "«“‘„")
    if "`" in text:
        text = _BACKTICKS.sub(r" \g<0> ", text)
    if text.startswith('"'):
        text = "``" + text[1:]
    if "``" in text:
        text = text.replace("``", " `` ")
    dquote, two_quotes = '"' in text, "''" in text
    if dquote and two_quotes:
        # `(\"|\'{2})` consumes its context: one pass, as in NLTK
        text = _OPEN_DQUOTE.sub(r"\1 `` ", text)
    elif dquote:
        text = _OPEN_DQUOTE_ONLY.sub(" `` ", text)
    elif two_quotes:
        text = _OPEN_2QUOTE_ONLY.sub(" `` ", text)
    if "'" in text:
        text = _opening_apostrophes(text)
    # [PUNCTUATION]
    text = _final_period(_FINAL_PERIOD_1, r"\1 \2 \3 ", _FINAL_PERIOD_1_TAIL, text)
    colon, comma = ":" in text, "," in text
    if colon or comma:
        if ",," in text or "::" in text or ",:" in text or ":," in text:
            # "([:,])([^\d])" consumes the character after the first of two adjacent marks
            text = _COLON_COMMA.sub(r" \1 \2", text)
        else:
            if colon:
                text = _COLON_ONLY.sub(" : ", text)
            if comma:
                text = _COMMA_ONLY.sub(" , ", text)
        text = _sub_tail(_FINAL_COLON_COMMA, r" \1 ", text, len(text) - 2)
    if ".." in text:
        text = _ELLIPSIS.sub(r" \g<0> ", text)
    text = _pad(text, _PAD_SYMBOLS_DASHES)
    text = _final_period(_FINAL_PERIOD_2, r"\1 \2\3 ", _FINAL_PERIOD_2_TAIL, text)
    text = _pad(text, "?!")
    if "' " in text:
        # ([^'])' -> "\1 ' ". NLTK's match consumes its context, so in "a' ' " it skips the second
        # quote, whose context is the first match's space; here it pads that quote too, which only
        # adds a space before a quote that has one (no token or '' pair changes)
        text = _APOSTROPHE_SPACE.sub(" ' ", text)
    text = _pad(text, _PAD_STAR_BRACKETS)  # [*], then PARENS_BRACKETS
    if "--" in text:
        text = text.replace("--", " -- ")  # DOUBLE_DASHES
    # [ENDING_QUOTES] ([»”’]) -> " \1 ", '' -> " '' ", " -> " '' ", \s+ -> " ", then the clitics
    text = _pad(" " + text + " ", "»”’")
    if "''" in text:
        text = text.replace("''", " '' ")
    if '"' in text:
        text = text.replace('"', " '' ")
    contractions = _contraction_patterns(text)
    if "'" in text or contractions:
        # whitespace only matters to the clitic and contraction rules
        if "\x1c" in text or "\x1d" in text or "\x1e" in text or "\x1f" in text:
            text = _SPACES.sub(" ", text)
        else:
            text = " " + " ".join(text.split()) + " "
        if "'" in text:
            # ([^' ])('[sS]|'[mM]|'[dD]|') , then ([^' ])('ll|...|n't|N'T) : a match ends with a
            # space, which is never the next match's context character
            text = _CLITIC_1.sub(r" \g<0>", text)
            # one pass: a match of one alternative can give another its trailing space
            kinds = [pattern for pattern, literals in _CLITIC_2_KINDS if any(lit in text for lit in literals)]
            if len(kinds) == 1:
                text = kinds[0].sub(r" \g<0>", text)
            elif kinds:
                text = _CLITIC_2.sub(r" \g<0>", text)
        if contractions:
            for pattern in contractions:
                text = pattern.sub(r" \1 \2 ", text)
    return text.split()


@lru_cache(maxsize=4)
def words_of(text: str) -> tuple[str, ...]:
    """Words as FineWeb's `nltk.word_tokenize` gives them (see the module docstring), as a tuple.

    The last few texts are cached: the Gopher and FineWeb filters tokenize the same text one after
    the other (a cache hit costs one hash of the text, which Python keeps on the string).
    """
    return tuple(_nltk_word_tokenize(_SENTENCE_END_PERIOD.sub(" .", text)))


def word_tokenize(text: str) -> list[str]:
    """Words as FineWeb's `nltk.word_tokenize` gives them (see the module docstring)."""
    return list(words_of(text))


def find_duplicates(items: list[str]) -> tuple[int, int]:
    """(number of items that repeat an earlier one, their total characters)."""
    seen: set[str] = set()
    dup_items = dup_chars = 0
    for item in items:
        if item in seen:
            dup_items += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    return dup_items, dup_chars


def n_grams(words, n: int) -> list[str]:
    """Every run of `n` consecutive words, joined with a space."""
    return [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]


# Polynomial string hashing modulo 2**64 (numpy's uint64 arithmetic wraps): the hash of J[a:b] is
# sum(J[a + t] * B**-t), read off prefix sums, so every n-gram of the joined words is hashed with a
# few array operations instead of building one Python string per n-gram. Equal strings have equal
# hashes, so "no two hashes equal" proves "no repeated n-gram"; otherwise the n-grams whose hash
# repeats are compared as real strings, so a hash collision never changes a result.
_B = 0x9E3779B97F4A7C15
_B_INV = pow(_B, -1, 1 << 64)


class _Powers:
    size = 0
    pos = neg = np.zeros(0, dtype=np.uint64)

    @classmethod
    def upto(cls, n: int):
        if n > cls.size:
            size = max(n, 2 * cls.size, 4096)
            with np.errstate(over="ignore"):  # integer arrays wrap modulo 2**64 anyway
                cls.pos = np.ones(size, dtype=np.uint64)
                cls.pos[1:] = np.cumprod(np.full(size - 1, _B, dtype=np.uint64))
                cls.neg = np.ones(size, dtype=np.uint64)
                cls.neg[1:] = np.cumprod(np.full(size - 1, _B_INV, dtype=np.uint64))
            cls.size = size
        return cls.pos, cls.neg


class WordNGrams:
    """N-gram statistics of one word sequence (Gopher's top and duplicated n-gram rules).

    Words are numbered and n-grams become numbers (word tuples) or hashes (joined strings) in
    numpy arrays, one row per n, so that all the n of a rule take a few array operations instead
    of one Python string per n-gram per n.
    """

    def __init__(self, words):
        self.words = words
        self.n_words = len(words)
        lengths = np.fromiter(map(len, words), dtype=np.int64, count=self.n_words)
        self.ends = np.zeros(self.n_words + 1, dtype=np.int64)  # word i is joined[ends[i]:ends[i+1]]
        np.cumsum(lengths, out=self.ends[1:])
        self._hashes = None
        self._row_hashes: dict[int, np.ndarray] = {}  # n -> hash of the n-gram at each position
        self._bounds: dict[int, int] = {}

    def top_chars(self, ns) -> dict[int, int]:
        """{n: characters covered by the most frequent n-gram}: len(joined with spaces) x count.

        Ties go to the n-gram seen first (as Counter.most_common in datatrove); a count of 1
        still counts, as in datatrove. Tokens hold no spaces, so word tuples identify the
        space-joined n-grams.
        """
        out = {n: 0 for n in ns}
        ns = sorted(n for n in out if 1 <= n <= self.n_words)
        if not ns:
            return out
        width = self.n_words - ns[0] + 1
        keys = np.empty((len(ns), width), dtype=np.int64)
        tuple_keys = self._tuple_keys(ns[-1])
        for row, n in enumerate(ns):
            ngram_keys = tuple_keys[n - 1]
            keys[row, :len(ngram_keys)] = ngram_keys
            # past the last n-gram: distinct negative numbers, which sort first and occur once
            keys[row, len(ngram_keys):] = -1 - np.arange(width - len(ngram_keys))
        order = np.argsort(keys, axis=1, kind="stable")  # stable: a run starts at its first position
        ordered = np.take_along_axis(keys, order, axis=1)
        new_run = np.ones(ordered.shape, dtype=bool)
        new_run[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
        starts = np.flatnonzero(new_run)  # row-major, so runs never span two rows
        counts = np.diff(np.append(starts, ordered.size))
        row_begins = np.searchsorted(starts, np.arange(len(ns)) * width)
        best = np.maximum.reduceat(counts, row_begins)
        first_pos = order.ravel()[starts]
        is_best = counts == best[starts // width]
        # a padding number is only a "most frequent" n-gram when every count is 1, and then a real
        # n-gram comes before it
        first = np.minimum.reduceat(np.where(is_best, first_pos, width), row_begins)
        ends = self.ends
        for n, count, i in zip(ns, best.tolist(), first.tolist()):
            out[n] = (int(ends[i + n] - ends[i]) + n - 1) * count
        return out

    def _tuple_keys(self, n: int) -> list[np.ndarray]:
        """For k = 1..n, numbers identifying the word tuple of the k-gram at each position."""
        index = {w: i for i, w in enumerate(dict.fromkeys(self.words))}
        vocab = len(index)
        ids = np.fromiter(map(index.__getitem__, self.words), dtype=np.int64, count=self.n_words)
        keys, bound = [ids], vocab
        for k in range(2, n + 1):
            prev = keys[-1]
            if bound * vocab >= 1 << 62:  # renumber densely (< n_words) before overflowing
                prev, bound = np.unique(prev, return_inverse=True)[1].reshape(-1), self.n_words
            keys.append(prev[:-1] * vocab + ids[k - 1:])
            bound *= vocab
        return keys

    def duplicated_chars(self, ns) -> dict[int, int]:
        """{n: characters of n-gram occurrences that repeat an earlier n-gram}.

        Characters are counted with the words joined *without* spaces; after a repeat the scan
        jumps `n` words ahead so overlapping repeats are not counted twice (FineWeb-era datatrove).
        The key is the space-less join itself (not the word tuple), as in datatrove, so ("ab", "c")
        and ("a", "bc") count as the same n-gram; this keeps decisions identical on odd tokenizations.
        """
        missing = [n for n in ns if n not in self._bounds]
        if missing:
            self.duplicated_chars_bound(missing)
        return {n: self._duplicated_chars_exact(n) if self._bounds[n] else 0 for n in ns}

    def duplicated_chars_bound(self, ns) -> dict[int, int]:
        """{n: an upper bound of duplicated_chars}: the characters of the n-grams whose hash was
        seen before in hash order (so 0 when no n-gram repeats). All n in a few array operations.

        (Of k equal n-grams at most k - 1 count as repeats; a hash shared by different n-grams
        only makes the bound larger.)
        """
        out = {n: 0 for n in ns}
        self._bounds.update(out)
        ns = sorted(n for n in out if 1 <= n <= self.n_words)
        if not ns:
            return out
        prefix, scale = self._hash_prefix()
        width = self.n_words - ns[0] + 1
        start = np.arange(width)
        stop = np.minimum(start + np.array(ns)[:, None], self.n_words)
        lengths = self.ends[stop] - self.ends[start]
        with np.errstate(over="ignore"):
            hashes = (prefix[stop] - prefix[start]) * scale[start]
        # past the last n-gram (stop clipped): filler hashes of empty strings, which count 0 chars
        lengths[start + np.array(ns)[:, None] > self.n_words] = 0
        order = np.argsort(hashes, axis=1)
        ordered = np.take_along_axis(hashes, order, axis=1)
        seen_before = ordered[:, 1:] == ordered[:, :-1]
        bound = (np.take_along_axis(lengths, order[:, 1:], axis=1) * seen_before).sum(axis=1)
        self._row_hashes.update(zip(ns, hashes))
        out.update(zip(ns, bound.tolist()))
        self._bounds.update(out)
        return out

    def _duplicated_chars_exact(self, n: int) -> int:
        hashes = self._row_hashes[n][:self.n_words - n + 1]
        # n-grams whose hash occurs more than once, compared as strings
        order = np.argsort(hashes, kind="stable")
        same = hashes[order[1:]] == hashes[order[:-1]]
        marked = np.zeros(len(hashes), dtype=bool)
        marked[order[1:][same]] = True
        marked[order[:-1][same]] = True
        candidates = np.flatnonzero(marked).tolist()
        joined, ends = self._joined, self._ends_list
        grams = {i: joined[ends[i]:ends[i + n]] for i in candidates}
        counts = Counter(grams.values())
        # datatrove's scan visits every position except the n - 1 after a repeat, and remembers
        # each n-gram it visits; an n-gram that occurs once is never a repeat, so only the others
        # matter
        seen: set[str] = set()
        repeated = visit_from = 0
        for i in candidates:
            gram = grams[i]
            if i < visit_from or counts[gram] < 2:
                continue
            if gram in seen:
                repeated += len(gram)
                visit_from = i + n
            else:
                seen.add(gram)
                visit_from = i + 1
        return repeated

    def _hash_prefix(self):
        """(prefix hash at each word boundary, B**start of each word): the hash of words i..i+n-1
        joined is (prefix[i+n] - prefix[i]) * scale[i]."""
        if self._hashes is not None:
            return self._hashes
        self._joined = "".join(self.words)
        self._ends_list = self.ends.tolist()  # for slicing
        codes = np.frombuffer(self._joined.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.uint64)
        pos, neg = _Powers.upto(len(codes) + 1)
        prefix = np.zeros(len(codes) + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            np.cumsum(codes * neg[:len(codes)], out=prefix[1:])
        self._hashes = prefix[self.ends], pos[self.ends]
        return self._hashes


def top_n_gram_chars(words, n: int) -> int:
    """See WordNGrams.top_chars."""
    return WordNGrams(words).top_chars([n])[n]


def duplicated_n_gram_chars(words, n: int) -> int:
    """See WordNGrams.duplicated_chars."""
    return WordNGrams(words).duplicated_chars([n])[n]
