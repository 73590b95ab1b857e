"""A user's verifiable task: JSONL (.jsonl, .jsonl.gz) or Parquet rows of

    {"prompt": "What is 6 * 7?", "answer": "42"}                               a single user turn
    {"messages": [{"role": "system", ...}, {"role": "user", ...}], "answer": "42"}
    optional: "check": "numeric" (default when the answer is a number) | "exact" (the reply, stripped,
              equals the answer) | "contains" (the answer occurs in the reply); "split": "train" |
              "heldout" (default: a stable hash of the prompt, 20% held out); "id"

Every row is validated; a bad one is an InputError naming the file, line and field (a task set is
small and hand-made, so a mistake in it is fixed, not skipped). Duplicate prompts are refused: two
rows with the same prompt could land in different splits.
"""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

from pipelines.errors import InputError
from training.tasks import SPLITS, TaskItem, split_of, user_turn

CHECKS = ("numeric", "exact", "contains")


def read_rows(path: str | Path, what: str) -> list[tuple[int, object]]:
    """(1-based line or row, parsed row) of a JSONL / JSONL.gz / Parquet file; a line that is not JSON
    is returned as its text (the caller rejects it with the line number)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what}: {path} does not exist (JSONL or Parquet file)")
    if path.name.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq
        try:
            return list(enumerate(pq.read_table(path).to_pylist(), 1))
        except (OSError, pa.ArrowException) as e:
            raise InputError(f"{what}: {path} is not a readable Parquet file ({e})") from None
    opener = gzip.open if path.name.endswith(".gz") else open
    rows = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append((n, json.loads(line)))
                    except ValueError:
                        rows.append((n, line.rstrip("\n")))
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{what}: cannot read {path} ({e})") from None
    return rows


def prompt_messages(row: dict, where: str) -> list[dict]:
    """`messages` (a conversation ending with a user turn) or `prompt` (one user turn), validated."""
    from training.conversations.render import ConversationError, validate
    if "messages" in row:
        messages = row["messages"]
        if isinstance(messages, str):
            try:
                messages = json.loads(messages)
            except ValueError:
                raise InputError(f"{where}.messages: a string that is not JSON") from None
    elif isinstance(row.get("prompt"), str) and row["prompt"].strip():
        messages = user_turn(row["prompt"])
    else:
        raise InputError(f"{where}: needs `prompt` (a non-empty string) or `messages` (a list of {{role, content}})")
    try:
        validate(messages, f"{where}.messages")
    except ConversationError as e:
        raise InputError(str(e)) from None
    if messages[-1]["role"] != "user":
        raise InputError(f"{where}.messages: the prompt must end with a user turn for the model to answer")
    return messages


def make_check(kind: str, answer: str):
    from training.evals.core import to_number
    from training.evals.generative import number_check
    if kind == "numeric":
        return number_check(to_number(answer))
    if kind == "exact":
        return lambda text: (text.strip() == answer, text.strip())
    return lambda text: (answer in text, answer if answer in text else None)


def user_task(path: str | Path, split: str) -> list[TaskItem]:
    from training.evals.core import to_number
    items, seen = [], {}
    for line, row in read_rows(path, "task file"):
        where = f"{Path(path).name}:{line}"
        if not isinstance(row, dict):
            raise InputError(f"{where}: not a JSON object with `prompt`/`messages` and `answer`")
        messages = prompt_messages(row, where)
        answer = row.get("answer")
        if isinstance(answer, (int, float)) and not isinstance(answer, bool):
            answer = f"{answer:g}"
        if not isinstance(answer, str) or not answer.strip():
            raise InputError(f"{where}.answer: needs the exact answer as a non-empty string or a number")
        answer = answer.strip()
        kind = row.get("check") or ("numeric" if to_number(answer) is not None else "exact")
        if kind not in CHECKS:
            raise InputError(f"{where}.check: {kind!r} is not one of {', '.join(CHECKS)}")
        if kind == "numeric" and to_number(answer) is None:
            raise InputError(f"{where}.answer: {answer!r} is not a number, but check is 'numeric'")
        key = str(row.get("id") or hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16])
        if key in seen:
            raise InputError(f"{where}: the same prompt (or id) as line {seen[key]}; keep one")
        seen[key] = line
        row_split = row.get("split") or split_of(key)
        if row_split not in SPLITS:
            raise InputError(f"{where}.split: {row_split!r} is not one of {', '.join(SPLITS)}")
        if row_split == split:
            items.append(TaskItem(key, messages, answer, make_check(kind, answer), reference=answer if kind == "exact" else f"Answer: {answer}",
                                  meta={"check": kind}))
    return items
