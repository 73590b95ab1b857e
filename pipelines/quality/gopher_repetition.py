"""Gopher repetition filter (Rae et al. 2021, table A1) with FineWeb-era datatrove semantics.

Every check drops when its value is strictly greater than the threshold; a threshold of null (or
0) turns the check off, as in datatrove. Character fractions are over len(text).
"""
from __future__ import annotations

import re

from pipelines.document import Document
from pipelines.quality.text_utils import WordNGrams, document_words, find_duplicates
from pipelines.runner import Filter

_PARAGRAPH_SPLIT = re.compile(r"\n{2,}")


def _pairs(spec) -> list[tuple[int, float]]:
    """{2: 0.2, ...} (YAML) or [(2, 0.2), ...] (datatrove style) -> sorted [(n, threshold)]."""
    items = spec.items() if isinstance(spec, dict) else (spec or [])
    return sorted((int(n), float(t)) for n, t in items)


class GopherRepetitionFilter(Filter):
    name = "gopher_repetition"

    def __init__(self, dup_line_frac: float | None = 0.3, dup_para_frac: float | None = 0.3,
                 dup_line_char_frac: float | None = 0.2, dup_para_char_frac: float | None = 0.2,
                 top_n_grams=None, dup_n_grams=None):
        self.dup_line_frac = dup_line_frac
        self.dup_para_frac = dup_para_frac
        self.dup_line_char_frac = dup_line_char_frac
        self.dup_para_char_frac = dup_para_char_frac
        self.top_n_grams = _pairs({2: 0.2, 3: 0.18, 4: 0.16} if top_n_grams is None else top_n_grams)
        self.dup_n_grams = _pairs({5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
                                  if dup_n_grams is None else dup_n_grams)

    def config(self) -> dict:
        return {"dup_line_frac": self.dup_line_frac, "dup_para_frac": self.dup_para_frac,
                "dup_line_char_frac": self.dup_line_char_frac, "dup_para_char_frac": self.dup_para_char_frac,
                "top_n_grams": dict(self.top_n_grams), "dup_n_grams": dict(self.dup_n_grams)}

    def filter(self, doc: Document):
        text = doc.text
        n_chars = len(text)
        if n_chars == 0:
            return True  # nothing repeats; empty documents are the extraction stage's business

        # Paragraphs: split on 2+ newlines after stripping the ends (blank edges are not paragraphs).
        paragraphs = _PARAGRAPH_SPLIT.split(text.strip())
        dup, dup_chars = find_duplicates(paragraphs)
        if self.dup_para_frac and dup / len(paragraphs) > self.dup_para_frac:
            return False, "dup_para_frac"
        if self.dup_para_char_frac and dup_chars / n_chars > self.dup_para_char_frac:
            return False, "dup_para_char_frac"

        # Lines: splitlines() keeps blank lines, so a page with many blank lines has "duplicate"
        # (empty) lines by count; they weigh nothing by characters. This is the FineWeb-era rule.
        lines = text.splitlines()
        dup, dup_chars = find_duplicates(lines)
        if self.dup_line_frac and dup / len(lines) > self.dup_line_frac:
            return False, "dup_line_frac"
        if self.dup_line_char_frac and dup_chars / n_chars > self.dup_line_char_frac:
            return False, "dup_line_char_frac"

        grams = WordNGrams(document_words(doc))  # each rule's n are computed together (array operations)
        # the exact top n-gram (a sort per n) only where a cheap upper bound crosses a threshold:
        # top <= bound, so a page every bound passes passes every rule
        ns = [n for n, threshold in self.top_n_grams if threshold]
        bound = grams.top_chars_bound(ns)
        if any(bound[n] / n_chars > threshold for n, threshold in self.top_n_grams if threshold):
            top = grams.top_chars(ns)
            for n, threshold in self.top_n_grams:
                if threshold and top[n] / n_chars > threshold:
                    return False, f"top_{n}_gram"
        # the exact count (a sequential scan) only where two upper bounds cross the threshold, each
        # computed only where the cheaper one before it does: one for all n at once, then the
        # characters the repeats of this n cover (bound >= covered >= exact, so the test is the exact one)
        bound = grams.duplicated_chars_bound([n for n, threshold in self.dup_n_grams if threshold])
        for n, threshold in self.dup_n_grams:
            if threshold and bound[n] / n_chars > threshold and \
                    grams.duplicated_chars_covered(n) / n_chars > threshold and \
                    grams.duplicated_chars([n])[n] / n_chars > threshold:
                return False, f"duplicated_{n}_n_grams"
        return True
