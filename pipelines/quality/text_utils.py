"""Shared text helpers for the quality filters: NLTK-style words, sentences, duplicate counting.

FineWeb's datatrove called `nltk.word_tokenize(text, language="english")`: it splits the text into
sentences with the *pretrained* English punkt model, then runs the Treebank-style
`NLTKWordTokenizer` on each sentence, so the period that ends a sentence becomes its own token.
Punkt's pretrained data cannot be downloaded here, and running the tokenizer sentence by sentence
is slow (about 5 docs/s on a 16 KB page: ~40 regex passes per sentence). So `word_tokenize` runs
`NLTKWordTokenizer` ONCE over the whole text after splitting off every sentence-final period with
one regex that mimics an untrained `PunktSentenceTokenizer()` (a period after a word of 2+
characters, followed by whitespace or closing quotes/brackets, ends a sentence; single-letter
initials such as "J." do not). On mixed English text this gives the same tokens as untrained punkt
+ per-sentence Treebank, ~10x faster. The remaining difference to FineWeb is abbreviations that
the pretrained model knows ("Dr. Smith": we emit "Dr" "." instead of "Dr."), a one-character
shift between tokens that moves no threshold in practice.

`split_sentences` (C4's sentence count) uses the untrained punkt tokenizer itself.
"""
from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from functools import lru_cache

# Characters that make a token a "symbol" when a token has nothing else (Gopher's non-symbol words).
# ASCII punctuation, every Unicode punctuation character (category P*), and the typographic
# symbols datatrove lists in its PUNCTUATION constant (bullets, arrows, full-width signs).
_EXTRA_SYMBOLS = set("━►％＄～«»„“”‘’´`•·…–—") | {chr(c) for c in range(0, 32)} | {chr(c) for c in range(127, 160)}


@lru_cache(maxsize=65536)
def _is_punct_char(ch: str) -> bool:
    return ch in string.punctuation or ch in _EXTRA_SYMBOLS or unicodedata.category(ch).startswith("P")


def is_symbol_word(word: str) -> bool:
    """True when every character of `word` is punctuation (so it is not a 'word' for Gopher)."""
    return all(_is_punct_char(ch) for ch in word)


class _Tokenizers:
    """NLTK objects built once per process (they hold compiled regexes, no data files)."""
    word = None
    sent = None


def _nltk():
    if _Tokenizers.word is None:
        from nltk.tokenize import NLTKWordTokenizer
        from nltk.tokenize.punkt import PunktSentenceTokenizer

        _Tokenizers.word = NLTKWordTokenizer()
        _Tokenizers.sent = PunktSentenceTokenizer()
    return _Tokenizers


def split_sentences(text: str) -> list[str]:
    """Sentences of `text` (untrained punkt: FineWeb's algorithm without the abbreviation list)."""
    sents = _nltk().sent.tokenize(text)
    return [s.strip() for s in sents if s.strip()]


# A period that ends a sentence: after a non-space + a non-period character (so not after a lone
# initial "J." nor inside "..."), followed only by closing quotes/brackets and then whitespace/end.
_SENTENCE_END_PERIOD = re.compile(r"(?<=\S[^\s.])\.(?=[\]\)}>\"']*(?:\s|$))")


@lru_cache(maxsize=8)
def _word_tokenize_cached(text: str) -> tuple[str, ...]:
    tokens = _nltk().word.tokenize(_SENTENCE_END_PERIOD.sub(" .", text))
    # datatrove's NLTKTokenizer strips tokens and drops empty ones
    return tuple(t.strip() for t in tokens if t.strip())


def word_tokenize(text: str) -> list[str]:
    """Words as FineWeb's `nltk.word_tokenize` gives them (see the module docstring).

    A few recent texts are cached: the two Gopher filters tokenize the same text back to back.
    """
    return list(_word_tokenize_cached(text))


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


def n_grams(words: list[str], n: int) -> list[str]:
    """Every run of `n` consecutive words, joined with a space."""
    return [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]


def top_n_gram_chars(words: list[str], n: int) -> int:
    """Characters covered by the most frequent n-gram: len(joined with spaces) x its count.

    Ties go to the n-gram seen first (Counter.most_common keeps insertion order), as in datatrove;
    a count of 1 still counts, as in datatrove.
    """
    grams = n_grams(words, n)
    if not grams:
        return 0
    gram, count = Counter(grams).most_common(1)[0]
    return len(gram) * count


def duplicated_n_gram_chars(words: list[str], n: int) -> int:
    """Characters of n-gram occurrences that repeat an earlier n-gram.

    Characters are counted with the words joined *without* spaces; after a repeat the scan jumps
    `n` words ahead so overlapping repeats are not counted twice (FineWeb-era datatrove).
    """
    # The key is the space-less join itself (not a tuple), as in datatrove, so ("ab", "c") and
    # ("a", "bc") count as the same n-gram; this keeps decisions identical on odd tokenizations.
    seen: set[str] = set()
    repeated = 0
    idx, last = 0, len(words) - n
    while idx <= last:
        gram = "".join(words[idx:idx + n])
        if gram in seen:
            repeated += len(gram)
            idx += n
        else:
            seen.add(gram)
            idx += 1
    return repeated
