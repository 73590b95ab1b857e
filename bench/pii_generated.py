"""The generated labelled set of bench/pii_recall.py (presidio-research style): PII values in
varied formats, each in a sentence with its span labelled, ~3 KB documents made of them, and
look-alike sentences that hold no PII. Its formats and contexts are its own, made apart from
pipelines/pii.py and pipelines/samplecrawl/pii.py; bench/pii_recall.py's docstring lists them."""
from __future__ import annotations

import ipaddress
import random
import string
from dataclasses import dataclass, field

TYPES = ("PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "EMAIL_ADDRESS", "IP_ADDRESS")


@dataclass
class Sample:
    text: str
    spans: list = field(default_factory=list)  # (start, end, entity type)


# ---------------------------------------------------------------- values

def _digits(rng, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _group(s: str, sizes, sep: str) -> str:
    out, i = [], 0
    for n in sizes:
        out.append(s[i:i + n])
        i += n
    return sep.join(out)


US_AREAS = ["212", "213", "305", "312", "415", "512", "617", "646", "702", "713", "206", "404", "503", "602", "718"]


def us_phone(rng) -> str:
    area, exchange, line = rng.choice(US_AREAS), str(rng.randint(201, 989)), _digits(rng, 4)
    if exchange[1:] == "11" or exchange == "555":
        exchange = "234"
    return rng.choice([f"({area}) {exchange}-{line}", f"{area}-{exchange}-{line}", f"{area}.{exchange}.{line}",
                       f"+1 {area} {exchange} {line}", f"+1-{area}-{exchange}-{line}", f"+1 ({area}) {exchange}-{line}",
                       f"1-{area}-{exchange}-{line}", f"{area} {exchange} {line}", f"({area}){exchange}-{line}",
                       f"{area}/{exchange}-{line}", f"+1.{area}.{exchange}.{line}", f"+1{area}{exchange}{line}",
                       f"1 ({area}) {exchange} {line}", f"{area}{exchange}{line}"])


def gb_phone(rng) -> str:
    kind = rng.randrange(3)
    if kind == 0:  # London 020 3xxx / 7xxx / 8xxx xxxx
        rest = rng.choice("378") + _digits(rng, 3), _digits(rng, 4)
        return rng.choice([f"020 {rest[0]} {rest[1]}", f"+44 20 {rest[0]} {rest[1]}", f"+44 (0)20 {rest[0]} {rest[1]}",
                           f"(020) {rest[0]} {rest[1]}", f"0044 20 {rest[0]} {rest[1]}", f"+44 (0) 20 {rest[0]} {rest[1]}",
                           f"020-{rest[0]}-{rest[1]}", f"+442{0}{rest[0]}{rest[1]}", f"020{rest[0]}{rest[1]}"])
    if kind == 1:  # mobile 07[4-9]xx xxxxxx
        a, b = "7" + rng.choice("45789") + _digits(rng, 2), _digits(rng, 6)
        return rng.choice([f"0{a} {b}", f"+44 {a} {b}", f"+44 (0){a} {b}", f"0{a}-{b}", f"0{a}{b}"])
    a, b = rng.choice(["161", "121", "131", "113", "117"]), _digits(rng, 3) + " " + _digits(rng, 4)
    b = str(rng.randint(2, 9)) + b[1:]
    return rng.choice([f"0{a} {b}", f"+44 {a} {b}", f"(0{a}) {b}"])


def de_phone(rng) -> str:
    kind = rng.randrange(3)
    if kind == 0:  # Berlin / Munich / Hamburg, 7-8 digit subscriber
        area = rng.choice(["30", "89", "40", "69", "221"])
        sub = str(rng.randint(2, 9)) + _digits(rng, rng.choice([6, 7]))
        return rng.choice([f"0{area} {sub}", f"0{area}/{sub}", f"(0{area}) {sub}", f"+49 {area} {sub}",
                           f"+49 (0){area} {sub}", f"+49-{area}-{sub}", f"0{area}-{sub[:3]} {sub[3:]}",
                           f"+49 (0) {area} {sub}", f"0049 {area} {sub}", f"0{area} - {sub}", f"0{area} / {sub}",
                           f"+49 {area} {sub[:3]} {sub[3:]}", f"0{area}{sub}"])
    if kind == 1:  # mobile 015x / 016x / 017x
        pre = rng.choice(["151", "152", "160", "170", "171", "172", "176"])
        sub = _digits(rng, 8 if pre[:2] in ("15", "17") and pre != "170" else 7)
        return rng.choice([f"0{pre} {sub}", f"+49 {pre} {sub}", f"0{pre}/{sub}", f"0{pre}-{sub}", f"+49{pre}{sub}"])
    sub = str(rng.randint(2, 9)) + _digits(rng, 5)
    return rng.choice([f"0711 {sub}", f"+49 711 {sub}", f"0711/{sub}"])


def fr_phone(rng) -> str:
    first = rng.choice("1234567")
    pairs = [_digits(rng, 2) for _ in range(4)]
    if first in "67":
        pairs[0] = str(rng.randint(1, 9)) + pairs[0][1]
    return rng.choice([f"0{first} " + " ".join(pairs), f"0{first}." + ".".join(pairs), f"0{first}-" + "-".join(pairs),
                       f"+33 {first} " + " ".join(pairs), f"+33 (0){first} " + " ".join(pairs),
                       f"+33{first}" + "".join(pairs), f"0{first}" + "".join(pairs), f"0033 {first} " + " ".join(pairs),
                       f"+33 (0) {first} " + " ".join(pairs), f"+33 {first}." + ".".join(pairs),
                       f"(0{first}) " + " ".join(pairs)])


def luhn_complete(prefix: str, length: int, rng) -> str:
    body = prefix + _digits(rng, length - len(prefix) - 1)
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return body + str((10 - total % 10) % 10)


# network: (IIN prefixes, lengths issued); every network and length a card can have
CARD_NETWORKS = {
    "visa": (["4"], [13, 16, 19]), "mastercard": ([str(p) for p in range(51, 56)], [16]),
    "mastercard-2": ([str(p) for p in range(2221, 2721, 37)], [16]), "amex": (["34", "37"], [15]),
    "discover": (["6011", "644", "649", "65"], [16, 19]), "jcb": (["3528", "3566", "3589"], [16, 19]),
    "jcb-15": (["2131", "1800"], [15]), "diners": (["300", "305", "36", "38"], [14]),
    "maestro": (["5018", "5020", "5038", "6304", "6759", "6761", "6763"], [12, 13, 15, 16, 18, 19]),
    "unionpay": (["62"], [16, 17, 18, 19]), "mir": (["2200", "2204"], [16]),
}
CARD_GROUPS = {12: [(4, 4, 4)], 13: [(4, 4, 5)], 14: [(4, 6, 4)], 15: [(4, 6, 5), (4, 4, 4, 3)],
               16: [(4, 4, 4, 4)], 17: [(4, 4, 4, 5)], 18: [(4, 4, 4, 6)], 19: [(4, 4, 4, 4, 3), (6, 13)]}


def card(rng) -> str:
    prefixes, lengths = CARD_NETWORKS[rng.choice(sorted(CARD_NETWORKS))]
    length = rng.choice(lengths)
    number = luhn_complete(rng.choice(prefixes), length, rng)
    groups = rng.choice(CARD_GROUPS[length])
    return rng.choice([number, _group(number, groups, " "), _group(number, groups, "-")])


# International numbers: phonenumbers' example number per region and type, its subscriber digits
# randomised until the number is valid again, written as people write them.
INTL_REGIONS = ["JP", "AU", "IT", "ES", "NL", "CN", "RU", "IN", "BR", "IL", "MX", "ZA", "SE", "CH", "PL",
                "KR", "SG", "IE", "AT", "BE", "US", "GB", "DE", "FR"]


def intl_phone(rng) -> str:
    import phonenumbers as pn
    region = rng.choice(INTL_REGIONS)
    kind = rng.choice([pn.PhoneNumberType.MOBILE, pn.PhoneNumberType.FIXED_LINE])
    example = pn.example_number_for_type(region, kind)
    national = str(example.national_number)
    for _ in range(50):
        number = pn.parse(f"+{example.country_code}{national[:-4]}{_digits(rng, 4)}")
        if pn.is_valid_number(number):
            break
    else:
        number = example
    intl = pn.format_number(number, pn.PhoneNumberFormat.INTERNATIONAL)   # +81 90-1234-5678
    cc, rest = intl.split(" ", 1)
    digits = rest.replace(" ", "").replace("-", "")
    return rng.choice([intl, pn.format_number(number, pn.PhoneNumberFormat.E164), f"{cc} {digits}",
                       f"{cc}-{rest.replace(' ', '-')}", f"{cc}.{rest.replace(' ', '.').replace('-', '.')}",
                       f"({cc}) {rest}", f"00{cc[1:]} {rest}", f"{cc} {rest.replace('-', ' ')}"])


def ssn(rng) -> str:
    while True:
        area = rng.randint(1, 899)
        if area != 666:
            break
    digits = f"{area:03d}{rng.randint(1, 99):02d}{rng.randint(1, 9999):04d}"
    if len(set(digits)) == 1 or digits in ("123456789", "987654320", "078051120"):
        digits = "219099999"
    return rng.choice([_group(digits, (3, 2, 4), "-"), _group(digits, (3, 2, 4), " "), _group(digits, (3, 2, 4), "."),
                       digits])


# country: (length, BBAN layout: n = digits, a = upper letters, c = alphanumeric)
IBAN_LAYOUTS = {"DE": "8n10n", "GB": "4a6n8n", "FR": "5n5n11c2n", "ES": "4n4n1n1n10n", "NL": "4a10n",
                "IT": "1a5n5n12c", "BE": "3n7n2n", "CH": "5n12c"}


def _bban(layout: str, rng) -> str:
    out, num = [], ""
    for ch in layout:
        if ch.isdigit():
            num += ch
            continue
        pool = {"n": string.digits, "a": string.ascii_uppercase, "c": string.digits + string.ascii_uppercase}[ch]
        out.append("".join(rng.choice(pool) for _ in range(int(num))))
        num = ""
    return "".join(out)


def iban(rng) -> str:
    country = rng.choice(sorted(IBAN_LAYOUTS))
    bban = _bban(IBAN_LAYOUTS[country], rng)
    numeric = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    check = 98 - int(numeric) % 97
    value = f"{country}{check:02d}{bban}"
    return rng.choice([value, " ".join(value[i:i + 4] for i in range(0, len(value), 4))])


FIRST = ["anna", "li", "marco", "sofia", "j", "oliver", "chen", "fatima", "noah", "élise", "kofi", "mia"]
LAST = ["schmidt", "nguyen", "okafor", "rossi", "martin", "kowalski", "haddad", "smith", "tanaka", "dubois"]
DOMAINS = ["gmail.com", "outlook.de", "mail.example.org", "uni-bonn.de", "sales.acme.co.uk", "orange.fr",
           "startup.io", "dept.cs.university.edu", "web.de", "posteo.net", "city.gov.uk"]


def email(rng) -> str:
    first, last = rng.choice(FIRST).replace("é", "e"), rng.choice(LAST)
    local = rng.choice([f"{first}.{last}", f"{first}{last}{rng.randint(1, 99)}", f"{first[0]}{last}",
                        f"{first}+{rng.choice(['news', 'shop', 'x'])}", f"{last}-{first}", f"{first}_{last}",
                        "info", "contact", "no-reply"])
    return f"{local}@{rng.choice(DOMAINS)}"


def ipv4(rng) -> str:
    while True:
        ip = ipaddress.IPv4Address(rng.getrandbits(32))
        if ip.is_global and not ip.is_multicast:
            return str(ip)


def ipv6(rng) -> str:
    prefix = rng.choice([0x2001_4860, 0x2a00_1450, 0x2606_4700, 0x2a03_2880, 0x2604_a880, 0x2400_cb00])
    ip = ipaddress.IPv6Address((prefix << 96) | rng.getrandbits(64) | (rng.getrandbits(16) << 64))
    return ip.exploded if rng.random() < 0.3 else str(ip)


VALUES = {
    "PHONE_NUMBER": lambda rng: rng.choice([us_phone, gb_phone, de_phone, fr_phone, intl_phone])(rng),
    "CREDIT_CARD": card, "US_SSN": ssn, "IBAN_CODE": iban, "EMAIL_ADDRESS": email,
    "IP_ADDRESS": lambda rng: ipv4(rng) if rng.random() < 0.7 else ipv6(rng),
}

# ---------------------------------------------------------------- contexts

CONTEXTS = {
    "PHONE_NUMBER": ["Call the front desk on {} between nine and five.", "Tel.: {}", "For bookings ring {} or write to us.",
                     "My mobile number is {}, text me when you land.", "Fax {} (accounts department)",
                     "Hotline: {} - open every day.", "The clinic can be reached at {}.", "Phone {}; ask for Maria.",
                     "Bei Fragen erreichen Sie uns unter {}.", "Appelez le {} pour un rendez-vous.",
                     "Office ({}) closed on Mondays.", "{} - that's the number for the box office.",
                     "WhatsApp/Signal: {}", "tel:{}", "Or simply dial {}!"],
    "CREDIT_CARD": ["Charged to card {} on the 3rd.", "Card number: {}", "I paid with {} and never got the order.",
                    "Please refund {} (expires 04/29).", "The stolen card {} was blocked."],
    "US_SSN": ["SSN: {}", "His social security number is {}.", "Enter your SSN ({}) on line 4.",
               "Employee record: Jane Roe, SSN {}, hired 2019.", "social security no. {}"],
    "IBAN_CODE": ["Transfer the deposit to IBAN {} before Friday.", "IBAN: {}", "Bank details: {} (BIC on request).",
                  "Refunds go to account {}.", "Zahlung bitte auf {} überweisen."],
    "EMAIL_ADDRESS": ["Write to {} for a quote.", "Contact: <{}>", "Send the files to mailto:{} today.",
                      "Questions ({}) are welcome.", "E-mail {}, or use the form."],
    "IP_ADDRESS": ["The request came from {} at 02:14.", "Blocked host {} after ten failed logins.",
                   "Server IP: {}", "ping {} returned in 12 ms.", "Connect to [{}]:8080 for the admin panel."],
}

PROSE = ("The town council met on Tuesday to discuss the new library and the budget for next year. "
         "Several residents asked about the opening hours, and the mayor promised an answer within a month. "
         "Work on the bridge will start in the spring if the weather allows it. "
         "A local bakery has won a prize for its rye bread, which it has baked the same way since 1952. ")


def labelled_samples(per_type: int = 300, seed: int = 0) -> list[Sample]:
    """`per_type` sentences per entity type, each with one labelled value."""
    rng = random.Random(f"pii-recall-{seed}")
    samples = []
    for entity in TYPES:
        for _ in range(per_type):
            value = VALUES[entity](rng)
            template = rng.choice(CONTEXTS[entity])
            head = template.split("{}")[0]
            text = template.format(value)
            samples.append(Sample(text, [(len(head), len(head) + len(value), entity)]))
    rng.shuffle(samples)
    return samples


def documents(samples: list[Sample], n_docs: int, seed: int = 0) -> list[Sample]:
    """~3 KB documents: prose with a few labelled sentences spliced in (spans shifted)."""
    rng = random.Random(f"pii-docs-{seed}")
    docs = []
    for i in range(n_docs):
        parts, spans, pos = [], [], 0
        for k in range(8):
            piece = PROSE if k % 2 == 0 else samples[(i * 4 + k // 2) % len(samples)]
            if isinstance(piece, Sample):
                spans += [(s + pos, e + pos, t) for s, e, t in piece.spans]
                piece = piece.text + " "
            parts.append(piece)
            pos += len(piece)
        docs.append(Sample("".join(parts), spans))
    rng.shuffle(docs)
    return docs


# numbers that are none of the types above: what a scrubber should leave alone
LOOKALIKES = [
    lambda rng: f"Our office is at 1200 Main Street, Springfield, IL {rng.randint(60000, 62999)}-{rng.randint(1000, 9999)}.",
    lambda rng: f"Order #{rng.randint(100000000, 999999999)} has shipped.",
    lambda rng: f"Tracking number {rng.randint(100000000, 999999999)}{rng.randint(100, 999)} (parcel).",
    lambda rng: f"Posted on {rng.randint(2001, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} at 10:{rng.randint(10, 59)}.",
    lambda rng: f"ISBN 978-{rng.randint(0, 1)}-{rng.randint(100, 999)}-{rng.randint(10000, 99999)}-{rng.randint(0, 9)}",
    lambda rng: f"The population grew to {rng.randint(1, 9)},{rng.randint(100, 999)},{rng.randint(100, 999)} in 2020.",
    lambda rng: f"Version {rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 99)} fixes the bug.",
    lambda rng: f"Invoice {rng.randint(10000, 99999)}-{rng.randint(1000, 9999)} is due.",
    lambda rng: f"Pi is about 3.{rng.randint(10**9, 10**10 - 1)}.",
    # the look-alikes of real web text (issue 26): ISBN-10/13 after "ISBN", dates in every order
    # and separator, result-table rows, case / docket / patent numbers
    lambda rng: f"Smith J. Clinical Anatomy. ISBN {_isbn10(rng, rng.choice(['', '-']))}.",
    lambda rng: f"Reprinted 2004 (ISBN-13: {_isbn13(rng, rng.choice(['', '-']))}).",
    lambda rng: f"Event date: {rng.randint(1, 12):02d}.{rng.randint(13, 31)}.{rng.randint(1990, 2024)}, doors at 7.",
    lambda rng: (f"Updated {rng.randint(13, 31)}/{rng.randint(1, 12):02d}/{rng.randint(1990, 2024)} "
                 f"{rng.randint(0, 23)}:{rng.randint(10, 59)}"),
    lambda rng: f"Season {rng.randint(1990, 2010)}-{rng.randint(2011, 2024)} summary.",
    lambda rng: "Arsenal " + " ".join(str(rng.randint(0, 99)) for _ in range(8)),
    lambda rng: "Results: " + " | ".join(f"{rng.randint(0, 9)}-{rng.randint(0, 9)}" for _ in range(5)),
    lambda rng: f"Case No. {rng.randint(1, 9)}:{rng.randint(10, 24)}-cv-{rng.randint(10000, 99999)} was dismissed.",
    lambda rng: f"See U.S. Patent No. {rng.randint(4, 11)},{rng.randint(100, 999)},{rng.randint(100, 999)}.",
    lambda rng: f"Docket {rng.randint(100, 999)}-{rng.randint(1000000, 9999999)} (appeal).",
]


def _isbn10(rng, sep: str) -> str:
    body = _digits(rng, 9)
    check = sum((10 - i) * int(d) for i, d in enumerate(body)) % 11
    check = (11 - check) % 11
    digits = body + ("X" if check == 10 else str(check))
    return _group(digits, (1, 4, 4, 1), sep) if sep else digits


def _isbn13(rng, sep: str) -> str:
    body = rng.choice(["978", "979"]) + _digits(rng, 9)
    check = (10 - sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body)) % 10) % 10
    digits = body + str(check)
    return _group(digits, (3, 1, 4, 4, 1), sep) if sep else digits


def lookalike_texts(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(f"pii-lookalikes-{seed}")
    return [rng.choice(LOOKALIKES)(rng) for _ in range(n)]
