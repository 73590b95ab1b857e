"""Per-crawl stages on Spark: MinHash near-dedup over all batches of a crawl, then PII scrubbing.

Dedup keeps exactly the documents the single-machine `pipelines.minhash.MinhashDedup` keeps (same
signatures, same band keys, same rule: a cluster is a connected component of "shares a band key",
the document kept is the smallest by `pipelines.minhash.survivor_key` (earliest capture, longest
text, smallest id; then input order) and the cluster's id is its id). The difference is where the
work happens:

    signatures + band keys   one task per input Parquet file (id, text columns only), one
                             MinHasher per Python worker; row = file index << 32 | row in file
    candidate edges          group by band key; every member -> the bucket's smallest row
    clusters                 connected components in Spark (pipelines/spark/components.py)
    cluster of each row      written as Parquet partitioned by input file (only clustered rows)
    keep / drop              one task per input file streams it through, with its clustered rows

Nothing proportional to the crawl ever reaches the driver: it only collects counts. The row
numbers come from the files themselves, so they are the same on every run and retry, and the
documents' text is read twice (hashing, writing) but never shuffled.
"""
from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import Observation, SparkSession, Window
from pyspark.sql import functions as F

from pipelines.io import ParquetSink, check_output_target, parquet_files, scratch
from pipelines.runner import RunStats, StageStats
from pipelines.spark.components import connected_components
from pipelines.spark.ship import is_connect

# Columns this stage writes; stale copies from an earlier dedup are replaced.
_DEDUP_COLUMNS = ("minhash_cluster_id", "minhash_cluster_size")
_ROW_BITS = 32  # row id = file index << 32 | row within the file

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


# band, row, and the document's survivor_key (capture time, minus text length, id) for the winner
_BAND_SCHEMA = pa.schema([("band", pa.int64()), ("_row", pa.int64()), ("id", pa.string()),
                          ("capture", pa.string()), ("neg_len", pa.int64())])
_NODE_FIELDS = ("id", "capture", "neg_len")


def _band_rows(files: list[str], settings: tuple):
    """mapInArrow function: file indices -> one (band key, _row, id, capture, neg_len) row per band
    of each document.

    A document whose text normalizes to nothing has no signature: it gets one row with a null
    band (counted, never a duplicate), as in MinhashDedup.
    """
    from pipelines.minhash import survivor_key

    def fn(batches):
        hasher = _hasher(settings)
        for batch in batches:
            for part in batch.column("id").to_pylist():
                row = part << _ROW_BITS
                pf = pq.ParquetFile(files[part])
                columns = [c for c in ("id", "text", "date") if c in pf.schema_arrow.names]
                for chunk in pf.iter_batches(2048, columns=columns):
                    cols = [[] for _ in _BAND_SCHEMA]  # band, _row, id, capture, neg_len
                    dates = chunk.column("date").to_pylist() if "date" in columns else [None] * chunk.num_rows
                    for doc_id, text, date in zip(chunk.column("id").to_pylist(), chunk.column("text").to_pylist(),
                                                  dates):
                        sig = hasher.signature(text or "")
                        keys = [None] if sig is None else hasher.band_keys(sig)
                        capture, neg_len, _ = survivor_key(date, text, doc_id)
                        cols[0].extend(keys)
                        for col, value in zip(cols[1:], (row, doc_id, capture, neg_len)):
                            col.extend([value] * len(keys))
                        row += 1
                    yield pa.RecordBatch.from_arrays([pa.array(c, f.type) for c, f in zip(cols, _BAND_SCHEMA)],
                                                     schema=_BAND_SCHEMA)
    return fn


def dedup_crawl(spark: SparkSession, input_dirs, out_dir, removed_dir, cfg: dict) -> RunStats:
    """MinHash-dedup every document under `input_dirs` (the batch outputs of one crawl).

    Kept documents go to `out_dir` (one part per input file), duplicates to
    `removed_dir/minhash/` (stage/reason columns); both are written to staging directories and
    swapped in at the end, so a rerun replaces them and a killed run leaves the previous outputs
    untouched. Returns RunStats with one stage, `minhash` (counters: clusters, candidate_edges,
    no_signature, cc_rounds).
    """
    from pipelines.spark.batch import run_file_tasks
    t0 = time.perf_counter()
    check_output_target(out_dir, "deduped_text")  # now, not after the clustering
    if removed_dir is not None:
        check_output_target(removed_dir, "removed")
    files = [str(f.absolute()) for f in parquet_files(*input_dirs)]  # this order numbers the rows
    # Cluster assignments, between the Spark job that finds them and the tasks that write; beside
    # the output so executors on a cluster see it too; removed whatever happens. (A folder inside
    # the scratch one: Spark's writer refuses to write into a directory that exists.)
    with scratch(out_dir) as tmp:
        clusters_dir = tmp / "clusters"
        counters = _find_clusters(spark, files, clusters_dir, cfg) if files else {}
        work = functools.partial(_write_part, files, str(clusters_dir))
        stats = run_file_tasks(spark, len(files), work, out_dir, removed_dir, kind="deduped_text")
    minhash = stats.get("minhash") or StageStats("minhash")
    minhash.counters.update(counters)
    minhash.seconds = time.perf_counter() - t0
    return RunStats({"minhash": minhash})


def _find_clusters(spark: SparkSession, files: list[str], clusters_dir: Path, cfg: dict) -> dict:
    """Write (file, _row, cluster id, winner row, size) for every document in a cluster of two
    or more under `clusters_dir` (partitioned by file); returns the counters."""
    n = len(files)
    signed = Observation("minhash-signatures")
    bands = (spark.range(0, n, 1, n)
             .mapInArrow(_band_rows(files, _hasher_settings(cfg)),
                         "band long, _row long, id string, capture string, neg_len long")
             .observe(signed, F.coalesce(F.sum(F.col("band").isNull().cast("long")), F.lit(0))
                      .alias("no_signature")))
    # A star per bucket (members -> the bucket's smallest row) connects the bucket with
    # |bucket| - 1 edges; the window needs one shuffle by band key and no driver round trip.
    root = F.min(F.struct("_row", *_NODE_FIELDS)).over(Window.partitionBy("band"))
    counted = Observation("minhash-edges")
    edges = (bands.where(F.col("band").isNotNull()).withColumn("root", root)
             .where(F.col("_row") != F.col("root._row"))
             .select(F.col("root._row").alias("src"), *(F.col(f"root.{c}").alias(f"src_{c}") for c in _NODE_FIELDS),
                     F.col("_row").alias("dst"), *(F.col(c).alias(f"dst_{c}") for c in _NODE_FIELDS))
             .distinct()
             .observe(counted, F.count(F.lit(1)).alias("candidate_edges")))
    if is_connect(spark):
        # Spark Connect fills observed metrics on actions only, not on a checkpoint: one cached
        # count computes the edges (and both observations) once, as the checkpoint does
        edges = edges.persist()
        edges.count()
    else:
        edges = edges.localCheckpoint(eager=True)
    counters = {**signed.get, **counted.get, "cc_rounds": 0}
    if not counters["candidate_edges"]:
        return counters  # every document is a cluster of one: nothing to write

    components, counters["cc_rounds"] = connected_components(edges.select("src", "dst"))
    nodes = edges.select(F.col("src").alias("node"), *(F.col(f"src_{c}").alias(c) for c in _NODE_FIELDS)).unionByName(
        edges.select(F.col("dst").alias("node"), *(F.col(f"dst_{c}").alias(c) for c in _NODE_FIELDS))).distinct()
    cluster = Window.partitionBy("label")  # one shuffle; a group-by would need a join back
    # the survivor: smallest (capture, neg_len, id, node), as MinhashDedup's survivor_key + index
    (components.join(nodes, "node")
     .select(F.shiftright("node", _ROW_BITS).alias("file"), F.col("node").alias("_row"),
             F.min(F.struct("capture", "neg_len", "id", "node")).over(cluster).alias("winner"),
             F.count(F.lit(1)).over(cluster).alias("size"))
     .select("file", "_row", F.col("winner.id").alias("cluster_id"),
             F.col("winner.node").alias("winner"), "size")
     .repartition("file")  # one Parquet file per input file
     .write.partitionBy("file").parquet(str(clusters_dir)))
    return counters


def _write_part(files: list[str], clusters_dir: str, part: int, out_dir: str, removed_dir: str) -> dict:
    """One input file -> its kept rows (out_dir) and duplicates (removed_dir/minhash), in input
    order, each row annotated with its cluster id and size. Streams the file by row group."""
    from pipelines.spark.batch import task_result
    info_dir = Path(clusters_dir) / f"file={part}"
    cluster_of: dict[int, tuple] = {}
    if info_dir.is_dir():
        info = pq.read_table(info_dir, columns=["_row", "cluster_id", "winner", "size"]).to_pydict()
        base = part << _ROW_BITS
        for row, cid, winner, size in zip(info["_row"], info["cluster_id"], info["winner"], info["size"]):
            cluster_of[row - base] = (cid, size, winner == row)
    name = f"part-{part:05d}.parquet"
    kept = ParquetSink(Path(out_dir) / name)
    dropped = ParquetSink(Path(removed_dir) / "minhash" / name,
                          extra={"stage": "minhash", "reason": "duplicate"})
    stats = StageStats("minhash")
    offset = 0
    try:
        for batch in pq.ParquetFile(files[part]).iter_batches(2048):
            batch = pa.Table.from_batches([batch])
            batch = batch.drop_columns([c for c in _DEDUP_COLUMNS if c in batch.column_names])
            ids = batch.column("id").to_pylist()
            info = [cluster_of.get(offset + i, (doc_id, 1, True)) for i, doc_id in enumerate(ids)]
            keep = np.array([k for _, _, k in info], dtype=bool)
            batch = (batch.append_column("minhash_cluster_id", pa.array([c for c, _, _ in info], pa.string()))
                     .append_column("minhash_cluster_size", pa.array([s for _, s, _ in info], pa.int64())))
            kept.write_table(batch.filter(keep))
            dropped.write_table(batch.filter(~keep))
            stats.docs_in += len(ids)
            stats.counters["clusters"] += sum(1 for _, size, k in info if k and size > 1)
            offset += len(ids)
        kept.close()
        dropped.close()
    except BaseException:
        kept.abort()
        dropped.abort()
        raise
    stats.docs_out = kept.count
    if dropped.count:
        stats.dropped["duplicate"] = dropped.count
    return task_result(RunStats({"minhash": stats}))


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
    from pipelines.io import read_documents
    from pipelines.runner import run_stages
    from pipelines.spark.batch import task_result
    sink = ParquetSink(Path(out_dir) / f"part-{part:05d}.parquet")
    try:
        docs, stats = run_stages(read_documents([files[part]]), [_scrubber(pii_cfg)])
        for doc in docs:
            sink.write(doc)
        sink.close()
    except BaseException:
        sink.abort()
        raise
    return task_result(stats)


def scrub_pii(spark: SparkSession, input_dir, out_dir, cfg: dict) -> RunStats:
    """Scrub PII from every document under `input_dir` into `out_dir` (replaced atomically).

    Returns RunStats with one stage, `pii` (drops nothing; counters replaced_<ENTITY>, ...).
    """
    import functools
    from pipelines.spark.batch import run_file_tasks
    files = [str(p) for p in parquet_files(input_dir)]
    work = functools.partial(_pii_work, files, dict(cfg.get("pii", {})))
    stats = run_file_tasks(spark, len(files), work, out_dir, kind="clean_text")
    if "pii" not in stats:
        stats = RunStats({"pii": StageStats("pii")})
    return stats
