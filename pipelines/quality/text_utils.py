"""Shared text helpers for the quality filters: NLTK-style words, sentences, n-gram statistics.

FineWeb's datatrove called `nltk.word_tokenize(text, language="english")`: it splits the text into
sentences with the English punkt model, then runs the Treebank-style `NLTKWordTokenizer` on each
sentence, so the period that ends a sentence becomes its own token. `word_tokenize` here gives
exactly NLTK's tokens, token for token, for NLTK's punkt with an *untrained* (empty) model - what
NLTK loads from minimal `punkt_tab` files, the pretrained data cannot be downloaded here:
- pipelines/quality/punkt.py: the untrained punkt sentence splitter, ported rule for rule;
- pipelines/quality/word_tokenizer.py: the NLTKWordTokenizer rules on the stdlib `re` engine,
  run once per run of sentences that can be tokenized together without changing a token.
NLTK itself (it imports scipy and runs every pattern on `regex` under a timeout) is ~10x slower and
takes seconds to import; tests/test_word_tokenizer.py holds it as the reference, on real text and
on thousands of generated strings. The one difference to FineWeb left is what the *pretrained*
English model knows: ~150 abbreviations ("Dr. Smith": "Dr" "." here, "Dr." in FineWeb), after
which it does not break a sentence; a one-character shift between tokens.

`split_sentences` (C4's sentence count) is the same punkt port.
"""
from __future__ import annotations

import string
import unicodedata
from collections import Counter
from functools import lru_cache

import numpy as np

from pipelines.quality.punkt import sentences as punkt_sentences
from pipelines.quality.word_tokenizer import word_tokenize, words_of  # noqa: F401 (re-exported)

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
# vocabulary, so most tokens are classified once and a document costs a few set operations. The
# sets hold the rare kinds (symbols, tokens without a letter), so that a document's sums run over
# its few punctuation and number tokens, not over its words.
_KNOWN_TOKENS: set[str] = set()
_SYMBOL_TOKENS: set[str] = set()
_LETTERLESS_TOKENS: set[str] = set()


def gopher_word_counts(words, counts: Counter) -> tuple[int, int, int]:
    """From the tokens and their counts: (non-symbol tokens, their total length, tokens with a letter)."""
    tokens = counts.keys()
    new = tokens - _KNOWN_TOKENS
    if new and len(_KNOWN_TOKENS) < 1_000_000:
        _SYMBOL_TOKENS.update(w for w in new if is_symbol_word(w))
        _LETTERLESS_TOKENS.update(w for w in new if not has_letter(w))
        _KNOWN_TOKENS.update(new)
    elif new:  # cache full: classify this document's new tokens without keeping them
        symbols = (tokens & _SYMBOL_TOKENS) | {w for w in new if is_symbol_word(w)}
        letterless = (tokens & _LETTERLESS_TOKENS) | {w for w in new if not has_letter(w)}
        return _word_counts(words, counts, symbols, letterless)
    return _word_counts(words, counts, tokens & _SYMBOL_TOKENS, tokens & _LETTERLESS_TOKENS)


def _word_counts(words, counts: Counter, symbols: set, letterless: set) -> tuple[int, int, int]:
    n_tokens = len(words)
    n_chars = sum(map(len, words))
    n_symbols = sum(map(counts.__getitem__, symbols))
    symbol_chars = sum(len(w) * counts[w] for w in symbols)
    return n_tokens - n_symbols, n_chars - symbol_chars, n_tokens - sum(map(counts.__getitem__, letterless))


def document_words(doc) -> tuple[str, ...]:
    """words_of(doc.text), computed once per document text and kept on the document: Gopher
    repetition, Gopher quality and FineWeb tokenize the same text (FineWeb's only when c4_lines
    left it unchanged); a text a stage rewrote is tokenized anew (equal strings compare in a memcmp)."""
    cached = doc.cache.get("words")
    if cached is not None and cached[0] == doc.text:
        return cached[1]
    words = words_of(doc.text)
    doc.cache["words"] = (doc.text, words)
    return words


def split_sentences(text: str) -> list[str]:
    """Sentences of `text` (untrained punkt: FineWeb's algorithm without the abbreviation list),
    as `PunktSentenceTokenizer().tokenize` gives them (pipelines/quality/punkt.py), stripped."""
    return [s.strip() for s in punkt_sentences(text) if s.strip()]


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
        self._groups: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # n -> _hash_groups(n)
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

    def top_chars_bound(self, ns) -> dict[int, int]:
        """{n: an upper bound of top_chars}: the most characters any group of equal keys covers,
        count x (length + n - 1), keys as in _sorted_keys. The n-grams of the most frequent word
        tuple all share one key (its length is in the key), so their group counts at least as
        often. One sort per n, no Python per n-gram: the exact top_chars (tuples, ties) is only
        computed where this bound crosses a threshold."""
        out = {n: 0 for n in ns}
        ns = sorted(n for n in out if 1 <= n <= self.n_words)
        if not ns:
            return out
        keys, mask = self._sorted_keys(ns)
        width = keys.shape[1]
        new_run = np.ones(keys.shape, dtype=bool)
        new_run[:, 1:] = keys[:, 1:] != keys[:, :-1]
        starts = np.flatnonzero(new_run)  # row-major, so runs never span two rows
        counts = np.diff(starts, append=keys.size)
        # a filler's group (count 1, length 0) gives n - 1, less than any n-gram's
        chars = counts * ((keys.ravel()[starts] & mask).astype(np.int64) + np.array(ns)[starts // width] - 1)
        best = np.maximum.reduceat(chars, np.searchsorted(starts, np.arange(len(ns)) * width))
        out.update(zip(ns, best.tolist()))
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
        """{n: an upper bound of duplicated_chars}: the characters of every n-gram whose key
        (_sorted_keys) equals the one before it in sorted order, so 0 when no n-gram repeats.
        Of k equal n-grams at most k - 1 are counted as repeats; they share one key, and a group
        of equal keys holds n-grams of one length, so the group adds at least as much. All n in
        one sort, no Python per n-gram; the exact scan only runs where this crosses a threshold.
        """
        out = {n: 0 for n in ns}
        ns = sorted(n for n in out if 1 <= n <= self.n_words)
        if ns:
            keys, mask = self._sorted_keys(ns)
            repeat = keys[:, 1:] == keys[:, :-1]
            sums = np.where(repeat, keys[:, 1:] & mask, np.uint64(0)).sum(axis=1)
            out.update(zip(ns, map(int, sums.tolist())))
        self._bounds.update(out)
        return out

    def _sorted_keys(self, ns) -> tuple[np.ndarray, np.uint64]:
        """(keys, mask): one row per n (ascending, each <= n_words), each row's keys sorted. The key
        of an n-gram is the high bits of its hash (as _row) with its length (characters, joined
        without spaces) in the low bits (mask): equal n-grams have equal keys and the length can
        be read off a key; unequal ones sharing a key only make a bound larger. Past a row's last
        n-gram: distinct fillers with length 0, which equal no n-gram (every n-gram has characters).
        A few whole-matrix operations, whatever the number of rows."""
        ends, n_words = self.ends, self.n_words
        width = n_words - ns[0] + 1
        prefix, scale = self._hash_prefix()
        # row k, position i: the words i .. i + ns[k] - 1, cut at the last word past a row's last
        # n-gram (those become fillers below)
        positions = np.arange(width)
        stops = positions + np.array(ns)[:, None]
        past = stops > n_words
        np.minimum(stops, n_words, out=stops)
        lengths = ends[stops] - ends[:width]
        bits = int(lengths[-1].max()).bit_length()  # of the longest n-gram
        mask = np.uint64((1 << bits) - 1)
        with np.errstate(over="ignore"):  # integer arrays wrap modulo 2**64 anyway
            keys = (prefix[stops] - prefix[:width]) * scale[:width]
        keys &= ~mask
        keys |= lengths.astype(np.uint64)
        np.copyto(keys, ~positions.astype(np.uint64) << np.uint64(bits), where=past)
        keys.sort(axis=1)
        return keys, mask

    def _row(self, n: int) -> np.ndarray:
        """The hash of the n-gram (its words joined without spaces) at each position."""
        row = self._row_hashes.get(n)
        if row is None:
            prefix, scale = self._hash_prefix()
            m = self.n_words - n + 1
            with np.errstate(over="ignore"):  # integer arrays wrap modulo 2**64 anyway
                row = self._row_hashes[n] = (prefix[n:] - prefix[:m]) * scale[:m]
        return row

    def duplicated_chars_covered(self, n: int) -> int:
        """An upper bound of duplicated_chars(n), tighter than duplicated_chars_bound where a passage
        repeats (that one counts each of its overlapping n-grams): the characters of the words
        covered by n-gram occurrences whose hash occurs earlier. The occurrences the exact scan
        counts are among them and never overlap (it jumps n words ahead after each)."""
        if not 1 <= n <= self.n_words:
            return 0
        later = self._hash_groups(n)[1]
        starts = np.zeros(self.n_words, dtype=np.int64)
        starts[later] = 1
        opened = np.cumsum(starts)  # word k is covered when a repeat starts in (k - n, k]
        opened[n:] -= opened[:-n].copy()
        return int(np.diff(self.ends)[opened > 0].sum())

    def _hash_groups(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions of the n-grams whose hash occurs more than once, those of them that are not
        the first occurrence of their hash), each ascending."""
        groups = self._groups.get(n)
        if groups is None:
            hashes = self._row(n)
            order = np.argsort(hashes, kind="stable")
            same = hashes[order[1:]] == hashes[order[:-1]]
            later = order[1:][same]
            marked = np.zeros(len(hashes), dtype=bool)
            marked[later] = True
            marked[order[:-1][same]] = True
            groups = self._groups[n] = (np.flatnonzero(marked), np.sort(later))
        return groups

    def _duplicated_chars_exact(self, n: int) -> int:
        # n-grams whose hash occurs more than once, compared as strings
        candidates = self._hash_groups(n)[0].tolist()
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
