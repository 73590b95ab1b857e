"""User-supplied conversations: any number of files in the formats open SFT sets ship in.

    OpenAI JSONL        {"messages": [{"role": "user", "content": "..."}, ...]}      one per line
    Parquet / JSONL     a `messages` column (SmolTalk, UltraChat 200k): a list of {role, content}
                        structs, or the list JSON-encoded as a string
    ShareGPT JSONL      {"conversations": [{"from": "human" | "gpt" | "system", "value": "..."}]}

Paths may be files (.jsonl, .jsonl.gz, .json, .parquet), directories (their such files, in name
order) or glob patterns. Every row is validated (training/conversations/render.py plus
dataset.check_trainable); a bad row goes to the `rejected` list with its file, line (1-based line of
a JSONL file, 1-based row of a Parquet file), the row as text and the reason. Exact duplicates of
an earlier conversation are rejected too (weights in the mixture are the way to repeat data).
Nothing is dropped without a record: kept + rejected = rows read.
"""
from __future__ import annotations

import glob
import gzip
import json
import re
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.errors import InputError
from training.conversations.dataset import check_trainable, content_id
from training.conversations.render import ConversationError

SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "system": "system"}
MAX_ROW_CHARS = 100_000   # of a rejected row kept as text
REJECTED_SCHEMA = pa.schema([("file", pa.string()), ("line", pa.int64()), ("reason", pa.string()),
                             ("row", pa.string())])


def expand_paths(paths: list[str]) -> list[Path]:
    """Files named by paths, directories and globs, in order; a path that matches nothing is an InputError."""
    files: list[Path] = []
    for p in paths:
        matches = sorted(glob.glob(p)) if glob.has_magic(p) else [p]
        if not matches or not all(Path(m).exists() for m in matches):
            raise InputError(f"user conversations: {p} does not exist; data.user.paths takes files, "
                             f"directories or glob patterns of {', '.join(SUFFIXES)} files")
        for m in map(Path, matches):
            if m.is_dir():
                found = sorted(f for f in m.rglob("*") if f.is_file() and f.name.endswith(SUFFIXES)
                               and not f.name.startswith((".", "_")))
                if not found:
                    raise InputError(f"user conversations: {m} holds no {', '.join(SUFFIXES)} files")
                files += found
            elif m.name.endswith(SUFFIXES):
                files.append(m)
            else:
                raise InputError(f"user conversations: {m} is not a {', '.join(SUFFIXES)} file")
    return files


def _raw_rows(path: Path) -> Iterator[tuple[int, object, str | None]]:
    """(line, parsed row or None, error) for each row of a file; blank JSONL lines are not rows."""
    if path.name.endswith(".parquet"):
        try:
            pf = pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as e:
            raise InputError(f"user conversations: {path} is not a readable Parquet file ({e})") from None
        if "messages" not in pf.schema_arrow.names:
            raise InputError(f"user conversations: {path} has no `messages` column "
                             f"(columns: {', '.join(pf.schema_arrow.names)})")
        n = 0
        for batch in pf.iter_batches(batch_size=1000, columns=["messages"]):
            for row in batch.to_pylist():
                n += 1
                yield n, row, None
        return
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield n, json.loads(line), None
                except ValueError as e:
                    yield n, line.rstrip("\n"), f"not valid JSON: {e}"
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"user conversations: cannot read {path} ({e})") from None


def to_messages(row) -> list[dict]:
    """A row in any supported shape -> our messages list (ConversationError says why not)."""
    if not isinstance(row, dict):
        raise ConversationError(f"expected a JSON object with `messages` or `conversations`, got {type(row).__name__}")
    if "messages" in row:
        messages = row["messages"]
        if isinstance(messages, str):
            try:
                messages = json.loads(messages)
            except ValueError as e:
                raise ConversationError(f"messages: a string that is not JSON ({e})") from None
        if not isinstance(messages, list):
            raise ConversationError(f"messages: expected a list, got {type(messages).__name__}")
        # keep role and content only: OpenAI rows may carry name/weight/tool_calls we do not train on
        return [{"role": m.get("role"), "content": m.get("content")} if isinstance(m, dict) else m
                for m in messages]
    if "conversations" in row:
        turns = row["conversations"]
        if not isinstance(turns, list):
            raise ConversationError(f"conversations: expected a list, got {type(turns).__name__}")
        out = []
        for i, t in enumerate(turns):
            who = t.get("from") if isinstance(t, dict) else None
            if who not in SHAREGPT_ROLES:
                raise ConversationError(f"conversations[{i}].from: {who!r} is not one of "
                                        f"{', '.join(SHAREGPT_ROLES)}")
            out.append({"role": SHAREGPT_ROLES[who], "content": t.get("value")})
        return out
    raise ConversationError("no `messages` (OpenAI) or `conversations` (ShareGPT) field; "
                            f"fields: {', '.join(map(str, row)) or 'none'}")


def user_conversations(paths: list[str]) -> tuple[list[dict], list[dict], dict]:
    """(kept rows, rejected rows, stats) for the files at `paths`. Kept rows are dataset rows
    (id, source "user:<file name>", messages); stats counts rows read, kept and rejected per file
    and rejections per reason."""
    kept, rejected = [], []
    seen: dict[str, str] = {}   # conversation id -> where it was first read
    stats = {"files": {}, "rows": 0, "kept": 0, "rejected": 0, "reasons": {}}
    for path in expand_paths(paths):
        per = stats["files"].setdefault(str(path), {"rows": 0, "kept": 0, "rejected": 0})
        for line, row, error in _raw_rows(path):
            per["rows"] += 1
            where = f"{path.name}:{line}"
            reason = error
            if reason is None:
                try:
                    messages = to_messages(row)
                    check_trainable(messages, "messages")
                    cid = content_id("user", messages)
                    if cid in seen:
                        reason = f"duplicate of {seen[cid]}"
                except ConversationError as e:
                    reason = str(e)
            if reason is None:
                seen[cid] = where
                kept.append({"id": cid, "source": f"user:{path.name}", "messages": messages})
                per["kept"] += 1
                continue
            text = row if isinstance(row, str) else json.dumps(row, ensure_ascii=False, default=str)
            rejected.append({"file": str(path), "line": line, "reason": reason, "row": text[:MAX_ROW_CHARS]})
            per["rejected"] += 1
            kind = _reason_kind(reason)
            stats["reasons"][kind] = stats["reasons"].get(kind, 0) + 1
        for k in ("rows", "kept", "rejected"):
            stats[k] += per[k]
    return kept, rejected, stats


def _reason_kind(reason: str) -> str:
    """A short key to count rejections by: the reason without message indexes and row details."""
    if reason.startswith(("not valid JSON", "duplicate")):
        return reason.split(" of ")[0].split(":")[0]
    return re.sub(r"\[\d+\]", "[]", reason)[:80]

