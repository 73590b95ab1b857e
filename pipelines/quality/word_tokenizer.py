"""FineWeb's word tokenizer (`nltk.word_tokenize` semantics) on the stdlib `re` engine.

`words_of(text)` is punkt's sentences (pipelines/quality/punkt.py, the untrained model) with the
NLTKWordTokenizer rules below run on each; see pipelines/quality/text_utils.py for how that relates
to FineWeb, and tests/test_word_tokenizer.py for the token-for-token checks against NLTK.
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from pipelines.quality.punkt import sentence_spans

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
        if text.endswith((":", ",", ":\n", ",\n")):  # where "([:,])$" can match (no copy elsewhere)
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
    # (NLTK pads the text with a space at each end first; only the clitic and contraction rules
    # below see them, so they are added there, with the whitespace normalisation)
    text = _pad(text, "»”’")
    if "''" in text:
        text = text.replace("''", " '' ")
    if '"' in text:
        text = text.replace('"', " '' ")
    contractions = _contraction_patterns(text)
    if "'" in text or contractions:
        # whitespace only matters to the clitic and contraction rules
        if "\x1c" in text or "\x1d" in text or "\x1e" in text or "\x1f" in text:
            text = _SPACES.sub(" ", " " + text + " ")
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


def words_of(text: str) -> tuple[str, ...]:
    """Words as FineWeb's `nltk.word_tokenize` gives them (see the module docstring), as a tuple:
    punkt's sentences (pipelines/quality/punkt.py), then the Treebank rules on each sentence.

    The quality filters share one tokenization per document through
    pipelines.quality.text_utils.document_words (the runner runs each stage over a batch of
    documents, so a cache of the last few texts would miss).
    """
    out: list[str] = []
    pieces: list[str] = []  # the current run of sentences tokenized together (see _joins_cleanly)
    pos = prev_end = -1
    for start, end in sentence_spans(text):
        if prev_end < 0 or not _joins_cleanly(text, prev_end, start):
            if prev_end >= 0:
                out += _nltk_word_tokenize("".join(pieces) + text[pos:prev_end])
            pieces, pos = [], start
        elif text[prev_end - 1] == ".":  # split off the final period of the sentence before
            pieces += (text[pos:prev_end - 1], " .")
            pos = prev_end
        prev_end = end
    if prev_end >= 0:
        out += _nltk_word_tokenize("".join(pieces) + text[pos:prev_end])
    return tuple(out)


# What may come before the final . ? ! of a sentence that is tokenized together with the next one
_CLEAN_BEFORE_END = frozenset(")]}%_")


def _joins_cleanly(text: str, end: int, following: int) -> bool:
    """Can the sentence ending at `end` and the one starting at `following` (whitespace between
    them) be tokenized as one text, the final period of the first split off, with the tokens of the
    two tokenized apart? Yes when the first ends in a letter, digit or one of ) ] } % _ + one of
    . ? ! and the next starts with a letter or a digit: then no Treebank rule sees anything across
    the whitespace between them, and the only rule anchored at a sentence end that changes a token
    there is the final-period split. Anything else (quotes, brackets, realigned punctuation, "..")
    is tokenized sentence by sentence, as NLTK does. One call per run of sentences instead of one
    per sentence is ~3x faster."""
    if end < 2 or text[end - 1] not in ".?!":
        return False
    before = text[end - 2]
    return (before.isalnum() or before in _CLEAN_BEFORE_END) and text[following].isalnum()


def word_tokenize(text: str) -> list[str]:
    """Words as FineWeb's `nltk.word_tokenize` gives them (see the module docstring)."""
    return list(words_of(text))
