"""Context checks for the digit entities of pipelines/pii.py: numbers that read as a phone, card
or SSN but are something else, judged from the text around them.

phonenumbers (leniency "valid") accepts any digit string that fits a region's numbering plan, and
most 7-12 digit strings fit one of seven regions; Luhn passes one random number in ten. On real
web text (tests/data/pii_realweb_labelled.jsonl) most such hits were ISBNs, dates, rows of result
tables and case/order numbers, and rewriting them to a dummy phone corrupts the text. Each check
below names one of those families; `lookalike` returns the first that holds, or None.

All checks read at most one line around the candidate (a few hundred characters), with
precompiled regexes: they cost microseconds, against ~0.1-0.5 ms for one phonenumbers pass.
"""
from __future__ import annotations

import re

# ------------------------------------------------------------------ dates and times
# Every common order (Y-M-D, D-M-Y, M-D-Y) and separator (- . / and, for D M Y, a space), 2- or
# 4-digit years for D-M-Y/M-D-Y, compact YYYYMMDD, times, and lone years (ranges: 1998-2008).
_Y4 = r"(?:1[5-9]|20)\d\d"
_M = r"(?:0?[1-9]|1[0-2])"
_D = r"(?:0?[1-9]|[12]\d|3[01])"
_DATE_TOKEN = re.compile(
    rf"(?<!\d)(?:"
    rf"{_Y4}([-./])(?:{_M}\1{_D}|{_D}\1{_M})"                    # 2008-08-22, 2008/22/08
    rf"|(?:{_D}([-./ ]){_M}|{_M}([-./ ]){_D})(?:\2|\3)(?:{_Y4}|\d\d)"  # 22.08.2008, 08.22.2008, 08/22/08
    rf"|{_Y4}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"          # 20080822
    rf"|(?:[01]?\d|2[0-3])[:h.][0-5]\d(?::[0-5]\d)?"            # 10:30, 10:30:15, 10h30, 10.30
    rf"|{_Y4}"                                                   # 1998 (in 1998-2008, 2008/2009)
    rf"|(?<=\d{{4}} )(?:[01]?\d|2[0-3])(?= ?(?:UTC|GMT|Z|Uhr|h)\b)"  # the hour of "05.12.1972 00 UTC"
    rf")(?!\d)")

# ------------------------------------------------------------------ ISBN and other identifiers
_ISBN_WORD = re.compile(r"(?i)\bISBN(?:-?1[03])?\b")
_ISBN13 = re.compile(r"97[89](?:[- ]?\d){10}")

# The word labelling a number decides what it is. Read right to left from the number, skipping
# filler ("No.", "#", "number", "at", ...): a phone word keeps it, an identifier word rejects it.
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_FILLER = frozenset("""no nr nº n° num number numbers is are was at on us our to the a an of for by
    via under or and in with de du des la le el del der die das den zur zum unter au aux à a al""".split())
_PHONE_WORDS = frozenset("""tel tele telephone telephones phone phones fon fone ph call calls calling ring dial
    fax faxes mobile mobil mob cell cellphone handy hotline helpline whatsapp signal sms text txt
    contact contacts telefon telefono teléfono téléphone tél telefone numéro rufen anrufen
    appelez appeler llame llamar office toll free freephone""".split())
_ID_WORDS = frozenset("""isbn issn isbns doi pmid pmcid oclc lccn asin ean upc gtin arxiv case cases
    docket dkt patent patents pat application appl publication pub order orders invoice inv ref
    reference serial ser item sku model part lot batch tracking receipt transaction txn ticket
    claim policy registration reg permit license licence account acct customer member id ids
    catalog catalogue cat file report bill contract grant award project document doc record version
    build release vol volume page pp edition ed code zip postcode plz cv cr civ crim appeal
    action judgment decision resolution act law statute regulation bulletin bug bugs issue issues pr
    cve pmc jvndb kb az gz aktenzeichen geschäftszeichen bvr""".split())

_URLISH_BEFORE = frozenset("/=?&#_")
_DECIMAL = re.compile(r"[1-9]\d{0,2}[.,]\d{5,}")  # 3.3887451818; national phones start with 0
# a number glued to the word before it by one of these is the tail of a token (doi:10.1073/pnas.
# 0801507105, JVNDB-2018-013542, a file name); not ":" ("Tel:0471 ...")
_GLUE = frozenset("._-")


def _line(text: str, start: int, end: int, reach: int = 200) -> tuple[int, int]:
    """The candidate's line, at most `reach` characters each side (a page can be one line)."""
    lo = text.rfind("\n", max(0, start - reach), start) + 1 or max(0, start - reach)
    hi = text.find("\n", end, end + reach)
    return lo, min(len(text), end + reach) if hi < 0 else hi


def label_word(text: str, start: int, line_start: int, reach: int = 40) -> str | None:
    """'phone', 'identifier' or None: the nearest non-filler word before the number."""
    for word in reversed(_WORD.findall(text, max(line_start, start - reach), start)):
        word = word.lower()
        if word in _FILLER:
            continue
        if word in _PHONE_WORDS:
            return "phone"
        if word in _ID_WORDS:
            return "identifier"
        return None
    return None


def _covered_by(pattern: re.Pattern, text: str, start: int, end: int, lo: int, hi: int) -> bool:
    """Whether every digit of text[start:end] lies in a match of `pattern` on text[lo:hi]."""
    spans = [m.span() for m in pattern.finditer(text, lo, hi) if m.start() < end and m.end() > start]
    return bool(spans) and all(any(s <= i < e for s, e in spans)
                               for i in range(start, end) if text[i].isdigit())


# ------------------------------------------------------------------ runs of numbers (tables)
_NUMBER = re.compile(r"\d+")
_SEP = r"[ \t.,;:|/()+\-–−%=×*]"
_RUN_BEFORE = re.compile(rf"(?:\d+{_SEP}+)+$")
_RUN_AFTER = re.compile(rf"(?:{_SEP}+\d+)+")


def _number_run(text: str, start: int, end: int, lo: int, hi: int) -> bool:
    """The candidate is a run of small numbers, or one stretch of a longer run: a row of a
    results table ("Arsenal 38 26 9 3 73 26 47 87"), lottery numbers, scores, a sum. Separators alone
    (no word) join it to a number on each side, or, when its own groups are short (at most 3
    digits; phones have longer ones), to two more numbers on its line."""
    groups = _NUMBER.findall(text, start, end)
    if len(groups) >= 5 and max(map(len, groups)) <= 2 and not groups[0].startswith("0") \
            and "+" not in text[max(0, start - 1):end]:
        # itself a run: "4 8 15 16 23 42", "6-4 3-6 7-6"; phones in groups of two start with a
        # trunk 0 ("01 42 68 53 00") or a + ("+33 6 12 34 56 78")
        return True
    before = _RUN_BEFORE.search(text, max(lo, start - 64), start)
    after = _RUN_AFTER.match(text, end, min(hi, end + 64))
    if before and after:  # a term between two others: "(26821559 – 92499–26033 – 19216)"
        return True
    if max(map(len, groups), default=9) > 3:
        return False
    return len(_NUMBER.findall(before.group() if before else "")) + len(
        _NUMBER.findall(after.group() if after else "")) >= 2


def _isbn10_beside_isbn13(text: str, start: int, end: int) -> bool:
    """An ISBN-10 written next to its ISBN-13 ("9781395694142 1395694141") needs no label."""
    digits = text[start:end]
    if len(digits) != 10 or not digits[:9].isdigit():
        return False
    return f"978{digits[:9]}" in text[max(0, start - 24):start]


def lookalike(text: str, start: int, end: int, entity: str = "PHONE_NUMBER") -> str | None:
    """Why text[start:end], read as an `entity` number, is something else; None if nothing
    says so. Reasons: 'isbn', 'date', 'identifier', 'decimal', 'url', 'number_run',
    'long_number'."""
    lo, hi = _line(text, start, end)
    wlo, whi = max(lo, start - 24), min(hi, end + 24)
    label = label_word(text, start, lo)
    if _ISBN_WORD.search(text, max(lo, start - 48), start) and label != "phone":
        return "isbn"
    if _ISBN13.fullmatch(text, start, end) or _isbn10_beside_isbn13(text, start, end):
        return "isbn"
    if _covered_by(_DATE_TOKEN, text, start, end, wlo, whi):
        return "date"
    if label == "identifier" or text.count("/", start, end) >= 2:  # 757/21651/24: a file number
        return "identifier"
    if _DECIMAL.fullmatch(text, start, end) and text[start - 1:start] != "+":
        return "decimal"
    if start > 1 and text[start - 1] in ".," and text[start - 2].isdigit():
        return "decimal"  # the fraction of 3.0822070014844882 or 2,7182818284
    if start > 1 and text[start - 1] in _GLUE and text[start - 2].isalnum():
        return "identifier"  # the tail of a token: pnas.0801507105, JVNDB-2018-013542
    if start > 0 and text[start - 1] in _URLISH_BEFORE or end < len(text) and text[end] == "/" and label != "phone":
        return "url"
    if label != "phone" and _number_run(text, start, end, lo, hi):
        return "number_run"
    if (entity == "PHONE_NUMBER" and label != "phone" and end - start >= 12 and text[start:end].isdigit()
            and not text.startswith("00", start) and text[start - 1:start] != "+"):
        # 12+ digits in one block, national form, no phone word: a tax or customer id, a
        # barcode; people write phone numbers in groups, or with + when in one block
        return "long_number"
    return None


# ------------------------------------------------------------------ payment cards
# Issuer identification numbers (ISO/IEC 7812 IIN ranges as the networks publish them) and the
# lengths each issues: (first digits from, to, lengths). A number counts as a card only when its
# length fits a network whose range holds its prefix, and its Luhn digit is right.
_CARD_RANGES = [
    ("visa", "4", "4", (13, 16, 19)),
    ("mastercard", "51", "55", (16,)), ("mastercard", "2221", "2720", (16,)),
    ("amex", "34", "34", (15,)), ("amex", "37", "37", (15,)),
    ("discover", "6011", "6011", (16, 17, 18, 19)), ("discover", "644", "649", (16, 17, 18, 19)),
    ("discover", "65", "65", (16, 17, 18, 19)),
    ("jcb", "3528", "3589", (16, 17, 18, 19)), ("jcb", "2131", "2131", (15,)), ("jcb", "1800", "1800", (15,)),
    ("diners", "300", "305", (14, 15, 16, 17, 18, 19)), ("diners", "3095", "3095", (14, 15, 16, 17, 18, 19)),
    ("diners", "36", "36", (14, 15, 16, 17, 18, 19)), ("diners", "38", "39", (14, 15, 16, 17, 18, 19)),
    ("unionpay", "62", "62", (16, 17, 18, 19)),
    ("maestro", "50", "50", tuple(range(12, 20))), ("maestro", "56", "69", tuple(range(12, 20))),
    ("mir", "2200", "2204", (16, 17, 18, 19)),
    ("rupay", "60", "60", (16,)), ("rupay", "81", "82", (16,)), ("rupay", "508", "508", (16,)),
]


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def card_network(digits: str) -> str | None:
    """The network whose IIN range and lengths fit `digits` (Luhn-valid), else None."""
    if not 12 <= len(digits) <= 19 or not digits.isdigit() or not luhn_ok(digits):
        return None
    for name, lo, hi, lengths in _CARD_RANGES:
        if len(digits) in lengths and lo <= digits[:len(lo)] <= hi:
            return name
    return None
