"""Preference pairs for the reward model: a prompt, a reply people prefer and one they do not.

User files (JSONL / JSONL.gz / Parquet), one pair per row:
    {"prompt": "Write a haiku about rain", "chosen": "...", "rejected": "..."}
    {"messages": [{"role": "system", ...}, {"role": "user", ...}], "chosen": "...", "rejected": "..."}
Every row is validated; a bad one (no prompt, an empty or missing reply, chosen == rejected, a
duplicate) goes to `rejected` with its file, line and reason: nothing is dropped without a record.

Generated pairs (so the demo has data): for each problem of a verifiable task the chat model samples
a few replies; chosen = a correct, well-formed reply (ends its turn, at most `max_words` words) or
else the task's reference answer; rejected = a wrong, unfinished or rambling sample, or else the
reference buried in filler (rambling). Problems from the task's held-out split give the held-out
pairs, so the reward model is scored on prompts it never saw.

Stored as one Parquet file `pairs.parquet`: id, source, prompt (JSON messages), chosen, rejected, split.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.errors import InputError
from pipelines.io import staged

KIND = "preference_pairs"
SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("prompt", pa.string()),
                    ("chosen", pa.string()), ("rejected", pa.string()), ("split", pa.string())])
FILLER = ("Let me think about this for a while. There are many ways to look at a question like this one, "
          "and it is worth considering each of them carefully before answering. ")


def pair_id(messages: list[dict], chosen: str, rejected: str) -> str:
    blob = json.dumps([messages, chosen, rejected], sort_keys=True, ensure_ascii=False)
    return "pair-" + hashlib.sha256(blob.encode()).hexdigest()[:16]


def _pair_split(messages: list[dict], heldout_fraction: float) -> str:
    """By the prompt, so pairs of one prompt stay on one side (held-out prompts are unseen)."""
    from training.tasks import split_of
    return split_of(json.dumps(messages, sort_keys=True), heldout_fraction)


def user_pairs(paths: list[str], heldout_fraction: float = 0.2) -> tuple[list[dict], list[dict], dict]:
    """(kept rows, rejected rows {file, line, reason, row}, stats) of the user's files."""
    from training.conversations.user import expand_paths
    from training.tasks.user import prompt_messages, read_rows
    kept, rejected, seen = [], [], {}
    stats = {"rows": 0, "kept": 0, "rejected": 0, "reasons": {}}
    for path in expand_paths(paths):
        for line, row in read_rows(path, "preference pairs"):
            stats["rows"] += 1
            where = f"{path.name}:{line}"
            reason = None
            try:
                if not isinstance(row, dict):
                    raise InputError("not a JSON object with prompt/messages, chosen, rejected")
                messages = prompt_messages(row, where)
                for k in ("chosen", "rejected"):
                    if not isinstance(row.get(k), str) or not row[k].strip():
                        raise InputError(f"{where}.{k}: needs a non-empty reply string")
                if row["chosen"].strip() == row["rejected"].strip():
                    raise InputError(f"{where}: chosen and rejected are the same reply (nothing to prefer)")
                pid = pair_id(messages, row["chosen"], row["rejected"])
                if pid in seen:
                    raise InputError(f"{where}: duplicate of {seen[pid]}")
            except InputError as e:
                reason = str(e)
            if reason is None:
                seen[pid] = where
                kept.append({"id": pid, "source": f"user:{path.name}", "prompt": json.dumps(messages),
                             "chosen": row["chosen"], "rejected": row["rejected"],
                             "split": _pair_split(messages, heldout_fraction)})
                continue
            text = row if isinstance(row, str) else json.dumps(row, ensure_ascii=False, default=str)
            rejected.append({"file": str(path), "line": line, "reason": reason, "row": text[:10_000]})
            kind = reason.split(": ", 1)[-1][:60]
            stats["reasons"][kind] = stats["reasons"].get(kind, 0) + 1
    stats["kept"], stats["rejected"] = len(kept), len(rejected)
    return kept, rejected, stats


def ramble(reply: str) -> str:
    return FILLER * 3 + reply + " " + FILLER


def generated_pairs(engine, task: str, problems: int, samples: int = 4, max_tokens: int = 64,
                    temperature: float = 1.0, max_words: int = 60, seed: int = 0) -> tuple[list[dict], dict]:
    """Pairs from a verifiable task and the model's own samples (train and held-out problems)."""
    from training.engine.engine import SamplingParams
    from training.evals.core import row_seed
    from training.rl.rollout import render_prompts, verifiable_reward
    from training.tasks import load_task
    rows, stats = [], {"problems": 0, "sampled_chosen": 0, "sampled_rejected": 0}
    n_heldout = max(1, problems // 5)
    for split, n in (("train", problems - n_heldout), ("heldout", n_heldout)):
        items = load_task(task, split, n, seed)
        many = [it for it in items for _ in range(samples)]
        done = engine.generate(render_prompts(engine.tokenizer, many),
                               SamplingParams(max_tokens=max_tokens, temperature=temperature),
                               seeds=[row_seed(seed, "pairs", it.id, j) for it in items for j in range(samples)])
        rewards, texts = verifiable_reward(many, done, engine.tokenizer)
        for k, it in enumerate(items):
            group = list(zip(rewards[k * samples:(k + 1) * samples], texts[k * samples:(k + 1) * samples]))
            good = [t for r, t in group if r > 0 and len(t.split()) <= max_words]
            bad = [t for r, t in group if r == 0 and t.strip()]
            chosen = good[0] if good else (it.reference or it.answer)
            rejected = bad[0] if bad else ramble(chosen)
            if chosen.strip() == rejected.strip():
                continue
            stats["problems"] += 1
            stats["sampled_chosen"] += bool(good)
            stats["sampled_rejected"] += bool(bad)
            rows.append({"id": pair_id(it.messages, chosen, rejected), "source": f"generated:{task}",
                         "prompt": json.dumps(it.messages), "chosen": chosen, "rejected": rejected, "split": split})
    return rows, stats


def write_pairs(rows: list[dict], out_dir, rejected: list[dict] = ()) -> Path:
    """pairs.parquet, and the user's rejected rows {file, line, reason, row} aside in rejected.jsonl."""
    out_dir = Path(out_dir)
    with staged(out_dir, kind=KIND) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp / "pairs.parquet")
        (tmp / "rejected.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejected))
    return out_dir


def read_pairs(path, split: str | None = None) -> list[dict]:
    """Rows of a pairs dataset (a directory holding pairs.parquet, or the file), prompt decoded."""
    path = Path(path)
    file = path / "pairs.parquet" if path.is_dir() else path
    if not file.is_file():
        raise InputError(f"{path}: no preference pairs (pairs.parquet); materialize `preference_pairs` first")
    rows = [{**r, "prompt": json.loads(r["prompt"])} for r in pq.read_table(file).to_pylist()]
    return [r for r in rows if split is None or r["split"] == split]
