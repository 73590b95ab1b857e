"""FineWeb's own quality filter (Penedo et al. 2024), FineWeb-era semantics.

Lines are `text.split("\\n")`, empty lines included (later datatrove versions drop empty lines,
which changes every ratio on pages with blank lines). Note the comparison directions, which are
datatrove's: the punctuation and short-line rules drop *at* the threshold (<=, >=), the duplicate
rule drops at >=, the newline rule drops strictly above (>). A threshold of null turns its rule
off (0 is a real threshold here).
"""
from __future__ import annotations

from pipelines.document import Document
from pipelines.quality.text_utils import document_words, find_duplicates
from pipelines.runner import Filter


class FineWebQualityFilter(Filter):
    name = "fineweb_quality"

    def __init__(self, line_punct_thr: float = 0.12, line_punct_exclude_zero: bool = False,
                 short_line_thr: float = 0.67, short_line_length: int = 30, char_duplicates_ratio: float = 0.01,
                 new_line_ratio: float = 0.3, stop_chars=(".", "'", '"', "!", "?")):
        self.line_punct_thr = line_punct_thr
        self.line_punct_exclude_zero = line_punct_exclude_zero
        self.short_line_thr = short_line_thr
        self.short_line_length = short_line_length
        self.char_duplicates_ratio = char_duplicates_ratio
        self.new_line_ratio = new_line_ratio
        self.stop_chars = tuple(stop_chars)

    def config(self) -> dict:
        return {"line_punct_thr": self.line_punct_thr, "line_punct_exclude_zero": self.line_punct_exclude_zero,
                "short_line_thr": self.short_line_thr, "short_line_length": self.short_line_length,
                "char_duplicates_ratio": self.char_duplicates_ratio, "new_line_ratio": self.new_line_ratio,
                "stop_chars": list(self.stop_chars)}

    def filter(self, doc: Document):
        text = doc.text
        lines = text.split("\n")

        # Lines are not stripped: a line ending in ". " does not count as punctuated (as in datatrove).
        ratio = sum(1 for line in lines if line.endswith(self.stop_chars)) / len(lines)
        if self.line_punct_thr is not None and ratio <= self.line_punct_thr and not (ratio == 0 and self.line_punct_exclude_zero):
            return False, "line_punct_ratio"

        ratio = sum(1 for line in lines if len(line) <= self.short_line_length) / len(lines)
        if self.short_line_thr is not None and ratio >= self.short_line_thr:
            return False, "short_line_ratio"

        non_empty = [line for line in lines if line.strip() != ""]
        n_chars = len(text) - text.count("\n")
        if self.char_duplicates_ratio is not None and n_chars and find_duplicates(non_empty)[1] / n_chars >= self.char_duplicates_ratio:
            return False, "char_dup_ratio"

        n_newlines = text.count("\n")
        if self.new_line_ratio is not None and n_newlines:
            # NLTK's tokenizer only splits the whitespace-separated tokens further (it pads and
            # never deletes a character), so n_words >= len(text.split()): a page under the ratio
            # by that count is under it by n_words, without tokenizing text that c4_lines rewrote
            n_split = len(text.split())
            if n_split and n_newlines / n_split <= self.new_line_ratio:
                return True
            n_words = len(document_words(doc))
            if n_words == 0 or n_newlines / n_words > self.new_line_ratio:
                return False, "list_ratio"
        return True
