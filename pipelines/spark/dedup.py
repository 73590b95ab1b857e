"""Per-crawl stages on Spark: MinHash near-dedup over all batches of a crawl, then PII scrubbing.

Dedup keeps exactly the documents the single-machine `pipelines.minhash.MinhashDedup` keeps (same
signatures, same band keys, same rule: a cluster is a connected component of "shares a band key",
its id is its smallest document id, and the document with that id is the one kept). The
difference is where the work happens:

    signatures + band keys   mapInArrow over the documents, one MinHasher per Python worker
    candidate edges          group by band key; every member -> the bucket's smallest row
    clusters                 connected components in Spark (pipelines/spark/components.py)
    keep / drop              join the cluster of each document back; written by the executors

Nothing proportional to the crawl ever reaches the driver: it only collects counts.
"""
from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from pipelines.io import parquet_files, replace_dir, staging_dir
from pipelines.runner import RunStats, StageStats
from pipelines.spark.components import connected_components

# Columns this stage writes; stale copies from an earlier dedup are replaced.
_DEDUP_COLUMNS = ("minhash_cluster_id", "minhash_cluster_size")

_HASHERS: dict = {}  # per Python worker: MinHasher by settings (its permutations cost to build)


def _hasher(settings: tuple):
    from pipelines.minhash import MinHasher
    h = _HASHERS.get(settings)
    if h is None:
        num_perm, bands, rows, shingle_words, seed = settings
        h = _HASHERS[settings] = MinHasher(num_perm=num_perm, bands=bands, rows=rows,
                                           shingle_words=shingle_words, seed=seed)
    return h


def _hasher_settings(cfg: dict) -> tuple:
    m = {"num_perm": 112, "bands": 14, "rows": 8, "shingle_words": 5, "seed": 1, **cfg.get("minhash", {})}
    return (int(m["num_perm"]), int(m["bands"]), int(m["rows"]), int(m["shingle_words"]), int(m["seed"]))


_BAND_SCHEMA = pa.schema([("band", pa.int64()), ("_row", pa.int64())])


def _band_rows(settings: tuple):
    """mapInArrow function: (_row, text) batches -> one (band key, _row) row per band.

    A document whose text normalizes to nothing has no signature: it gets one row with a null
    band (counted, never a duplicate), as in MinhashDedup.
    """
    def fn(batches):
        hasher = _hasher(settings)
        for batch in batches:
            bands: list = []
            rows: list = []
            for row, text in zip(batch.column("_row").to_pylist(), batch.column("text").to_pylist()):
                sig = hasher.signature(text or "")
                if sig is None:
                    bands.append(None)
                    rows.append(row)
                    continue
                keys = hasher.band_keys(sig)
                bands.extend(keys)
                rows.extend([row] * len(keys))
            yield pa.RecordBatch.from_arrays([pa.array(bands, pa.int64()), pa.array(rows, pa.int64())],
                                             schema=_BAND_SCHEMA)
    return fn


def read_docs(spark: SparkSession, input_dirs) -> DataFrame | None:
    """All documents under some Parquet directories (batches may differ in optional columns)."""
    paths = [str(p) for p in input_dirs if _has_parquet(p)]
    if not paths:
        return None
    return spark.read.option("mergeSchema", "true").parquet(*paths)


def _has_parquet(path) -> bool:
    path = Path(path)
    return path.suffix == ".parquet" if path.is_file() else bool(parquet_files(path))


def dedup_crawl(spark: SparkSession, input_dirs, out_dir, removed_dir, cfg: dict) -> RunStats:
    """MinHash-dedup every document under `input_dirs` (the batch outputs of one crawl).

    Kept documents go to `out_dir`, duplicates to `removed_dir/minhash/` (stage/reason columns);
    both are written to staging directories and swapped in at the end, so a rerun replaces them
    and a killed run leaves the previous outputs untouched. Returns RunStats with one stage,
    `minhash` (counters: clusters, candidate_edges, no_signature, cc_rounds).
    """
    t0 = time.perf_counter()
    stats = StageStats("minhash")
    out_stage, removed_stage = staging_dir(out_dir), staging_dir(removed_dir)
    try:
        docs = read_docs(spark, input_dirs)
        if docs is not None:
            _dedup(spark, docs, out_stage, removed_stage / "minhash", cfg, stats)
        replace_dir(out_stage, out_dir)
        replace_dir(removed_stage, removed_dir)
    except BaseException:
        _discard(out_stage, removed_stage)
        raise
    stats.seconds = time.perf_counter() - t0
    return RunStats({"minhash": stats})


def _dedup(spark, docs: DataFrame, out_path: Path, removed_path: Path, cfg: dict, stats: StageStats):
    docs = docs.drop(*[c for c in _DEDUP_COLUMNS if c in docs.columns])
    doc_columns = docs.columns
    # A unique long per document: cheaper join keys than string ids, and duplicate ids (two
    # records with one id) stay two documents. Checkpointed, because monotonically_increasing_id
    # is only stable for one computation of the plan and the row numbers are used twice.
    docs = docs.withColumn("_row", F.monotonically_increasing_id()).localCheckpoint(eager=True)
    stats.docs_in = docs.count()

    bands = docs.select("_row", "text").mapInArrow(_band_rows(_hasher_settings(cfg)),
                                                    "band long, _row long").localCheckpoint(eager=True)
    stats.counters["no_signature"] = bands.where(F.col("band").isNull()).count()

    # A star per bucket (members -> the bucket's smallest row) connects the bucket with
    # |bucket| - 1 edges; the window needs one shuffle by band key and no driver round trip.
    in_bucket = bands.where(F.col("band").isNotNull()).withColumn(
        "root", F.min("_row").over(Window.partitionBy("band")))
    edges = (in_bucket.where(F.col("_row") != F.col("root"))
             .select(F.col("root").alias("src"), F.col("_row").alias("dst")).distinct()
             .localCheckpoint(eager=True))
    stats.counters["candidate_edges"] = edges.count()

    components, rounds = connected_components(edges)
    stats.counters["cc_rounds"] = rounds
    # Only documents with an edge need grouping; everything else is a cluster of one.
    members = components.join(docs.select(F.col("_row").alias("node"), "id"), "node")
    clusters = members.groupBy("label").agg(F.min(F.struct("id", "node")).alias("winner"),
                                            F.count("*").alias("size"))
    info = (members.join(clusters, "label")
            .select(F.col("node").alias("_row"),
                    F.col("winner.id").alias("_cluster_id"),
                    F.col("winner.node").alias("_winner"),
                    F.col("size").alias("_size"))
            .localCheckpoint(eager=True))
    stats.counters["clusters"] = clusters.count()
    removed = info.where(F.col("_winner") != F.col("_row")).count()

    annotated = (docs.join(info, "_row", "left")
                 .withColumn("minhash_cluster_id", F.coalesce("_cluster_id", "id"))
                 .withColumn("minhash_cluster_size", F.coalesce("_size", F.lit(1)).cast("long"))
                 .withColumn("_keep", F.col("_winner").isNull() | (F.col("_winner") == F.col("_row"))))
    columns = doc_columns + list(_DEDUP_COLUMNS)
    _write(annotated.where("_keep").select(*columns), out_path)
    if removed:
        _write(annotated.where(~F.col("_keep")).select(*columns)
               .withColumn("stage", F.lit("minhash")).withColumn("reason", F.lit("duplicate")),
               removed_path)
    stats.docs_out = stats.docs_in - removed
    if removed:
        stats.dropped["duplicate"] = removed


def _write(df: DataFrame, path: Path) -> None:
    # Sorted by id so reruns on the same input write the same rows in the same order.
    df.sortWithinPartitions("id").write.mode("overwrite").option("compression", "zstd").parquet(str(path))


def _discard(*dirs: Path) -> None:
    import shutil
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# PII: after dedup (fewer documents to scrub), one task per Parquet file of the deduped crawl.

_SCRUBBERS: dict = {}  # per Python worker: presidio engines are built once, never pickled


def _scrubber(pii_cfg: dict):
    import json
    from pipelines.pii import PIIScrubber
    key = json.dumps(pii_cfg, sort_keys=True, default=str)
    if key not in _SCRUBBERS:
        _SCRUBBERS[key] = PIIScrubber(**pii_cfg)
    return _SCRUBBERS[key]


def _pii_work(files: list[str], pii_cfg: dict, part: int, out_dir: str, _removed_dir) -> dict:
    from pipelines.io import ParquetSink, read_documents
    from pipelines.runner import run_stages
    sink = ParquetSink(Path(out_dir) / f"part-{part:05d}.parquet")
    try:
        docs, stats = run_stages(read_documents([files[part]]), [_scrubber(pii_cfg)])
        for doc in docs:
            sink.write(doc)
        sink.close()
    except BaseException:
        sink.abort()
        raise
    return stats.as_dict()


def scrub_pii(spark: SparkSession, input_dir, out_dir, cfg: dict) -> RunStats:
    """Scrub PII from every document under `input_dir` into `out_dir` (replaced atomically).

    Returns RunStats with one stage, `pii` (drops nothing; counters replaced_<ENTITY>, ...).
    """
    import functools
    from pipelines.spark.batch import run_file_tasks
    files = [str(p) for p in parquet_files(input_dir)] if Path(input_dir).exists() else []
    work = functools.partial(_pii_work, files, dict(cfg.get("pii", {})))
    stats = run_file_tasks(spark, len(files), work, out_dir)
    if "pii" not in stats:
        stats = RunStats({"pii": StageStats("pii")})
    return stats
