"""Asset checks, computed inside the asset from the stats it just produced (so a blocking check
stops the run before a bad result flows downstream)."""
from __future__ import annotations

import dagster as dg

from pipelines.audit import language_share, pii_residue, unaccounted_stages

ACCOUNTED = "docs_accounted"
NOT_EMPTY = "not_empty"
LANGUAGE_SHARE = "language_share"
DEDUP_RATE = "dedup_rate_in_range"
PII_RESIDUE = "no_pii_residue"


def specs(asset_name: str, *names: str) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(n, asset=asset_name, blocking=True, description=_DESCRIPTIONS[n])
            for n in (ACCOUNTED, NOT_EMPTY) + names]


_DESCRIPTIONS = {
    ACCOUNTED: "for every stage, documents in = documents kept + documents removed",
    NOT_EMPTY: "the stage kept at least one document",
    LANGUAGE_SHARE: "share of documents in a wanted language is at least checks.min_language_share",
    DEDUP_RATE: "share removed as near-duplicates lies in [checks.dedup_rate_min, checks.dedup_rate_max]",
    PII_RESIDUE: "no email or public IPv4 address left in a sample of the final text",
}


def common(stats: dict) -> list[dg.AssetCheckResult]:
    bad = unaccounted_stages(stats)
    out = list(stats.values())[-1]["docs_out"] if stats else 0
    return [dg.AssetCheckResult(check_name=ACCOUNTED, passed=not bad,
                                metadata={"unaccounted": dg.MetadataValue.json({k: list(v) for k, v in bad.items()})}),
            dg.AssetCheckResult(check_name=NOT_EMPTY, passed=out > 0, metadata={"docs_out": out})]


def language(path, cfg: dict) -> dg.AssetCheckResult:
    share, n = language_share(path, cfg["language"]["languages"])
    need = cfg["checks"]["min_language_share"]
    return dg.AssetCheckResult(check_name=LANGUAGE_SHARE, passed=n > 0 and share >= need,
                               metadata={"share": share, "min": need, "docs": n})


def dedup_rate(stats: dict, cfg: dict) -> dg.AssetCheckResult:
    s = stats["minhash"]
    rate = s["docs_removed"] / s["docs_in"] if s["docs_in"] else 0.0
    lo, hi = cfg["checks"]["dedup_rate_min"], cfg["checks"]["dedup_rate_max"]
    return dg.AssetCheckResult(check_name=DEDUP_RATE, passed=lo <= rate <= hi,
                               metadata={"dedup_rate": rate, "min": lo, "max": hi})


def pii(path, cfg: dict) -> dg.AssetCheckResult:
    found = pii_residue(path, cfg["checks"]["pii_sample_docs"])
    return dg.AssetCheckResult(check_name=PII_RESIDUE,
                               passed=found["emails"] == 0 and found["public_ipv4"] == 0, metadata=found)
