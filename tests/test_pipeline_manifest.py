"""The single-machine pipeline against the generated crawl's ground truth (issue: data stages).

One generated crawl, one `process_warcs` run (the `crawl2chat process` code path, two worker
processes); every test below reads its outputs and compares them with manifest.jsonl.
"""
import json
from collections import defaultdict

import pytest

from pipelines.config import load_config
from pipelines.io import read_documents
from pipelines.process import process_warcs
from pipelines.samplecrawl import generate_crawl

QUALITY_STAGES = {"gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"}
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    info = generate_crawl(root / "crawl", pages=400, seed=11, files=2)
    out = root / "out"
    stats = process_warcs(info.warc_paths, out, load_config(), workers=2)
    manifest = {json.loads(line)["record_id"]: json.loads(line) for line in open(info.manifest_path)}
    kept = {d.id: d for d in read_documents([out / "clean"])}
    removed = {}
    for d in read_documents([out / "removed"]):
        removed[d.id] = d
    return {"stats": stats.as_dict(), "manifest": manifest, "kept": kept, "removed": removed, "out": out}


def test_every_stage_accounts_for_every_document(run):
    for name, s in run["stats"].items():
        assert s["docs_in"] == s["docs_out"] + s["docs_removed"], name
    # and nothing is lost between stages: each stage's output is the next stage's input
    stages = list(run["stats"].values())
    for a, b in zip(stages, stages[1:]):
        assert a["docs_out"] == b["docs_in"]
    assert set(run["kept"]) | set(run["removed"]) == set(run["manifest"])


def test_language_id_agrees_with_manifest(run):
    agree = total = 0
    for doc_id, doc in {**run["removed"], **run["kept"]}.items():
        lang = doc.metadata.get("language")
        if lang is None or run["manifest"][doc_id]["category"] == "malformed":
            continue  # never reached LID (dropped earlier)
        total += 1
        agree += lang == run["manifest"][doc_id]["language"]
    assert total > 200
    assert agree / total >= 0.97, (agree, total)


def test_planted_low_quality_pages_are_dropped_by_their_rule(run):
    planted = [m for m in run["manifest"].values() if m["stage"] in QUALITY_STAGES]
    assert len(planted) >= 20
    by_rule = 0
    for m in planted:
        assert m["record_id"] not in run["kept"], m["url"]
        got = run["removed"][m["record_id"]].metadata
        by_rule += (got["stage"], got["reason"]) == (m["stage"], m["reason"])
    assert by_rule / len(planted) >= 0.9, f"{by_rule}/{len(planted)} dropped by the planted rule"


def test_good_english_pages_survive_quality_filters(run):
    good = [m for m in run["manifest"].values() if m["category"] == "good"]
    dropped = [m["url"] for m in good if m["record_id"] in run["removed"]
               and run["removed"][m["record_id"]].metadata["stage"] in QUALITY_STAGES | {"c4_lines"}]
    assert len(dropped) <= 0.02 * len(good), dropped[:5]


def test_near_duplicates_and_exact_duplicates(run):
    clusters = defaultdict(list)
    for m in run["manifest"].values():
        if m["dup_cluster"] and m["record_id"] in run["kept"] | {
                k: v for k, v in run["removed"].items() if v.metadata["stage"] == "minhash"}:
            clusters[m["dup_cluster"]].append(m)
    planted_dups = [m for ms in clusters.values() for m in ms if m["fate"] == "dropped"]
    caught = [m for m in planted_dups if m["record_id"] in run["removed"]]
    assert planted_dups and len(caught) / len(planted_dups) >= 0.9
    minhash_dropped = [d for d in run["removed"].values() if d.metadata["stage"] == "minhash"]
    true_pos = [d for d in minhash_dropped if run["manifest"][d.id]["dup_cluster"]]
    assert len(true_pos) / len(minhash_dropped) >= 0.95
    exact = [m for m in planted_dups if m["category"] == "exact_duplicate"]
    assert exact and all(m["record_id"] in run["removed"] for m in exact)
    for ms in clusters.values():  # one survivor per cluster, with its cluster size recorded
        survivors = [run["kept"][m["record_id"]] for m in ms if m["record_id"] in run["kept"]]
        assert len(survivors) <= 1, [(s.id, len(s.text), {k: s.metadata.get(k) for k in (
            "minhash_cluster_id", "minhash_cluster_size", "extraction_status", "language")}) for s in survivors]
        for s in survivors:
            assert s.metadata["minhash_cluster_size"] >= 2


def test_pii_is_scrubbed_from_kept_text(run):
    found = defaultdict(lambda: [0, 0])  # type -> [planted in kept docs, still present]
    for doc_id, doc in run["kept"].items():
        for p in run["manifest"][doc_id]["pii"]:
            kind = p["type"] + ("" if p["type"] != "IP_ADDRESS" else ("_public" if p["public"] else "_private"))
            found[kind][0] += 1
            found[kind][1] += p["value"] in doc.text
    for kind in ("EMAIL_ADDRESS", "IP_ADDRESS_public", "CREDIT_CARD", "PHONE_NUMBER"):
        planted, left = found[kind]
        assert planted > 0, kind
        assert (planted - left) / planted >= 0.95, (kind, planted, left)
    assert found["EMAIL_ADDRESS"][1] == 0 and found["IP_ADDRESS_public"][1] == 0
    planted, left = found["IP_ADDRESS_private"]
    assert planted > 0 and left == planted  # private addresses are left alone, as in FineWeb
