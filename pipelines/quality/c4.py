"""C4 quality rules as FineWeb used them, split into an explicit line cleaner and a document filter.

datatrove's C4QualityFilter walks the lines of a page once, removes some lines, drops the whole page
on others, and - only if the page is kept - rewrites doc.text to the kept lines. Here that is two
stages, so that the rewrite is visible (and counted) instead of hidden inside a filter:

- `c4_lines` (C4LineCleaner) rewrites the text to the lines datatrove would keep and counts the
  removed lines per reason (`lines_removed_<reason>`); it never drops a document;
- `c4_quality` (C4QualityFilter) makes the page-level decisions on the cleaned text:
  `lorem_ipsum`, `curly_bracket`, `too_few_sentences`.

To give the *same* page-level decisions (and reasons) as datatrove with
filter_no_terminal_punct=False, the cleaner reproduces datatrove's per-line order of checks:

    strip; words = line.split()          (words are counted before citations are removed)
    a word longer than max_word_length   -> remove line
    remove citation markers [1] [edit] [citation needed]
    no terminal punctuation (if enabled) -> remove line
    fewer than min_words_per_line words  -> remove line
    "lorem ipsum" (any case)             -> page dropped   => the cleaner KEEPS the line
    "javascript" (any case)              -> remove line
    "{"                                  -> page dropped   => the cleaner KEEPS the line
    a cookie/terms phrase (any case)     -> remove line

A line that datatrove would drop the page for is kept by the cleaner even when a later line rule
(javascript after lorem ipsum, policy after "{") would have removed it, because datatrove never
reaches those rules for it. The filter then scans the kept lines in order (lorem ipsum before "{"
within a line), so the first offending line decides the reason, exactly as in datatrove; a "lorem
ipsum" on a line that datatrove had already removed (e.g. a two-word line) does not drop the page.
Sentences are counted on the kept lines with an untrained punkt tokenizer (see text_utils).
"""
from __future__ import annotations

import re
from collections import Counter

from pipelines.document import Document
from pipelines.quality.text_utils import split_sentences
from pipelines.runner import Filter, Stage

CITATION_RE = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
END_PUNCTUATION = (".", "?", "!", '"', "'")
POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies",
                     "use cookies")


class _C4Settings:
    """Both C4 stages take the whole `c4` config section and use the keys they need."""

    def __init__(self, max_word_length: int = 1000, min_words_per_line: int = 3, min_num_sentences: int = 5,
                 remove_citations: bool = True, filter_no_terminal_punct: bool = False,
                 filter_lorem_ipsum: bool = True, filter_javascript: bool = True,
                 filter_curly_bracket: bool = True, filter_policy: bool = True):
        self.max_word_length = max_word_length
        self.min_words_per_line = min_words_per_line
        self.min_num_sentences = min_num_sentences
        self.remove_citations = remove_citations
        self.filter_no_terminal_punct = filter_no_terminal_punct
        self.filter_lorem_ipsum = filter_lorem_ipsum
        self.filter_javascript = filter_javascript
        self.filter_curly_bracket = filter_curly_bracket
        self.filter_policy = filter_policy

    def config(self) -> dict:
        return {k: getattr(self, k) for k in (
            "max_word_length", "min_words_per_line", "min_num_sentences", "remove_citations",
            "filter_no_terminal_punct", "filter_lorem_ipsum", "filter_javascript", "filter_curly_bracket",
            "filter_policy")}


class C4LineCleaner(_C4Settings, Stage):
    name = "c4_lines"

    def clean(self, text: str) -> tuple[str, Counter]:
        """(text made of the kept lines, removed-line counts per reason)."""
        removed: Counter = Counter()
        kept: list[str] = []
        for line in text.splitlines():
            line = line.strip()
            words = line.split()
            # -1 (datatrove) or null/0 turn a line rule off; a word is no longer than its line
            if self.max_word_length and 0 < self.max_word_length < len(line) and \
                    max(map(len, words), default=0) > self.max_word_length:
                removed["too_long_word"] += 1
                continue
            if self.remove_citations and "[" in line:  # every citation marker starts with "["
                line = CITATION_RE.sub("", line)
            if self.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith("...")):
                removed["no_terminal_punct"] += 1
                continue
            if self.min_words_per_line and len(words) < self.min_words_per_line:
                removed["too_few_words"] += 1
                continue
            lower = line.lower()
            if self.filter_lorem_ipsum and "lorem ipsum" in lower:
                kept.append(line)  # the page will be dropped by c4_quality; keep the evidence
                continue
            if self.filter_javascript and "javascript" in lower:
                removed["javascript"] += 1
                continue
            if self.filter_curly_bracket and "{" in line:
                kept.append(line)  # as above: datatrove drops the page before its policy rule
                continue
            if self.filter_policy and any(p in lower for p in POLICY_SUBSTRINGS):
                removed["policy"] += 1
                continue
            kept.append(line)
        return "\n".join(kept).strip(), removed

    def process(self, docs, ctx):
        for doc in docs:
            doc.text, removed = self.clean(doc.text)
            for reason, n in removed.items():
                ctx.count(f"lines_removed_{reason}", n)
            yield doc


class C4QualityFilter(_C4Settings, Filter):
    """Page-level C4 rules; expects text already cleaned by `c4_lines`."""

    name = "c4_quality"

    def filter(self, doc: Document):
        n_sentences = 0
        count_sentences = self.min_num_sentences is not None and self.min_num_sentences > 0
        lines = doc.text.splitlines()
        if count_sentences and sum(1 for line in lines if line.strip()) >= self.min_num_sentences:
            count_sentences = False  # every non-blank line holds a sentence: the minimum is met
        for line in lines:
            if self.filter_lorem_ipsum and "lorem ipsum" in line.lower():
                return False, "lorem_ipsum"
            if self.filter_curly_bracket and "{" in line:
                return False, "curly_bracket"
            # punkt is slow (~0.3 MB/s); once the minimum is reached the count cannot change the
            # decision, so only the cheap lorem/curly scans continue
            if count_sentences and n_sentences < self.min_num_sentences:
                n_sentences += len(split_sentences(line))
        if count_sentences and n_sentences < self.min_num_sentences:
            return False, "too_few_sentences"
        return True
