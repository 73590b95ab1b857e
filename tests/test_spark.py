"""The Spark data stages on a real local[2] session: dedup equals the single-machine MinhashDedup,
connected components converge, batches write Parquet with consistent stats and reruns replace."""
from __future__ import annotations

import random
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytest.importorskip("pyspark")

from pipelines.config import load_config  # noqa: E402
from pipelines.document import Document  # noqa: E402
from pipelines.io import ParquetSink, read_documents  # noqa: E402
from pipelines.minhash import MinhashDedup  # noqa: E402
from pipelines.minhash import connected_components as union_find  # noqa: E402
from pipelines.runner import run_stages  # noqa: E402
from pipelines.spark import (build_spark_session, connected_components, dedup_crawl,  # noqa: E402
                             process_batch, scrub_pii)


@pytest.fixture(scope="module")
def spark():
    session = build_spark_session("local[2]", app_name="crawl2chat-tests",
                                  conf={"spark.driver.memory": "1g"})
    yield session
    session.stop()


@pytest.fixture(scope="module")
def cfg():
    return load_config()


# ------------------------------------------------------------------------------------------
# connected components

def _spark_cc(spark, edges):
    df = spark.createDataFrame(edges, "src long, dst long")
    labels, rounds = connected_components(df)
    return {r.node: r.label for r in labels.collect()}, rounds


def test_components_long_chain_converges_to_min(spark):
    # A path visited in random order: the worst case for label propagation (diameter = n).
    n = 100
    order = list(range(1000, 1000 + n))
    random.Random(3).shuffle(order)
    edges = [(order[i], order[i + 1]) for i in range(n - 1)]
    labels, rounds = _spark_cc(spark, edges)
    assert labels == {v: 1000 for v in order}
    assert rounds < 20


def test_components_star_and_random_graph_match_union_find(spark):
    rng = random.Random(7)
    star = [(500, leaf) for leaf in range(1, 60)]          # centre is not the minimum
    pairs = [(rng.randrange(2000, 2400), rng.randrange(2000, 2400)) for _ in range(300)]
    edges = star + pairs + [(3000, 3000)]                 # a self loop is no component
    labels, _ = _spark_cc(spark, edges)
    nodes = {n for e in star + pairs for n in e if e[0] != e[1]}
    expected = {k: v for k, v in union_find(star + pairs, []).items() if k in nodes}
    assert labels == expected
    assert labels[500] == 1 and labels[59] == 1
    assert _spark_cc(spark, []) == ({}, 0)


# ------------------------------------------------------------------------------------------
# MinHash dedup: Spark == single machine

def _prose_docs(seed: int = 0) -> list[Document]:
    """~350 docs of real prose (CPython's pydoc topics) with planted exact and near duplicates."""
    from pydoc_data.topics import topics
    words = " ".join(topics[k] for k in sorted(topics)).split()
    chunks = [" ".join(words[i:i + 120]) for i in range(0, 120 * 260, 120)]
    rng = random.Random(seed)

    def doc(text):
        # Random ids and capture dates (some equal, some missing, one with a fraction of a second),
        # so every part of the survivor rule decides some cluster.
        date = rng.choice([None, "2024-02-01T00:00:01.5Z", f"2024-02-0{rng.randint(1, 3)}T00:00:0{rng.randint(0, 2)}Z"])
        return Document(text, f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128))}>",
                        {"url": f"https://example.com/{rng.getrandbits(32)}", "dump": "CC-TEST", "date": date})

    def edit(text, n):
        w = text.split()
        for _ in range(n):
            w[rng.randrange(len(w))] = rng.choice(["zebra", "quokka", "Lorem", "1234"])
        return " ".join(w)

    docs = [doc(c) for c in chunks]
    docs += [doc(c) for c in rng.sample(chunks, 20)]                      # exact duplicates
    docs += [doc(c.upper().replace(" ", "  ")) for c in rng.sample(chunks, 5)]  # same after normalize
    docs += [doc(edit(c, 2)) for c in rng.sample(chunks, 30)]             # near duplicates
    for c in rng.sample(chunks, 5):                                       # chains a ~ b ~ c
        b = edit(c, 2)
        docs += [doc(b), doc(edit(b, 2))]
    docs += [doc("hello short world"), doc("Hello, short world!"), doc("!!! ..."), doc("")]
    rng.shuffle(docs)
    return docs


def _write_batches(root: Path, docs: list[Document], n: int = 3) -> list[Path]:
    dirs = [root / f"batch-{i}" for i in range(n)]
    for i, d in enumerate(dirs):
        sink = ParquetSink(d / "part-00000.parquet")
        for doc in docs[i::n]:
            sink.write(doc)
        sink.close()
    return dirs


def _single_machine(dirs, cfg):
    removed = []
    docs, stats = run_stages(read_documents(dirs), [MinhashDedup(**cfg["minhash"])],
                             lambda d, stage, reason: removed.append((d.id, stage, reason)))
    kept = {d.id: (d.metadata["minhash_cluster_id"], d.metadata["minhash_cluster_size"]) for d in docs}
    return kept, removed, stats["minhash"]


def _rows(path):
    return pq.read_table(path).to_pylist()


@pytest.mark.slow
def test_spark_dedup_keeps_exactly_what_single_machine_keeps(spark, cfg, tmp_path):
    dirs = _write_batches(tmp_path / "in", _prose_docs())
    kept_ref, removed_ref, ref_stats = _single_machine(dirs, cfg)

    out, removed_dir = tmp_path / "deduped", tmp_path / "removed"
    stats = dedup_crawl(spark, dirs, out, removed_dir, cfg)["minhash"]

    kept = {r["id"]: (r["minhash_cluster_id"], r["minhash_cluster_size"]) for r in _rows(out)}
    assert kept == kept_ref
    removed_rows = _rows(removed_dir / "minhash")
    assert sorted(r["id"] for r in removed_rows) == sorted(i for i, _, _ in removed_ref)
    assert {(r["stage"], r["reason"]) for r in removed_rows} == {("minhash", "duplicate")}
    # a dropped doc points at the kept doc of its cluster
    assert all(r["minhash_cluster_id"] in kept for r in removed_rows)

    # the planted duplicates were found: 20 exact + 5 normalized + >= most near/chain ones
    assert len(removed_rows) >= 50
    assert stats.docs_in == ref_stats.docs_in == len(kept) + len(removed_rows)
    assert stats.docs_out == len(kept) and stats.dropped["duplicate"] == len(removed_rows)
    assert stats.counters["clusters"] == ref_stats.counters["clusters"]
    assert stats.counters["no_signature"] == ref_stats.counters["no_signature"] == 2

    # A rerun replaces the output (no second copy, no staging leftovers).
    again = dedup_crawl(spark, dirs, out, removed_dir, cfg)["minhash"]
    assert again.docs_out == stats.docs_out
    assert sorted(r["id"] for r in _rows(out)) == sorted(kept)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deduped", "in", "removed"]

    # PII scrubbing on the deduped crawl keeps every document.
    clean = tmp_path / "clean"
    pii = scrub_pii(spark, out, clean, cfg)["pii"]
    assert pii.docs_in == pii.docs_out == len(kept)
    assert sorted(r["id"] for r in _rows(clean)) == sorted(kept)


@pytest.mark.slow
def test_spark_dedup_keeps_the_earliest_capture_then_the_longest_text(spark, cfg, tmp_path):
    """The survivor rule (pipelines.minhash.survivor_key) on Spark, clusters spread over files."""
    from pydoc_data.topics import topics
    words = " ".join(topics[k] for k in sorted(topics)).split()
    base = [" ".join(words[i:i + 300]) for i in range(0, 1500, 300)]
    clusters = {  # expected survivor -> members (id, date, text)
        "z-first": [("a-copy", "2024-02-03T00:00:00Z", base[0]), ("z-first", "2024-02-01T00:00:00Z", base[0]),
                    ("m-nodate", None, base[0] + " extra words here")],
        "y-longest": [("b-short", "2024-02-01T00:00:00Z", base[1]),
                      ("y-longest", "2024-02-01T00:00:00Z", base[1] + " and a longer ending")],
        "c-smallest": [("d-same", "2024-02-01T00:00:00Z", base[2]), ("c-smallest", "2024-02-01T00:00:00Z", base[2])],
        "x-whole-second": [("e-later", "2024-02-01T00:00:15.25Z", base[3]), ("x-whole-second", "2024-02-01T00:00:15Z", base[3])],
    }
    docs = [Document(t, i, {"date": d}) for members in clusters.values() for i, d, t in members]
    docs.append(Document(base[4], "alone", {}))
    dirs = _write_batches(tmp_path / "in", docs, n=3)  # members of one cluster in different files
    kept_ref, _, _ = _single_machine(dirs, cfg)
    dedup_crawl(spark, dirs, tmp_path / "out", tmp_path / "rm", cfg)
    kept = {r["id"]: (r["minhash_cluster_id"], r["minhash_cluster_size"]) for r in _rows(tmp_path / "out")}
    expected = {k: (k, len(m)) for k, m in clusters.items()} | {"alone": ("alone", 1)}
    assert kept == kept_ref == expected


def test_dedup_without_duplicates_and_of_nothing(spark, cfg, tmp_path):
    texts = ["Apples grow on trees in cool orchards across the northern valleys.",
             "Bananas ripen quickly when stored next to other fruit in warm kitchens.",
             "Cherry blossoms open for about a week every spring in Kyoto parks."]
    docs = [Document(t, f"id-{i}", {}) for i, t in enumerate(texts)]
    stats = dedup_crawl(spark, _write_batches(tmp_path / "in", docs, n=1), tmp_path / "out",
                        tmp_path / "rm", cfg)["minhash"]
    rows = _rows(tmp_path / "out")
    assert sorted((r["id"], r["minhash_cluster_id"], r["minhash_cluster_size"]) for r in rows) == \
        [("id-0", "id-0", 1), ("id-1", "id-1", 1), ("id-2", "id-2", 1)]
    assert (stats.docs_in, stats.docs_out, stats.docs_removed) == (3, 3, 0)

    stats = dedup_crawl(spark, [tmp_path / "missing"], tmp_path / "out", tmp_path / "rm", cfg)
    assert stats["minhash"].docs_in == 0
    assert (tmp_path / "out").is_dir() and not list((tmp_path / "out").rglob("*.parquet"))


def test_dedup_numbers_rows_per_file_and_replaces_stale_columns(spark, cfg, tmp_path):
    # Two files repeat one id (still two documents), an empty part adds no rows, and stale
    # minhash columns from an earlier run are replaced, not duplicated.
    text = " ".join(f"word{i}" for i in range(60))
    parts = tmp_path / "in"
    for name, docs in {"part-00000": [Document(text, "same", {"minhash_cluster_id": "old"})],
                       "part-00001": [Document(text, "same", {"minhash_cluster_id": "old"}),
                                      Document("A different sentence entirely, about rivers.", "other", {})]}.items():
        sink = ParquetSink(parts / f"{name}.parquet")
        for d in docs:
            sink.write(d)
        sink.close()
    pq.write_table(pq.read_table(parts / "part-00001.parquet").slice(0, 0), parts / "part-00002.parquet")

    stats = dedup_crawl(spark, [parts], tmp_path / "out", tmp_path / "rm", cfg)["minhash"]
    kept = _rows(tmp_path / "out")
    removed = _rows(tmp_path / "rm" / "minhash")
    assert sorted((r["id"], r["minhash_cluster_id"], r["minhash_cluster_size"]) for r in kept) == \
        [("other", "other", 1), ("same", "same", 2)]
    assert [(r["id"], r["reason"]) for r in removed] == [("same", "duplicate")]
    assert (stats.docs_in, stats.docs_out, stats.counters["clusters"]) == (3, 2, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out", "rm"]  # no cluster scratch left


def test_scrub_pii_replaces_emails_and_public_ips(spark, cfg, tmp_path):
    docs = [Document("Write to jane.doe@example.org or ping 8.8.8.8 today.", "a", {}),
            Document("Nothing private here at all.", "b", {})]
    src = tmp_path / "deduped"
    sink = ParquetSink(src / "part-00000.parquet")
    for d in docs:
        sink.write(d)
    sink.close()
    stats = scrub_pii(spark, src, tmp_path / "clean", cfg)["pii"]
    rows = {r["id"]: r["text"] for r in _rows(tmp_path / "clean")}
    assert set(rows) == {"a", "b"}
    assert "jane.doe@example.org" not in rows["a"] and "8.8.8.8" not in rows["a"]
    assert rows["b"] == "Nothing private here at all."
    assert stats.docs_in == stats.docs_out == 2
    assert stats.counters["replaced_EMAIL_ADDRESS"] == 1


# ------------------------------------------------------------------------------------------
# per-batch processing

@pytest.mark.slow
def test_process_batch_writes_parquet_and_consistent_stats(spark, cfg, tmp_path):
    samplecrawl = pytest.importorskip("pipelines.samplecrawl")
    crawl = samplecrawl.generate_crawl(tmp_path / "crawl", pages=60, seed=1, files=2)
    out, removed = tmp_path / "filtered", tmp_path / "removed"

    stats = process_batch(spark, crawl.warc_paths, out, removed, cfg, dump="CC-MAIN-2099-01")
    assert list(stats)[:3] == ["warc_reader", "url_filter", "extraction"]
    assert list(stats)[-1] == "fineweb_quality"
    for name, s in stats.items():
        assert s.docs_in == s.docs_out + s.docs_removed, name
    kept = _rows(out)
    assert len(kept) == stats["fineweb_quality"].docs_out > 0
    assert sorted(p.name for p in out.glob("*.parquet")) == [f"part-{i:05d}.parquet" for i in range(2)]
    assert {r["dump"] for r in kept} == {"CC-MAIN-2099-01"}
    for name, s in stats.items():
        files = list((removed / name).glob("*.parquet"))
        assert sum(pq.read_metadata(f).num_rows for f in files) == s.docs_removed, name
    # per WARC file, as the CLI's stats.json: every record a response or another type, every
    # response kept or dropped with a reason, the files' counts adding up to the batch's
    assert sorted(stats.files) == sorted(str(p.absolute()) for p in crawl.warc_paths)
    for f in stats.files.values():
        assert f["records"] == f["responses"] + f["other_records"]
        assert f["responses"] == f["kept"] + sum(f["dropped"].values()) and not f["problems"]
    assert sum(f["kept"] for f in stats.files.values()) == len(kept)
    assert sum(f["responses"] for f in stats.files.values()) == stats["warc_reader"].docs_in

    # A rerun replaces the outputs: same rows, not twice as many.
    again = process_batch(spark, crawl.warc_paths, out, removed, cfg, dump="CC-MAIN-2099-01")
    assert again.as_dict().keys() == stats.as_dict().keys()
    assert sorted(r["id"] for r in _rows(out)) == sorted(r["id"] for r in kept)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
