"""PII recall on the independent labelled set of bench/pii_recall.py (its own formats and sentence
contexts, made apart from pipelines/pii.py and from the samples of tests/test_pii.py): per entity
type, ours finds at least what presidio's default recognizers find, and leaves numbers alone that
only look like an SSN. A small version of the benchmark (presidio here without its spaCy NLP
engine, which only re-scores these pattern types; the benchmark runs it with the engine)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("pii_recall", ROOT / "bench" / "pii_recall.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def samples(bench):
    return bench.labelled_samples(per_type=40, seed=7)


@pytest.fixture(scope="module")
def ours(bench):
    return bench.ours_analyzer()


def test_labelled_set_is_what_it_says(bench, samples):
    assert len(samples) == 40 * len(bench.TYPES)
    for sample in samples:
        (start, end, entity), = sample.spans
        value = sample.text[start:end]
        assert value and value == value.strip() and entity in bench.TYPES
    cards = [s.text[a:b] for s in samples for a, b, t in s.spans if t == "CREDIT_CARD"]
    assert all(_luhn_ok("".join(ch for ch in c if ch.isdigit())) for c in cards)


def _luhn_ok(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def test_recall_per_type_at_least_presidio_default(bench, samples, ours):
    mine = bench.recall(samples, ours)
    theirs = bench.recall(samples, bench.presidio_default_analyzer(with_nlp=False))
    for entity in bench.TYPES:
        assert mine[entity]["recall"] >= theirs[entity]["recall"], (entity, mine[entity], theirs[entity])
        assert mine[entity]["recall"] >= 0.9, (entity, mine[entity])


def test_recall_inside_documents(bench, samples, ours):
    docs = bench.documents(samples, n_docs=20, seed=7)
    assert all(r["recall"] >= 0.9 for r in bench.recall(docs, ours).values())


def test_ssn_lookalikes_are_not_flagged(bench, ours):
    found = bench.false_positives(bench.lookalike_texts(120, seed=7), ours)
    assert "US_SSN" not in found and "CREDIT_CARD" not in found and "IBAN_CODE" not in found
