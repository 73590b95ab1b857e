"""The one format every post-training dataset has, and what the SFT trainer reads.

A dataset is a directory of Parquet part files with the columns
    id        stable string (a digest of the content for generated rows: same text, same id)
    source    the generator's name, or "user:<file name>" for user-supplied conversations
    messages  the JSON-encoded messages list (format: training/conversations/render.py)
    split     train | val (the SFT mixture only)
written through pipelines.io: each part under a temporary name until complete, the directory
staged and swapped in whole, so a reader never sees half a dataset.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.errors import InputError
from pipelines.io import ParquetSink, parquet_files, staged
from training.conversations.render import validate

KIND = "conversations"
ROWS_PER_PART = 50_000
SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("messages", pa.string())])
SPLIT_SCHEMA = SCHEMA.append(pa.field("split", pa.string()))


def encode_messages(messages: list[dict]) -> str:
    """Canonical JSON (sorted keys, no spaces): equal conversations encode to equal strings."""
    return json.dumps(messages, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def content_id(prefix: str, messages: list[dict]) -> str:
    return f"{prefix}-{hashlib.sha256(encode_messages(messages).encode()).hexdigest()[:16]}"


def check_trainable(messages, where: str = "messages") -> None:
    """What SFT needs (render.validate with training=True): well-formed turns, an assistant turn to
    learn from, no empty message (an empty user turn or answer teaches nothing but noise)."""
    validate(messages, where, training=True)


def write_conversations(rows: Iterable[dict], out_dir, rows_per_part: int = ROWS_PER_PART) -> dict:
    """Write rows {id, source, messages (list or JSON string), [split]} as a dataset at `out_dir`
    (replacing a previous dataset there). Every row is checked first: a generator bug fails the
    write naming the row instead of writing a conversation the trainer would choke on.
    Returns {"rows": n, "sources": {source: n}}."""
    counts: dict[str, int] = {}
    chunk = min(1000, rows_per_part)
    with staged(out_dir, kind=KIND) as stage:
        sink, part, n, schema = None, 0, 0, None
        batch: list[dict] = []

        def flush():
            nonlocal sink, part
            if sink is None:
                sink = ParquetSink(stage / f"part-{part:05d}.parquet")
            sink.write_table(pa.Table.from_pylist(batch, schema=schema))
            batch.clear()
            if sink.count >= rows_per_part:
                sink.close()
                sink, part = None, part + 1

        for row in rows:
            messages = row["messages"]
            if isinstance(messages, str):
                messages = json.loads(messages)
            check_trainable(messages, f"{row['source']}:{row['id']}.messages")
            schema = schema or (SPLIT_SCHEMA if "split" in row else SCHEMA)
            out = {"id": row["id"], "source": row["source"], "messages": encode_messages(messages)}
            if schema is SPLIT_SCHEMA:
                out["split"] = row["split"]
            batch.append(out)
            counts[row["source"]] = counts.get(row["source"], 0) + 1
            n += 1
            if len(batch) >= chunk:
                flush()
        if batch:
            flush()
        if sink is not None:
            sink.close()
    return {"rows": n, "sources": counts}


def read_conversations(path, decode: bool = True) -> Iterator[dict]:
    """Rows of a dataset (a directory of part files or one file): {id, source, messages, [split]};
    messages decoded to a list unless decode=False (then the JSON string, as stored)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"no conversations dataset at {path}: materialize the asset that writes it")
    for f in parquet_files(path):
        for batch in pq.ParquetFile(f).iter_batches(batch_size=1000):
            for row in batch.to_pylist():
                if decode:
                    row["messages"] = json.loads(row["messages"])
                yield row


def count_conversations(path) -> int:
    path = Path(path)
    return sum(pq.ParquetFile(f).metadata.num_rows for f in parquet_files(path)) if path.exists() else 0


def write_table_dataset(rows: list[dict], out_dir, schema: pa.Schema, kind: str) -> int:
    """A small side dataset (rejected rows, probe outcomes) as one part file, atomically."""
    with staged(out_dir, kind=kind) as stage:
        if rows:
            sink = ParquetSink(stage / "part-00000.parquet")
            sink.write_table(pa.Table.from_pylist(rows, schema=schema))
            sink.close()
    return len(rows)


def read_table_dataset(path) -> list[dict]:
    return [row for f in parquet_files(path) for row in pq.read_table(f).to_pylist()]
