"""`crawl2chat export-dataset`: the real data stages run on a generated crawl, the export is read
back with `datasets.load_dataset` (the consumer a user has) and must give exactly the rows the
crawl stored, kept and removed; the card's counts are the run's own; misuse writes nothing."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.io import MARKER, parquet_files
from pipelines.process import process_warcs
from pipelines.samplecrawl import generate_crawl

datasets = pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def processed(tmp_path_factory) -> Path:
    """A `crawl2chat process` run over a small generated crawl (the real stages, ~10 s)."""
    root = tmp_path_factory.mktemp("processed")
    info = generate_crawl(root / "crawl", pages=24, files=2, seed=3, crawl="CC-MAIN-2099-01")
    process_warcs([Path(p) for p in info.warc_paths], root / "out")
    return root / "out"


def crawl2chat(*args, env=None):
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})})


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("crawl2chat: error:")]


def stored_rows(path: Path) -> list[dict]:
    """Every row of a Parquet dataset folder, in the order parquet_files gives (the export's)."""
    return [row for f in parquet_files(path) for row in pq.read_table(f).to_pylist()]


def loaded_rows(out: Path, config: str, cache: Path) -> list[dict]:
    # a fresh cache per call: datasets must read the files themselves, not an earlier copy
    return datasets.load_dataset(str(out), config, split="train", cache_dir=str(cache)).to_list()


def assert_same_rows(loaded: list[dict], stored: list[dict]):
    assert stored and len(loaded) == len(stored)
    for got, want in zip(loaded, stored):
        assert set(want) <= set(got)  # every stored column is exported ...
        assert got == {c: want.get(c) for c in got}  # ... with the same value; the others are null


def card(out: Path) -> tuple[dict, str]:
    text = (out / "README.md").read_text()
    _, header, body = text.split("---\n", 2)
    return yaml.safe_load(header), body


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_process_run_exports_the_same_rows_in_fineweb_shards(processed, tmp_path):
    out = tmp_path / "ds"
    r = crawl2chat("export-dataset", processed, "--out", out, "--shard-rows", "4")
    assert r.returncode == 0, r.stderr
    kept, removed = stored_rows(processed / "clean"), stored_rows(processed / "removed")
    n = -(-len(kept) // 4)
    assert sorted(p.name for p in (out / "data").iterdir()) == [f"train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    assert_same_rows(loaded_rows(out, "default", tmp_path / "c1"), kept)
    assert_same_rows(loaded_rows(out, "removed", tmp_path / "c2"), removed)
    assert datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "c3")).num_rows == len(kept)
    # FineWeb's columns in FineWeb's order; token_count is absent and the card says so
    names = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "c3")).column_names
    assert names[:8] == ["text", "id", "dump", "url", "date", "file_path", "language", "language_score"]
    header, body = card(out)
    assert "| token_count | **absent** |" in body
    assert header["license"] == "odc-by"
    assert {c["config_name"]: c["data_files"][0]["path"] for c in header["configs"]} == \
        {"default": "data/train-*.parquet", "removed": "removed/train-*.parquet"}
    sizes = {i["config_name"]: i["splits"][0]["num_examples"] for i in header["dataset_info"]}
    assert sizes == {"default": len(kept), "removed": len(removed)}
    # the counts by reason are the run's own (stats.json), and so is the config digest
    stats = json.loads((processed / "stats.json").read_text())["stages"]
    for stage, s in stats.items():
        for reason, count in s["dropped"].items():
            assert f"| {stage} | {reason} | {count} |" in body
    import hashlib
    cfg = json.loads((processed / "config.json").read_text())
    assert hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest() in body
    assert "CC-MAIN-2099-01" in body and json.loads((out / MARKER).read_text())["kind"] == "dataset_export"


def test_export_replaces_its_own_earlier_export(processed, tmp_path):
    out = tmp_path / "ds"
    assert crawl2chat("export-dataset", processed, "--out", out, "--shard-rows", "4").returncode == 0
    r = crawl2chat("export-dataset", processed, "--out", out)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (out / "data").iterdir()) == ["train-00000-of-00001.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no staging or old copy left beside


def test_an_out_the_user_owns_is_refused_and_left_byte_for_byte(processed, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my own notes")
    (out / "data").mkdir()
    (out / "data" / "keep.parquet").write_bytes(b"not even parquet")
    before = tree(out)
    r = crawl2chat("export-dataset", processed, "--out", out)
    assert r.returncode == 2 and len(errors(r.stderr)) == 1 and "Traceback" not in r.stderr
    assert "not written by crawl2chat" in r.stderr
    assert tree(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_an_out_inside_the_crawl_is_refused(processed):
    """Shards written into the crawl would be read back as its own clean text next time."""
    before = tree(processed)
    r = crawl2chat("export-dataset", processed, "--out", processed / "clean" / "ds")
    assert r.returncode == 2 and len(errors(r.stderr)) == 1 and "inside the crawl" in r.stderr, r.stderr
    assert tree(processed) == before


@pytest.mark.parametrize("case", ["unknown_crawl", "not_a_lake", "not_processed", "not_a_process_dir",
                                  "unsafe_name", "no_mlflow_store"])
def test_misuse_is_one_line_and_writes_nothing(case, tmp_path):
    from pipelines.document import Document
    from pipelines.io import ParquetSink
    lake = tmp_path / "lake"
    (lake / "crawls" / "CC-MAIN-2099-01" / "clean").mkdir(parents=True)  # registered, never cleaned
    sink = ParquetSink(lake / "crawls" / "CC-MAIN-2099-02" / "clean" / "part-00000.parquet")
    sink.write(Document("kept text", "<urn:uuid:1>", {"dump": "CC-MAIN-2099-02"}))
    sink.close()
    crawl, expect = {
        "unknown_crawl": ("CC-MAIN-2000-01", "is not in the lake"),
        "not_a_lake": ("CC-MAIN-2099-01", "is not a crawl2chat lake"),
        "not_processed": ("CC-MAIN-2099-01", "has no clean text"),
        "not_a_process_dir": (str(tmp_path / "somewhere"), "neither a crawl in the lake nor"),
        "unsafe_name": ("..", "neither a crawl in the lake nor"),
        "no_mlflow_store": ("CC-MAIN-2099-02", "no MLflow store at"),
    }[case]
    (tmp_path / "somewhere").mkdir()
    lake_arg = tmp_path / "somewhere" if case == "not_a_lake" else lake
    r = crawl2chat("export-dataset", crawl, "--lake", lake_arg, "--out", tmp_path / "out",
                   "--mlflow-uri", f"sqlite:///{tmp_path / 'somewhere' / 'mlflow.db'}")
    assert r.returncode == 2, r.stderr
    assert len(errors(r.stderr)) == 1 and expect in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lake", "somewhere"]


def test_an_unreadable_part_stops_the_export_and_leaves_nothing(processed, tmp_path):
    """A part whose footer reads but whose data is damaged fails mid-export: one line naming the
    file, and neither the output nor a staging directory is left behind."""
    import shutil
    src = tmp_path / "run"
    shutil.copytree(processed, src)
    part = parquet_files(src / "clean")[0]
    data = bytearray(part.read_bytes())
    data[8:len(data) // 2] = b"\xff" * (len(data) // 2 - 8)  # the pages, not the footer
    part.write_bytes(bytes(data))
    r = crawl2chat("export-dataset", src, "--out", tmp_path / "ds")
    assert r.returncode == 2 and len(errors(r.stderr)) == 1 and str(part) in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# ------------------------------------------------------------------------------------------------
# The lake the Dagster data assets write (real Spark, real MLflow), with its lineage

@pytest.mark.slow
def test_lake_crawl_exports_the_same_rows_with_its_mlflow_lineage(materialized, tmp_path):
    import mlflow
    from test_data_assets import CRAWL
    lake, out = materialized["root"] / "lake", tmp_path / "ds"
    r = crawl2chat("export-dataset", CRAWL, "--lake", lake, "--out", out,
                   "--mlflow-uri", materialized["tracker"].tracking_uri)
    assert r.returncode == 0, r.stderr
    base = lake / "crawls" / CRAWL
    assert_same_rows(loaded_rows(out, "default", tmp_path / "c1"), stored_rows(base / "clean"))
    removed = stored_rows(base / "removed")
    assert_same_rows(loaded_rows(out, "removed", tmp_path / "c2"), removed)
    assert {r["stage"] for r in removed} >= {"language", "minhash"}  # per-batch and per-crawl stages
    # lineage: the runs that wrote this clean text and everything upstream of it
    mlflow.set_tracking_uri(materialized["tracker"].tracking_uri)
    runs = mlflow.search_runs(experiment_names=["crawl2chat/data"], output_format="list")
    by_asset = {}
    for run in runs:
        by_asset.setdefault(run.data.tags["dagster.asset_key"], []).append(run.info.run_id)
    _, body = card(out)
    for asset in ("clean_text", "deduped_text", "filtered_text", "extracted_text"):
        assert by_asset[asset] and all(f"`{run_id}`" in body for run_id in by_asset[asset]), asset
    assert "Config digest: `not recorded`" not in body
    # the funnel the runs logged ends with the clean text's row count
    pii = next(line for line in body.splitlines() if line.startswith("| pii |")).split("|")
    assert int(pii[3]) == len(stored_rows(base / "clean"))

