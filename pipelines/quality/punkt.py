"""NLTK's Punkt sentence splitter with an untrained (empty) model, reimplemented exactly and fast.

`nltk.word_tokenize(text)` - what FineWeb's Gopher and FineWeb filters call - first splits the text
into sentences with `PunktTokenizer("english")`, then runs the Treebank rules on each sentence, so
where punkt puts a boundary decides whether a period becomes its own token. C4's sentence count is
the same splitter. Punkt's pretrained data cannot be downloaded here, and with an empty model
(what the minimal `punkt_tab` files give, see bench/vs_datatrove.py) its decisions reduce to a few
rules on the tokens around each candidate period; this module is that reduction, with the same
regular expressions as NLTK's `PunktLanguageVars` on the same `regex` engine (so `\\s`, `\\w`, `\\d`
mean what they mean in NLTK). tests/test_word_tokenizer.py checks sentence spans against
`PunktSentenceTokenizer().span_tokenize` and words against `nltk.word_tokenize`.

The untrained model (abbreviations, collocations, sentence starters and orthographic contexts all
empty) breaks after a candidate token unless:
- it ends in ".." (an ellipsis "..", "...", or a word such as "wait..") - no break;
- it is an initial ("J.") or a number ("3.", "1.5.") and the next token is lowercase or one of
  `; : , . ! ?` - no break; an initial followed by an uppercase token - no break either.
Pretrained English punkt (FineWeb's) also knew ~150 abbreviations ("Dr.", "e.g.", "U.S."); those are
not reproduced, see pipelines/quality/text_utils.py.
"""
from __future__ import annotations

import re
from pathlib import Path

import regex

# NLTK 3.10's PunktLanguageVars, verbatim (its character classes are the `regex` engine's)
_NON_WORD = r"(?:[)\";}\]\*:@\'\({\[\u2018\u2019\u201c\u201d\xab\xbb?!])"
_MULTI_CHAR = r"(?:\-{2,}|\.{2,}|(?:\.\s){2,}\.)"
_WORD_START = r"[^\(\"\`{\[:;&\#\*@\)}\]\-,]"
_WORDS = regex.compile(rf"""(
        {_MULTI_CHAR}
        |
        (?={_WORD_START})\S+?
        (?=
            \s|$|{_NON_WORD}|{_MULTI_CHAR}|,(?=$|\s|{_NON_WORD}|{_MULTI_CHAR})
        )
        |
        \S
    )""", regex.UNICODE | regex.VERBOSE)
_PERIOD_CONTEXT = regex.compile(rf"""
        [\.\?!]
        (?=(?P<after_tok>
            {_NON_WORD}
            |
            \s+(?P<next_tok>\S+)
        ))""", regex.UNICODE | regex.VERBOSE)
# the same pattern on the stdlib engine (faster): \s of `regex` is \s of `re` minus \x1c-\x1f
_PERIOD_CONTEXT_RE = re.compile(_PERIOD_CONTEXT.pattern.replace(r"\s+(?P", r"[^\S\x1c-\x1f]+(?P")
                                .replace(r"(?P<next_tok>\S+)", r"(?P<next_tok>[\S\x1c-\x1f]+)"), re.VERBOSE)
_REALIGN_FIRST = frozenset("\"')]}\u2018\u2019\u201c\u201d\xab\xbb")  # what _REALIGN can start with
_REALIGN = regex.compile(r'["\')\]}\u2018\u2019\u201c\u201d\xab\xbb]+?(?:\s+|(?=--)|$)', regex.MULTILINE)
_NUMERIC = regex.compile(r"^-?[\.,]?\d[\d,\.-]*\.?$")
_INITIAL = regex.compile(r"[^\W\d]\.$", regex.UNICODE)
_ORTHO_PUNCTUATION = frozenset(";:,.!?")
_SEPARATORS = regex.compile(r"[\x1c-\x1f]")
_ASCII_WHITESPACE = " \t\n\r\x0b\x0c"  # string.whitespace: what punkt looks back for


def _breaks_after(tok: str, nxt: str | None) -> bool:
    """Does the untrained model mark `tok` (followed by token `nxt`) as a sentence break?"""
    if tok in (".", "?", "!"):
        return True
    if not tok.endswith(".") or tok.endswith(".."):
        return False  # no period, or an ellipsis / "word.." (never a break)
    if nxt is None:
        return True
    typ = _NUMERIC.sub("##number##", tok.lower())
    if len(typ) > 1 and typ[-1] == ".":
        typ = typ[:-1]
    initial = _INITIAL.match(tok) is not None
    if initial or typ == "##number##":
        # orthographic heuristic with no orthographic data: "not a sentence starter" for
        # punctuation and lowercase words, "unknown" otherwise
        if nxt in _ORTHO_PUNCTUATION or nxt[0].islower():
            return False
        if initial and nxt[0].isupper():
            return False
    return True


def _context_has_break(context: str) -> bool:
    """PunktSentenceTokenizer.text_contains_sentbreak: a break before the context's last token."""
    tokens: list[str] = []
    for line in context.split("\n"):
        if line.strip():
            tokens += _WORDS.findall(line)
    last = len(tokens) - 1
    for i in range(last):
        if _breaks_after(tokens[i], tokens[i + 1]):
            return True
    return False


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """`PunktSentenceTokenizer().span_tokenize(text)` (untrained model, boundaries realigned)."""
    # \x1c-\x1f are not \s for `regex` but are whitespace for the str.strip that skips blank
    # lines: after them `after_tok` may give no token, so the shortcut below does not apply
    separators = _SEPARATORS.search(text) is not None
    spaces = [ch for ch in _ASCII_WHITESPACE if ch in text]
    slices = []
    last_break = 0
    # The candidates as PunktSentenceTokenizer._match_potential_end_contexts finds them: the word
    # before a match runs from the last ASCII whitespace (string.whitespace; one at the very start
    # of the gap counts as none, as in NLTK's _get_last_whitespace_index) after the previous
    # match; a match whose word would overlap the previous match's word replaces it. The context
    # NLTK tokenizes is the word + the match + its `after_tok`.
    prev_start = prev_stop = 0
    pending = None
    for match in [*_PERIOD_CONTEXT_RE.finditer(text), None]:
        start = match.start() if match is not None else len(text)
        found = max([text.rfind(ch, prev_stop, start) for ch in spaces], default=-1)
        word_start = found + 1 if found > prev_stop else prev_start
        if pending is not None and (match is None or prev_stop <= word_start) and \
                _breaks(text, pending, prev_start, separators):
            slices.append((last_break, prev_stop + 1))
            next_tok = pending.start("next_tok")
            last_break = next_tok if next_tok >= 0 else prev_stop + 1
        pending = match
        prev_start, prev_stop = word_start, start
    slices.append((last_break, len(text.rstrip())))
    if not any(text[start:start + 1] in _REALIGN_FIRST for start, _ in slices[1:]):
        return [(start, stop) for start, stop in slices if start < stop]
    # _realign_boundaries: closing quotes/brackets after a break belong to the sentence before
    spans = []
    realign = 0
    last = len(slices) - 1
    for i, (start, stop) in enumerate(slices):
        start += realign
        realign = 0
        if i < last:
            nxt, nxt_stop = slices[i + 1]
            m = _REALIGN.match(text, nxt, nxt_stop) if nxt < nxt_stop and text[nxt] in _REALIGN_FIRST else None
            if m:
                spans.append((start, nxt + len(m.group(0).rstrip())))
                realign = m.end() - nxt
                continue
        if start < stop:
            spans.append((start, stop))
    return spans


def _breaks(text: str, match, word_start: int, separators: bool) -> bool:
    """Does punkt break at candidate `match`, the word before it starting at `word_start`? The
    commonest cases need no tokenizing of the context: a "?" or "!" candidate is always a token of
    its own (the token before ends at it, `after_tok` ends it) and breaks; a word of 2+ ASCII
    letters + "." is one token that breaks; `after_tok` gives at least one more token."""
    start = match.start()
    word = text[word_start:start]
    if not separators and (text[start] != "." or (len(word) > 1 and word.isascii() and word.isalpha())):
        return True
    return _context_has_break(word + text[start] + match.group("after_tok"))


def sentences(text: str) -> list[str]:
    """`PunktSentenceTokenizer().tokenize(text)` (untrained model)."""
    return [text[a:b] for a, b in sentence_spans(text)]


PUNKT_TAB_FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")


def write_untrained_punkt_tab(nltk_data) -> Path:
    """The model this module reproduces, as files NLTK can load: `nltk_data/tokenizers/punkt_tab/
    english/` with the four tables NLTK >= 3.8.2 reads for `PunktTokenizer("english")` (what
    `nltk.word_tokenize` and `sent_tokenize` use) left empty, which loads as `PunktParameters()`.
    With `nltk_data` on `nltk.data.path` (or NLTK_DATA), NLTK then runs offline as our reference.
    Returns `nltk_data`."""
    lang_dir = Path(nltk_data) / "tokenizers" / "punkt_tab" / "english"
    lang_dir.mkdir(parents=True, exist_ok=True)
    for name in PUNKT_TAB_FILES:
        (lang_dir / name).touch()
    return Path(nltk_data)
