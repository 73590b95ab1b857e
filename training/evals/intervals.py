"""95% intervals for every eval figure, and the regression flag that uses them.

    wilson(k, n)                      a rate: Wilson score interval (Wilson 1927; Newcombe 1998 method 3),
                                      right at 0 and 1 and for small n where the normal one is not
    bootstrap(n, stat)                a mean or ratio over items: percentile bootstrap over items
                                      (resampled with replacement, `stat` of an index matrix)
    of(result)                        (low, high, method) for an EvalResult, from its per-item records
    regressed(child, parent, better)  the child stage is worse than its parent beyond the intervals

Items, not replies, are resampled for the sampled tasks: replies to one prompt are correlated, so
treating 8 items x 2 samples as 16 independent trials would give an interval too narrow.
Seven identical runs of a small model can spread by more than a stage's effect; without these a
report card cannot say whether a stage helped.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

Z95 = 1.959963984540054   # the 97.5% normal quantile
BOOTSTRAPS = 2000         # resamples: the percentile ends move by < 0.01 between seeds at n >= 8


def wilson(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    if n <= 0:
        raise ValueError("wilson needs n > 0")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # at k = 0 or k = n the end is exactly 0 or 1 (the formula gives it up to float rounding)
    return 0.0 if k <= 0 else max(0.0, centre - half), 1.0 if k >= n else min(1.0, centre + half)


def bootstrap(n: int, stat: Callable[[np.ndarray], np.ndarray], resamples: int = BOOTSTRAPS, seed: int = 0,
              level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of `stat` over `resamples` resamples of n items; `stat` maps an index
    matrix (resamples x n) to one value per row (vectorised: 2,000 x a few hundred is instant)."""
    if n <= 0:
        raise ValueError("bootstrap needs n > 0")
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    values = np.asarray(stat(idx), dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return math.nan, math.nan
    a = (1 - level) / 2
    return float(np.quantile(values, a)), float(np.quantile(values, 1 - a))


def mean_interval(values, seed: int = 0) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return bootstrap(len(v), lambda idx: v[idx].mean(axis=1), seed=seed)


def _binary(xs) -> bool:
    return all(x in (0, 1, 0.0, 1.0, True, False) for x in xs)


def of(result) -> tuple[float, float, str] | None:
    """The 95% interval of a result's score from its records (None when there is nothing to resample)."""
    recs = result.records
    if result.score is None or not recs:
        return None
    first = recs[0]
    if "adherent" in first:                                   # protocol: one reply per prompt
        return (*wilson(sum(bool(r["adherent"]) for r in recs), len(recs)), "wilson")
    if "correct" in first:                                    # generative, knowledge: share right per item
        if all(len(r["correct"]) == 1 for r in recs):
            return (*wilson(sum(bool(r["correct"][0]) for r in recs), len(recs)), "wilson")
        return (*mean_interval([sum(r["correct"]) / len(r["correct"]) for r in recs if r["correct"]]), "bootstrap")
    if "credit" in first:                                     # multiple choice, centred on its chance level
        credit = np.array([r["credit"] for r in recs], dtype=float)
        base = np.array([1.0 / len(r["choices"]) for r in recs])

        def centred(idx):
            acc, b = credit[idx].mean(axis=1), base[idx].mean(axis=1)
            return (acc - b) / (1 - b)
        return (*bootstrap(len(recs), centred), "bootstrap")
    if "text_nats" in first and "bytes" in first:             # bits per byte: a ratio of sums over windows
        nats = np.array([r["text_nats"] for r in recs], dtype=float)
        nbytes = np.array([r["bytes"] for r in recs], dtype=float)
        return (*bootstrap(len(recs), lambda idx: nats[idx].sum(1) / (math.log(2) * nbytes[idx].sum(1))), "bootstrap")
    return None


def regressed(child: dict, parent: dict, higher_is_better: bool = True) -> bool:
    """True when the child's score is worse than its parent's and each score lies outside the
    other's 95% interval (a middle road between "the intervals do not overlap", which misses real
    drops, and "the child's score is outside the parent's interval", which ignores the child's own
    noise). Figures without an interval never flag."""
    try:
        c, p = float(child["score"]), float(parent["score"])
        (cl, ch), (pl, ph) = child["interval"], parent["interval"]
    except (KeyError, TypeError, ValueError):
        return False
    if higher_is_better:
        return c < p and ch < p and c < pl
    return c > p and cl > p and c > ph
