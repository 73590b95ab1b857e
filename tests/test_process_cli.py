"""`crawl2chat process` exit codes and accounting: a run that lost an input exits non-zero with one
line, --keep-going says what it skipped, every response record of every file is accounted for in
stats.json, and a stage that drops everything is called out."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.samplecrawl import generate_crawl


@pytest.fixture(scope="module")
def warcs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("crawl")
    info = generate_crawl(root / "crawl", pages=24, files=2, seed=3)
    return [Path(p) for p in info.warc_paths]


def crawl2chat(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("crawl2chat: error:")]


def test_missing_input_is_refused_before_any_work(warcs, tmp_path):
    r = crawl2chat("process", warcs[0], tmp_path / "missing.warc.gz", "--out", tmp_path / "out")
    assert r.returncode == 2, r.stderr
    assert len(errors(r.stderr)) == 1 and "missing.warc.gz: not found" in r.stderr
    assert "--keep-going" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_keep_going_processes_the_rest_and_says_what_it_skipped(warcs, tmp_path):
    r = crawl2chat("process", *warcs, tmp_path / "missing.warc.gz", "--out", tmp_path / "out", "--keep-going")
    assert r.returncode == 0, r.stderr
    assert "crawl2chat: warning: skipped" in r.stderr and "missing.warc.gz" in r.stderr
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert sorted(stats["files"]) == sorted(map(str, warcs))


def test_directory_input_and_per_file_accounting(warcs, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for w in warcs:
        shutil.copy(w, d / w.name)
    (d / "notes.txt").write_text("not a WARC: ignored by the directory expansion")
    r = crawl2chat("process", d, "--out", tmp_path / "out", "--workers", "2")
    assert r.returncode == 0, r.stderr
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert len(stats["files"]) == 2
    for path, f in stats["files"].items():
        assert f["responses"] > 0
        assert f["responses"] == f["kept"] + sum(f["dropped"].values()), path
    total = stats["stages"]["warc_reader"]["docs_in"]
    assert total == sum(f["responses"] for f in stats["files"].values())
    kept = stats["stages"]["fineweb_quality"]["docs_out"]
    assert kept == sum(f["kept"] for f in stats["files"].values())


def test_a_stage_that_drops_everything_is_called_out(warcs, tmp_path):
    cfg = tmp_path / "strict.yaml"
    cfg.write_text("language:\n  threshold: 1.0\n")  # valid, but nothing scores above 1.0
    r = crawl2chat("process", warcs[0], "--out", tmp_path / "out", "--config", cfg)
    assert r.returncode == 0, r.stderr
    assert "warning: stage language dropped all" in r.stderr and "'language' section" in r.stderr


def test_empty_directory_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    r = crawl2chat("process", tmp_path / "empty", "--out", tmp_path / "out", "--keep-going")
    assert r.returncode == 2 and "no WARC files to process" in r.stderr


# ------------------------------------------------------------------------------------------------
# --out replaces only what crawl2chat marked as its own

def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _user_parquet_dataset(d: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    d.mkdir()
    pq.write_table(pa.table({"text": ["a question"], "label": [1]}), d / "train.parquet")
    pq.write_table(pa.table({"text": ["another"], "label": [0]}), d / "test.parquet")


def _hive_tree(d: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    for year in ("2023", "2024"):
        (d / f"year={year}").mkdir(parents=True)
        pq.write_table(pa.table({"text": [f"row of {year}"]}), d / f"year={year}" / "part-00000.parquet")


def _lone_config(d: Path) -> None:
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "llama", "hidden_size": 4096}\n')


@pytest.mark.parametrize("make", [_user_parquet_dataset, _hive_tree, _lone_config],
                         ids=["parquet-dataset", "hive-tree", "lone-config-json"])
def test_out_refuses_a_users_directory_that_merely_looks_like_an_old_output(warcs, tmp_path, make):
    out = tmp_path / "mine"
    make(out)
    before = _tree(out)
    r = crawl2chat("process", warcs[0], "--out", out)
    assert r.returncode == 2, r.stderr
    assert len(errors(r.stderr)) == 1 and "was not written by crawl2chat" in r.stderr and "Traceback" not in r.stderr
    assert _tree(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_adopt_marks_an_old_process_output_once_and_refuses_a_users_directory(warcs, tmp_path):
    from pipelines.io import MARKER
    out = tmp_path / "out"
    assert crawl2chat("process", warcs[0], "--out", out).returncode == 0
    (out / MARKER).unlink()  # as a crawl2chat older than markers left it
    r = crawl2chat("process", warcs[0], "--out", out)
    assert r.returncode == 2 and f"crawl2chat adopt {out}" in r.stderr
    r = crawl2chat("adopt", out)
    assert r.returncode == 0 and f"adopted {out} (process)" in r.stdout, r.stderr
    assert crawl2chat("process", warcs[0], "--out", out).returncode == 0
    user = tmp_path / "user"
    _user_parquet_dataset(user)
    before = _tree(user)
    r = crawl2chat("adopt", user, "--kind", "process")
    assert r.returncode == 2 and len(errors(r.stderr)) == 1, r.stderr
    assert "holds test.parquet, which a process output never held" in r.stderr
    assert _tree(user) == before
