"""PII values to plant in page text, each with the type name presidio uses.

Cards pass the Luhn check and IBANs the ISO 13616 mod-97 check, so a checksum-validating
recognizer must find them; phone numbers use the formats people really write in each country
(US, UK, DE, FR and international "+" forms), with fictional-range numbers where a range exists.
"""
from __future__ import annotations

import ipaddress
import random

from pipelines.samplecrawl.texts import FIRST_NAMES, LAST_NAMES

_MAIL_HOSTS = ("example.com", "mailbox-example.org", "brightpath-example.net", "inbox-example.de")


def luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    for check in "0123456789":
        if luhn_ok(body + check):
            return body + check
    raise AssertionError("unreachable: one check digit always fits")


def credit_card(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:  # Visa, 4-4-4-4 with spaces
        n = _luhn_complete("4", 16, rng)
        return " ".join(n[i:i + 4] for i in range(0, 16, 4))
    if kind == 1:  # Mastercard, dashes
        n = _luhn_complete(str(rng.randint(51, 55)), 16, rng)
        return "-".join(n[i:i + 4] for i in range(0, 16, 4))
    n = _luhn_complete(rng.choice(("34", "37")), 15, rng)  # Amex 4-6-5
    return f"{n[:4]} {n[4:10]} {n[10:]}"


def iban_ok(iban: str) -> bool:
    s = iban.replace(" ", "")
    s = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in s)) % 97 == 1


def iban(rng: random.Random) -> str:
    country, bban = rng.choice((
        ("DE", lambda: "".join(str(rng.randrange(10)) for _ in range(18))),
        ("FR", lambda: "".join(str(rng.randrange(10)) for _ in range(23))),
        ("GB", lambda: "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4))
         + "".join(str(rng.randrange(10)) for _ in range(14))),
        ("ES", lambda: "".join(str(rng.randrange(10)) for _ in range(20))),
    ))
    b = bban()
    num = int("".join(str(int(c, 36)) for c in b + country + "00"))
    raw = f"{country}{98 - num % 97:02d}{b}"
    return " ".join(raw[i:i + 4] for i in range(0, len(raw), 4))


def phone(rng: random.Random) -> str:
    d = lambda n: "".join(str(rng.randrange(10)) for _ in range(n))  # noqa: E731
    return rng.choice((
        lambda: f"({rng.randint(201, 989)}) 555-{d(4)}",            # US, 555 fictional exchange
        lambda: f"+1 {rng.randint(201, 989)}-555-{d(4)}",
        lambda: f"+44 20 7946 {d(4)}",                               # UK Ofcom drama range
        lambda: f"020 7946 {d(4)}",
        lambda: f"+49 30 {d(8)}",                                    # DE Berlin
        lambda: f"030 {d(7)}",
        lambda: f"+33 1 {d(2)} {d(2)} {d(2)} {d(2)}",                # FR Paris
        lambda: f"01 {d(2)} {d(2)} {d(2)} {d(2)}",
        lambda: f"+81 3-{d(4)}-{d(4)}",                              # international (Tokyo)
    ))()


def ipv4(rng: random.Random, public: bool) -> str:
    while True:
        if public:
            ip = ipaddress.IPv4Address(rng.getrandbits(32))
            if ip.is_global and not ip.is_multicast:
                return str(ip)
        else:
            return rng.choice((f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randint(1, 254)}",
                               f"192.168.{rng.randrange(256)}.{rng.randint(1, 254)}",
                               f"172.{rng.randint(16, 31)}.{rng.randrange(256)}.{rng.randint(1, 254)}"))


def ipv6(rng: random.Random) -> str:
    # 2a00::/12 (RIPE) is globally routable, unlike the 2001:db8::/32 documentation range.
    return ipaddress.IPv6Address((0x2A0 << 116) | rng.getrandbits(116)).compressed


def person_name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def email_for(name: str, rng: random.Random) -> str:
    first, last = name.lower().split()
    return rng.choice((f"{first}.{last}", f"{first[0]}{last}", f"{first}{rng.randint(1, 99)}")) + "@" + rng.choice(_MAIL_HOSTS)


def pii_sentences(rng: random.Random) -> tuple[list[str], list[dict]]:
    """2-4 sentences carrying PII, and the manifest entries for each planted value."""
    name = person_name(rng)
    mail, tel = email_for(name, rng), phone(rng)
    found = [{"type": "PERSON", "value": name}, {"type": "EMAIL_ADDRESS", "value": mail},
             {"type": "PHONE_NUMBER", "value": tel}]
    sents = [f"For questions about this article, contact {name} at {mail} or call {tel} during office hours."]
    extra = rng.sample(("card", "iban", "ip_pub", "ip_priv", "ip6"), 2)
    for kind in extra:
        if kind == "card":
            v = credit_card(rng)
            found.append({"type": "CREDIT_CARD", "value": v})
            sents.append(f"A reader reported that the test payment with card number {v} was charged twice last month.")
        elif kind == "iban":
            v = iban(rng)
            found.append({"type": "IBAN_CODE", "value": v})
            sents.append(f"Donations to the project can be sent by bank transfer to the account {v} at any time.")
        elif kind == "ip_pub":
            v = ipv4(rng, True)
            found.append({"type": "IP_ADDRESS", "value": v, "public": True})
            sents.append(f"The mirror server at {v} answered the requests slowly during the whole test run.")
        elif kind == "ip_priv":
            v = ipv4(rng, False)
            found.append({"type": "IP_ADDRESS", "value": v, "public": False})
            sents.append(f"On the office network the printer is reachable at {v} after the update.")
        else:
            v = ipv6(rng)
            found.append({"type": "IP_ADDRESS", "value": v, "public": True})
            sents.append(f"The service also listens on the address {v} for clients that prefer the newer protocol.")
    return sents, found
