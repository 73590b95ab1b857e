"""Token shards on Spark: encode the cleaned corpus, byte-identical however it is partitioned.

    driver:    read Parquet (id, text) -> range-partition by id, sort within partitions
    executors: mapInArrow: tokenizer loaded once per Python worker; each task streams its
               documents (in id order) into one part file per split, [BOS]+ids per document,
               plus a token_counts Parquet file; it returns one small row per part
               (split, first id, path, tokens, documents, bytes)
    driver:    parts of a split sorted by first id (= id order, since ranges are disjoint) and
               concatenated into fixed-size shards by the same `ShardSetWriter` the
               single-process writer uses; the parts are deleted; the staging dir is swapped in

The output equals `write_token_shards(documents sorted by (id, text), ...)` byte for byte: the
order is a property of the data, not of the partitioning. Only per-part metadata reaches the
driver's memory; the concatenation streams parts from disk (memmap) one shard slice at a time, so
paths must be visible to the driver and every executor (local disk locally, a shared filesystem on
a cluster). Part files are named by a hash of their first id and written under a temporary name,
so a retried task replaces its own output.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.io import parquet_files, staged, tmp_sibling
from pipelines.shards import (COUNTS_DIR, COUNTS_SCHEMA, SPLITS, ShardSetWriter, pack_documents,
                              split_of, token_dtype, tokens_config)

_PARTS = "_parts"  # inside the staging dir; '_' keeps readers away from it
_PART_SCHEMA = pa.schema([("split", pa.string()), ("first_id", pa.string()), ("path", pa.string()),
                          ("tokens", pa.int64()), ("documents", pa.int64()), ("bytes", pa.int64())])
_PART_DDL = "split string, first_id string, path string, tokens long, documents long, bytes long"
_TOKENIZERS: dict = {}  # per Python worker: loaded tokenizer by path


def _tokenizer(path: str):
    tok = _TOKENIZERS.get(path)
    if tok is None:
        from pipelines.tokenizer import load_tokenizer
        tok = _TOKENIZERS[path] = load_tokenizer(path)
    return tok


class _Part:
    """One split's output of one task: tokens appended to a file, document lengths in memory."""

    def __init__(self, parts_dir: Path, split: str, first_id: str):
        name = hashlib.blake2b(first_id.encode("utf-8"), digest_size=10).hexdigest()
        self.split, self.first_id = split, first_id
        self.path = parts_dir / split / f"part-{name}.tok"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = tmp_sibling(self.path)
        self._f = open(self._tmp, "wb")
        self.lengths: list[np.ndarray] = []
        self.tokens = self.documents = self.bytes = 0

    def add(self, tokens: np.ndarray, lengths: np.ndarray, nbytes: int) -> None:
        self._f.write(tokens.tobytes())
        self.lengths.append(lengths)
        self.tokens += len(tokens)
        self.documents += len(lengths)
        self.bytes += nbytes

    def close(self) -> dict:
        self._f.close()
        os.replace(self._tmp, self.path)
        np.concatenate(self.lengths).astype("<u8").tofile(self.path.with_suffix(".len"))
        return {"split": self.split, "first_id": self.first_id, "path": str(self.path),
                "tokens": self.tokens, "documents": self.documents, "bytes": self.bytes}


def _encode_task(tokenizer_path: str, parts_dir: str, val_fraction: float):
    """mapInArrow function: (id, text) batches sorted by id -> part files; yields part metadata."""
    def fn(batches):
        tok = _tokenizer(tokenizer_path)
        dtype = token_dtype(tok.vocab_size)
        parts: dict[str, _Part] = {}
        counts = {"id": [], "split": [], "token_count": []}
        for batch in batches:
            docs = list(zip(batch.column("id").to_pylist(), batch.column("text").to_pylist()))
            if not docs:
                continue
            encoded = tok.encode_batch([t or "" for _, t in docs])
            by_split: dict[str, list] = {}
            for (doc_id, text), ids in zip(docs, encoded):
                split = split_of(doc_id, val_fraction)
                by_split.setdefault(split, []).append(((doc_id, text or ""), ids))
                counts["id"].append(doc_id)
                counts["split"].append(split)
                counts["token_count"].append(len(ids))
            for split, items in by_split.items():
                if split not in parts:
                    parts[split] = _Part(Path(parts_dir), split, items[0][0][0])
                parts[split].add(*pack_documents(tok.bos_id, items, dtype))
        rows = [p.close() for p in parts.values()]
        if counts["id"]:
            first = hashlib.blake2b(counts["id"][0].encode("utf-8"), digest_size=10).hexdigest()
            out = Path(parts_dir).parent / COUNTS_DIR / f"part-{first}.parquet"
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = tmp_sibling(out)
            pq.write_table(pa.table(counts, schema=COUNTS_SCHEMA), tmp)
            os.replace(tmp, out)
        if rows:
            yield pa.RecordBatch.from_pylist(rows, schema=_PART_SCHEMA)
    return fn


def _read_docs(spark: SparkSession, input_dirs) -> DataFrame | None:
    """Every document under some Parquet directories or files (batches may differ in optional
    columns, hence mergeSchema); None when there are none."""
    files = [str(f) for f in parquet_files(*input_dirs)]
    return spark.read.option("mergeSchema", "true").parquet(*files) if files else None


def write_token_shards_spark(spark: SparkSession, input_dirs, out_root, tokenizer_path, cfg: dict,
                             num_partitions: int | None = None) -> dict:
    """Encode every document (columns id, text) under `input_dirs` into token shards at
    `out_root` (see pipelines/shards.py), atomically. Returns the manifest plus `seconds`.

    num_partitions: encoding tasks (None: spark.sql.shuffle.partitions); never changes the output.
    """
    from pipelines.tokenizer import load_tokenizer
    t0 = time.perf_counter()
    cfg = tokens_config(cfg)
    tokenizer_path = str(Path(tokenizer_path).resolve())
    tok = load_tokenizer(tokenizer_path)
    out_root = Path(out_root)
    with staged(out_root, kind="token_shards") as stage:
        parts_dir = (stage / _PARTS).resolve()
        (stage / COUNTS_DIR).mkdir()
        rows = []
        docs = _read_docs(spark, input_dirs)
        if docs is not None:
            docs = docs.select(F.col("id").cast("string"), F.col("text").cast("string"))
            ranged = (docs.repartitionByRange(num_partitions, "id") if num_partitions
                      else docs.repartitionByRange("id"))
            ranged = ranged.sortWithinPartitions("id", "text")  # text only breaks equal ids
            rows = ranged.mapInArrow(_encode_task(tokenizer_path, str(parts_dir), cfg["val_fraction"]),
                                     _PART_DDL).collect()
        writer = ShardSetWriter(stage, tok.vocab_size, tok.bos_id, tok.digest, cfg)
        for split in SPLITS:
            for r in sorted((r for r in rows if r["split"] == split), key=lambda r: r["first_id"]):
                path = Path(r["path"])
                tokens = (np.memmap(path, dtype=writer.dtype, mode="r") if r["tokens"]
                          else np.zeros(0, writer.dtype))
                lengths = np.fromfile(path.with_suffix(".len"), dtype="<u8").astype(np.int64)
                writer.splits[split].add(tokens, lengths, r["bytes"])
                del tokens
        manifest = writer.finish()
        shutil.rmtree(stage / _PARTS, ignore_errors=True)
    return {**manifest, "seconds": round(time.perf_counter() - t0, 3), "parts": len(rows)}
