"""The whole `data` group materialized in-process (real Spark local[2], real MLflow on SQLite) on a
tiny generated crawl (the session fixture `materialized`, tests/conftest.py), checked against the
crawl's ground-truth manifest."""
import json

import dagster as dg
import mlflow
import pytest

from pipelines.io import read_documents

pytestmark = pytest.mark.slow
CRAWL = "CC-MAIN-2099-01"


def test_batches_are_partitions_that_never_cross_a_segment(materialized):
    # the generated crawl puts each of its two files in its own segment
    assert materialized["batches"] == [f"{CRAWL}/00000-00000", f"{CRAWL}/00001-00001"]
    assert all(r.success for r in materialized["results"])


def test_final_dataset_matches_the_manifest(materialized):
    clean = {d.id: d for d in read_documents([materialized["root"] / "lake" / "crawls" / CRAWL / "clean"])}
    manifest = materialized["manifest"]
    assert clean
    # what was kept: nothing planted for an earlier stage survives, and most good pages do
    wrongly_kept = [i for i in clean if manifest[i]["fate"] == "dropped"]
    assert len(wrongly_kept) <= 0.02 * len(clean), [manifest[i]["url"] for i in wrongly_kept]
    good = [m for m in manifest.values() if m["category"] == "good"]
    assert sum(m["record_id"] in clean for m in good) >= 0.95 * len(good)
    # what was dropped, and why: every removed document carries its stage and reason
    removed = list(read_documents([materialized["root"] / "lake" / "crawls" / CRAWL / "removed"]))
    assert removed and all(d.metadata["stage"] and d.metadata["reason"] for d in removed)
    assert {d.id for d in removed} | set(clean) == set(manifest)
    # what was scrubbed: no planted email or public IPv4 left in kept text
    for doc_id, doc in clean.items():
        for p in manifest[doc_id]["pii"]:
            if p["type"] == "EMAIL_ADDRESS" or (p["type"] == "IP_ADDRESS" and p.get("public") and "." in p["value"]):
                assert p["value"] not in doc.text
    # FineWeb-compatible schema
    row = next(iter(clean.values())).to_row()
    for col in ("text", "id", "dump", "url", "date", "file_path", "language", "language_score",
                "minhash_cluster_id", "minhash_cluster_size"):
        assert col in row
    assert row["dump"] == CRAWL


def test_checks_passed_and_metadata_reported(materialized):
    instance = materialized["instance"]
    for key in ("extracted_text", "filtered_text", "deduped_text", "clean_text"):
        event = instance.get_latest_materialization_event(dg.AssetKey(key))
        meta = event.asset_materialization.metadata
        assert {"funnel", "funnel_chart", "samples", "mlflow_run", "digest", "docs_out"} <= set(meta)
        assert "| stage |" in meta["funnel"].value
    checks = [e for r in materialized["results"] for e in r.get_asset_check_evaluations()]
    assert checks and all(c.passed for c in checks), [(c.check_name, c.metadata) for c in checks if not c.passed]
    names = {c.check_name for c in checks}
    assert {"docs_accounted", "not_empty", "language_share", "dedup_rate_in_range", "no_pii_residue"} <= names


def test_mlflow_runs_exist_for_every_stage_with_upstream_inputs(materialized):
    mlflow.set_tracking_uri(materialized["tracker"].tracking_uri)
    runs = mlflow.search_runs(experiment_names=["crawl2chat/data"], output_format="list")
    by_asset = {}
    for run in runs:
        by_asset.setdefault(run.data.tags["dagster.asset_key"], []).append(run)
    assert set(by_asset) == {"crawl_manifest", "warc_files", "extracted_text", "filtered_text",
                             "deduped_text", "clean_text"}
    for asset in ("extracted_text", "filtered_text", "deduped_text", "clean_text"):
        for run in by_asset[asset]:
            assert run.inputs.dataset_inputs, asset  # the upstream dataset is logged as an input
            assert run.data.tags["git_sha"] and run.data.tags["dagster.run_id"]
            assert any(k.endswith(".docs_out") for k in run.data.metrics)
    assert len(by_asset["filtered_text"]) == 2  # one per batch partition
    assert {r.data.tags["dagster.partition"] for r in by_asset["filtered_text"]} == set(materialized["batches"])


def _dagster_cli(args):
    import sys
    from pathlib import Path
    return [str(Path(sys.executable).parent / "dagster"), *args]


def test_run_killed_mid_stage_then_rerun_gives_the_same_dataset(materialized, tmp_path):
    """`dagster job execute` is SIGKILLed while extracted_text's Spark job runs; nothing half-written
    looks complete, and running it again yields the dataset an uninterrupted run produced."""
    import os
    import shutil
    import signal
    import subprocess
    import time
    from pathlib import Path

    root = materialized["root"]
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "dagster_home" / "dagster.yaml", home)
    lake = tmp_path / "lake"
    env = dict(os.environ, DAGSTER_HOME=str(home), CRAWL2CHAT_LAKE=str(lake),
               CRAWL2CHAT_CRAWL_SOURCE=str(root / "source"), CRAWL2CHAT_SPARK_MASTER="local[2]",
               MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
               CRAWL2CHAT_MLFLOW_ARTIFACTS=str(tmp_path / "mlartifacts"))
    subprocess.run(_dagster_cli(["job", "execute", "-m", "assets.definitions", "-j", "discover_crawl"]),
                   env=env, check=True, capture_output=True)
    key = materialized["batches"][0]
    run = _dagster_cli(["job", "execute", "-m", "assets.definitions", "-j", "data_pipeline",
                        "--tags", json.dumps({"dagster/partition": key})])
    extracted = lake / "crawls" / CRAWL / "extracted"
    proc = subprocess.Popen(run, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    # Kill as soon as extracted_text's staging directory exists: it is made before the Spark job starts
    # and swapped into place only after every task wrote its part, so the kill lands mid-stage. (Waiting
    # for part files inside it raced the swap: a small batch writes them and commits within one poll.)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(extracted.glob(".*staging*")):
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (extracted / "00000-00000").exists()  # only a hidden staging dir, never a final one

    subprocess.run(run, env=env, check=True, capture_output=True)
    batch_dir = "00000-00000"
    again = {d.id: d.text for d in read_documents([lake / "crawls" / CRAWL / "filtered" / batch_dir])}
    reference = {d.id: d.text for d in read_documents([root / "lake" / "crawls" / CRAWL / "filtered" / batch_dir])}
    assert again and again == reference
    # The rerun swept the killed run's staging directory (its lock died with the process).
    assert not [p.name for p in extracted.iterdir() if p.name.startswith(".")]
