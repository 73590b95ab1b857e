"""Gopher quality filter (Rae et al. 2021) with FineWeb-era datatrove semantics.

Word-based ratios use the NLTK-style tokens of text_utils.word_tokenize:
- "non-symbol words" are tokens with at least one character that is not punctuation; they give
  the word count (min/max) and the mean word length;
- the `#` and ellipsis ratios and the alphabetic-word ratio divide by *all* tokens (punctuation
  tokens included), as datatrove does;
- stop words are matched case-sensitively against the tokens (so "The" does not count), and
  FineWeb-era counts occurrences; `count_distinct_stop_words: true` gives the later behaviour.
A threshold of null (or 0) turns its check off, as in datatrove.
"""
from __future__ import annotations

from collections import Counter

from pipelines.document import Document
from pipelines.quality.text_utils import document_words, gopher_word_counts
from pipelines.runner import Filter

DEFAULT_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")


class GopherQualityFilter(Filter):
    name = "gopher_quality"

    def __init__(self, min_doc_words: int | None = 50, max_doc_words: int | None = 100_000,
                 min_avg_word_length: float | None = 3, max_avg_word_length: float | None = 10,
                 max_symbol_word_ratio: float | None = 0.1, max_bullet_lines_ratio: float | None = 0.9,
                 max_ellipsis_lines_ratio: float | None = 0.3, max_non_alpha_words_ratio: float | None = 0.8,
                 min_stop_words: int | None = 2, stop_words=None, count_distinct_stop_words: bool = False,
                 bullets=("•", "-")):
        self.min_doc_words = min_doc_words
        self.max_doc_words = max_doc_words
        self.min_avg_word_length = min_avg_word_length
        self.max_avg_word_length = max_avg_word_length
        self.max_symbol_word_ratio = max_symbol_word_ratio
        self.max_bullet_lines_ratio = max_bullet_lines_ratio
        self.max_ellipsis_lines_ratio = max_ellipsis_lines_ratio
        self.max_non_alpha_words_ratio = max_non_alpha_words_ratio
        self.min_stop_words = min_stop_words
        self.stop_words = frozenset(DEFAULT_STOP_WORDS if stop_words is None else stop_words)
        self.count_distinct_stop_words = count_distinct_stop_words
        self.bullets = tuple(bullets)

    def config(self) -> dict:
        return {"min_doc_words": self.min_doc_words, "max_doc_words": self.max_doc_words,
                "min_avg_word_length": self.min_avg_word_length, "max_avg_word_length": self.max_avg_word_length,
                "max_symbol_word_ratio": self.max_symbol_word_ratio,
                "max_bullet_lines_ratio": self.max_bullet_lines_ratio,
                "max_ellipsis_lines_ratio": self.max_ellipsis_lines_ratio,
                "max_non_alpha_words_ratio": self.max_non_alpha_words_ratio,
                "min_stop_words": self.min_stop_words, "stop_words": sorted(self.stop_words),
                "count_distinct_stop_words": self.count_distinct_stop_words, "bullets": list(self.bullets)}

    def filter(self, doc: Document):
        text = doc.text
        words = document_words(doc)
        n_tokens = len(words)
        counts = Counter(words)  # each distinct token is classified once
        n_words, word_chars, alpha_words = gopher_word_counts(words, counts)

        if self.min_doc_words and n_words < self.min_doc_words:
            return False, "gopher_short_doc"
        if self.max_doc_words and n_words > self.max_doc_words:
            return False, "gopher_long_doc"
        if n_words == 0:
            return True  # only reachable with min_doc_words off: no word-based rule can be computed

        avg_len = word_chars / n_words
        if self.min_avg_word_length and avg_len < self.min_avg_word_length:
            return False, "gopher_below_avg_threshold"
        if self.max_avg_word_length and avg_len > self.max_avg_word_length:
            return False, "gopher_above_avg_threshold"

        if self.max_symbol_word_ratio:
            if text.count("#") / n_tokens > self.max_symbol_word_ratio:
                return False, "gopher_too_many_hashes"
            if (text.count("...") + text.count("…")) / n_tokens > self.max_symbol_word_ratio:
                return False, "gopher_too_many_ellipsis"

        lines = text.splitlines()
        if lines:
            if self.max_bullet_lines_ratio:
                bullet_lines = sum(1 for line in lines if line.lstrip().startswith(self.bullets))
                if bullet_lines / len(lines) > self.max_bullet_lines_ratio:
                    return False, "gopher_too_many_bullets"
            if self.max_ellipsis_lines_ratio:
                ellipsis_lines = sum(1 for line in lines if line.rstrip().endswith(("...", "…")))
                if ellipsis_lines / len(lines) > self.max_ellipsis_lines_ratio:
                    return False, "gopher_too_many_end_ellipsis"

        # the config value is the minimum share of words that must contain a letter
        if self.max_non_alpha_words_ratio:
            if alpha_words / n_tokens < self.max_non_alpha_words_ratio:
                return False, "gopher_below_alpha_threshold"

        if self.min_stop_words:
            if self.count_distinct_stop_words:
                stop = len(self.stop_words.intersection(counts))
            else:
                stop = sum(counts[w] for w in self.stop_words)
            if stop < self.min_stop_words:
                return False, "gopher_enough_stop_words"
        return True
