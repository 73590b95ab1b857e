"""Which captures the crawl holds, with what fate: the proportion table and its expansion.

Shares are of --pages; every kind keeps a minimum so that a small crawl (60-80 pages) still has
one of each where it can; good English pages take whatever is left (about 55% at 1,000 pages).
Sub-kinds (rule, language, block reason, ...) are dealt round-robin from a seeded shuffle, so
counts per sub-kind differ by at most one and a small crawl samples different rules per seed.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from pipelines.samplecrawl.lowquality import ALL_RULES

# category -> (share of pages, minimum pages, pages per unit). Units: a near-duplicate group is 3
# captures (one kept, two dropped by minhash), an exact-duplicate pair 2 (one kept, one dropped).
PROPORTIONS = {
    "foreign":         (0.080, 6, 1),
    "low_quality":     (0.090, 5, 1),
    "near_duplicate":  (0.045, 3, 3),
    "exact_duplicate": (0.020, 2, 2),
    "pii":             (0.060, 2, 1),
    "url_blocked":     (0.030, 3, 1),
    "url_negative":    (0.010, 1, 1),
    "non_html":        (0.030, 3, 1),
    "http_status":     (0.030, 3, 1),
    "charset":         (0.030, 3, 1),
    "malformed":       (0.010, 1, 1),
}
FOREIGN_LANGS = ["fr", "de", "es", "ru", "zh", "ja"]
URL_REASONS = ["domain", "subdomain", "url", "hard_blacklisted", "soft_blacklisted", "blacklisted_subword"]
NON_HTML = ["application/pdf", "image/png", "application/json"]
HTTP_STATUS = [301, 404, 500, 302]
CHARSETS = ["windows-1252", "shift_jis", "gb2312"]
SUBKINDS = {"foreign": FOREIGN_LANGS, "low_quality": ALL_RULES, "url_blocked": URL_REASONS,
            "non_html": NON_HTML, "http_status": HTTP_STATUS, "charset": CHARSETS}


@dataclass
class Spec:
    """One planned unit: a category, its sub-kind, and the index of the unit in its category."""
    category: str
    sub: object = None
    size: int = 1
    extra: dict = field(default_factory=dict)


def plan_counts(pages: int) -> dict[str, int]:
    """Pages per category for a crawl of `pages` captures (always sums to `pages`)."""
    if pages < 1:
        raise ValueError("pages must be >= 1")
    counts: dict[str, int] = {}
    for cat, (share, minimum, unit) in PROPORTIONS.items():
        n = max(minimum, round(share * pages))
        counts[cat] = max(unit, (n // unit) * unit) if n >= unit else 0
    # Tiny crawls: shrink the planted kinds (largest first) until good pages keep ~40%.
    while sum(counts.values()) > 0.6 * pages and any(counts.values()):
        cat = max(counts, key=lambda c: counts[c])
        counts[cat] -= PROPORTIONS[cat][2]
    counts["good"] = pages - sum(counts.values())
    return counts


def plan_specs(pages: int, rng: random.Random) -> list[Spec]:
    counts = plan_counts(pages)
    specs: list[Spec] = []
    for cat, n in counts.items():
        unit = PROPORTIONS.get(cat, (0, 0, 1))[2]
        subs = list(SUBKINDS.get(cat, [None]))
        if cat == "low_quality":
            rng.shuffle(subs)  # small crawls sample different rules per seed
        for i in range(n // unit):
            specs.append(Spec(cat, subs[i % len(subs)], unit))
    return specs
