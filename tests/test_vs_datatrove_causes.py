"""bench/vs_datatrove.py classifies each disagreement with datatrove by a computed cause (issue 26:
it used to label every reader-stage disagreement with one canned sentence, and counted a resiliparse
empty-text drop as a filter disagreement). The comparison alone, on recorded decisions: no datatrove."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def vs():
    spec = importlib.util.spec_from_file_location("vs_datatrove", ROOT / "bench" / "vs_datatrove.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def side(decisions, texts=None, html=None, **extra):
    return {"decisions": decisions, "texts": texts or {}, "lang": {}, "html_sha1": html or {}, **extra}


def test_each_disagreement_gets_its_computed_cause(vs):
    dt = side({"magic": ["warc_reader", "no WARC-Identified-Payload-Type and libmagic says application/javascript"],
               "status": ["kept", None], "empty": ["kept", None], "filt": ["kept", None], "dec": ["kept", None],
               "same": ["kept", None], "both": ["language", "wrong_language"]},
              texts={"status": "t", "empty": "a text", "filt": "same text", "dec": "x", "same": "t2", "both": "de"},
              html={"status": "h", "empty": "h1", "filt": "h2", "dec": "h3", "same": "h4", "both": "h5"},
              charset={"dec": "WINDOWS-1252"})
    ours = side({"magic": ["kept", None], "status": ["warc_reader", "http_status"], "empty": ["extraction", "empty"],
                 "filt": ["fineweb_quality", "char_dup_ratio"], "dec": ["language", "low_score"],
                 "same": ["kept", None], "both": ["language", "wrong_language"]},
                texts={"filt": "same text", "dec": "y", "same": "t2", "both": "de"},
                html={"empty": "h1", "filt": "h2", "dec": "other", "same": "h4", "both": "h5"})
    out = vs.compare(dt, ours, {}, mode="resiliparse")
    causes = {d["id"]: d["cause"] for d in out["disagreements"]}
    assert set(causes) == {"magic", "status", "empty", "filt", "dec"}
    assert causes["magic"]["dropped_by"] == "datatrove" and causes["magic"]["category"] == "reader"
    assert "libmagic says application/javascript" in causes["magic"]["why"]
    assert causes["status"] == {**causes["status"], "dropped_by": "ours", "category": "reader", "reason": "http_status"}
    # resiliparse found no text where trafilatura did: the extractor, not a filter
    assert causes["empty"]["category"] == "extractor_backend" and causes["empty"]["stage"] == "extraction"
    assert causes["filt"]["category"] == "filter" and causes["filt"]["extracted_text_identical"] is True
    assert causes["dec"]["category"] == "decoding" and "WINDOWS-1252" in causes["dec"]["why"]
    # agreement counts only documents both sides extracted: filt, dec, same, both (2 of 4 agree)
    assert out["both_extracted"] == 4 and out["agreement_both_extracted"] == 0.5
    assert sum(out["disagreement_causes"].values()) == 5


def test_trafilatura_mode_text_difference_is_not_called_a_backend(vs):
    dt = side({"d": ["kept", None]}, texts={"d": "a"}, html={"d": "h"})
    ours = side({"d": ["gopher_quality", "gopher_short_doc"]}, texts={"d": "b"}, html={"d": "h"})
    (d,) = vs.compare(dt, ours, {}, mode="trafilatura")["disagreements"]
    assert d["cause"]["category"] == "extraction_differs" and d["cause"]["decoded_html_identical"] is True


def test_a_language_prefilter_drop_is_compared_as_a_decision(vs):
    """extraction.prefilter_languages drops a page before trafilatura: its mistakes must count in the
    agreement on extracted documents, not vanish with the extraction failures."""
    dt = side({"ok": ["language", "wrong_language"], "bad": ["kept", None]}, texts={"ok": "de", "bad": "en"})
    ours = side({"ok": ["extraction", "language_prefilter"], "bad": ["extraction", "language_prefilter"]})
    out = vs.compare(dt, ours, {}, mode="trafilatura")
    assert out["both_extracted"] == 2 and out["agreement_both_extracted"] == 0.5
    (d,) = out["disagreements"]
    assert d["id"] == "bad" and d["cause"]["category"] == "language_prefilter"
