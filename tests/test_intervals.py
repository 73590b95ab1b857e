"""Intervals match reference computations: Wilson against Newcombe's published table, the bootstrap
against scipy.stats.bootstrap and the normal approximation; the regression flag and the intervals
each task's records give."""
import math

import numpy as np
import pytest

from training.evals.core import EvalResult
from training.evals.intervals import bootstrap, mean_interval, of, regressed, wilson


@pytest.mark.parametrize("k,n,low,high", [
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I, method 3
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)])
def test_wilson_matches_newcombe(k, n, low, high):
    lo, hi = wilson(k, n)
    assert lo == pytest.approx(low, abs=6e-5) and hi == pytest.approx(high, abs=6e-5)


def test_wilson_by_the_formula_and_edges():
    # by hand: p = 0.8, n = 10, z = 1.96 -> centre (0.8 + 0.19208) / 1.38416, half-width ... = (0.4902, 0.9433)
    lo, hi = wilson(8, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)
    assert wilson(10, 10)[1] == 1.0 and wilson(0, 10)[0] == 0.0
    with pytest.raises(ValueError):
        wilson(0, 0)


def test_bootstrap_mean_matches_scipy_and_the_normal_interval():
    stats = pytest.importorskip("scipy.stats")
    x = np.random.default_rng(1).normal(3.0, 2.0, 400)
    lo, hi = mean_interval(x)
    ref = stats.bootstrap((x,), np.mean, method="percentile", n_resamples=4000, random_state=2).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.03) and hi == pytest.approx(ref.high, abs=0.03)
    half = 1.959964 * x.std(ddof=1) / math.sqrt(len(x))
    assert lo == pytest.approx(x.mean() - half, abs=0.03) and hi == pytest.approx(x.mean() + half, abs=0.03)


def test_bootstrap_of_a_ratio_covers_it():
    num, den = np.arange(1, 51, dtype=float), np.full(50, 10.0)
    lo, hi = bootstrap(50, lambda idx: num[idx].sum(1) / den[idx].sum(1))
    assert lo < num.sum() / den.sum() < hi


def test_interval_of_each_task_kind():
    proto = EvalResult("protocol", "chat", 0.8, 10, [{"adherent": i < 8} for i in range(10)])
    assert of(proto)[:2] == wilson(8, 10) and of(proto)[2] == "wilson"
    greedy = EvalResult("arithmetic", "chat", 0.5, 4, [{"correct": [i % 2 == 0]} for i in range(4)])
    assert of(greedy)[2] == "wilson"
    sampled = EvalResult("arithmetic", "chat", 0.5, 8, [{"correct": [True, i < 4]} for i in range(8)])
    lo, hi, method = of(sampled)
    assert method == "bootstrap" and lo <= 0.75 <= hi and hi <= 1.0
    mc = EvalResult("mc_x", "base", 0.25, 8, [{"credit": float(i < 4), "choices": ["a", "b", "c"]} for i in range(8)])
    lo, hi, _ = of(mc)
    assert lo <= (0.5 - 1 / 3) / (2 / 3) <= hi
    assert of(EvalResult("x", "chat", None, 0, [])) is None


def test_regression_flag():
    parent = {"score": 0.8, "interval": [0.7, 0.9]}
    assert regressed({"score": 0.5, "interval": [0.4, 0.6]}, parent)
    assert not regressed({"score": 0.75, "interval": [0.6, 0.85]}, parent)       # within the noise
    assert not regressed({"score": 0.95, "interval": [0.9, 0.99]}, parent)       # better
    assert regressed({"score": 2.5, "interval": [2.4, 2.6]}, {"score": 2.0, "interval": [1.9, 2.1]}, False)
    assert not regressed({"score": 0.1, "interval": None}, parent)
