"""The SFT mixture: the post-training datasets mixed by weight, shuffled stably, split train/val.

    split     a conversation is "val" when a hash of its id falls below val_fraction; the hash
              ignores the seed and the weights, so a conversation stays on its side across runs
              and re-weightings, and every copy of it lands on the same side (no train/val leak).
    weights   proportions of the TRAIN rows (normalized over the sources that have rows; a source
              with weight 0 or no rows is left out and reported). With `rows` total train rows a
              source gets round(p * rows); None means rows = the weighted sources' train rows.
    sampling  a source asked for more rows than it has repeats them: every row floor(target / n)
              times, then the remainder drawn without replacement by a stable hash (copies get ids
              "<id>#<k>"). Asked for fewer, it gives a stable sample without replacement.
    val       each source's val rows once, unweighted: a loss estimate gains nothing from copies.
    shuffle   train rows ordered by a hash of seed and id: stable, and independent of input order.

Rows are held in memory with their messages as the stored JSON strings (not decoded): fine for
post-training sets of up to a few million conversations.

Pretraining text (nanochat's midtraining idea): with `pretrain_fraction` f > 0 the mixture also
writes pretrain/ (documents of clean text, id / source / text) and pretrain.json {"fraction": f}.
SFT tokenizes them with the model's tokenizer into full windows trained on every target and makes
them f of its training windows (training/sft.py), so the base's language modelling survives SFT:
the demo's SFT without it took bits per byte on clean text from 1.59 to 3.95. Only documents of
the pretraining TRAIN split are taken (pipelines.shards.split_of with the shards' val_fraction),
so the bits per byte measured on the val shards stay held out. The text budget is counted in
characters, f / (1 - f) of the conversations' characters times PRETRAIN_MARGIN: SFT cuts the windows.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

import pyarrow as pa

from pipelines.errors import InputError
from training.conversations.dataset import read_conversations, write_conversations, write_table_dataset

PRETRAIN_SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("text", pa.string())])
PRETRAIN_MARGIN = 3.0     # characters per window vary (padding, headers): SFT takes the windows it needs


def _unit(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2 ** 64


def split_of(conversation_id: str, val_fraction: float) -> str:
    return "val" if _unit(f"split:{conversation_id}") < val_fraction else "train"


def mix(sources: dict[str, list[dict]], weights: dict[str, float], rows: int | None = None,
        val_fraction: float = 0.05, seed: int = 0) -> tuple[list[dict], list[dict], dict]:
    """(train rows, val rows, stats) from {source name: dataset rows}; rows get a `split` field."""
    train_by = {n: [{**r, "split": "train"} for r in data if split_of(r["id"], val_fraction) == "train"]
                for n, data in sources.items()}
    val_by = {n: [{**r, "split": "val"} for r in data if split_of(r["id"], val_fraction) == "val"]
              for n, data in sources.items()}
    used = {n: w for n, w in weights.items() if w > 0 and train_by.get(n)}
    total = rows if rows is not None else sum(len(train_by[n]) for n in used)
    norm = sum(used.values())
    train, val = [], [r for n in sorted(used) for r in val_by[n]]
    stats = {"sources": {}, "left_out": sorted(n for n in set(weights) | set(sources) if n not in used),
             "val_fraction": val_fraction, "seed": seed}
    for name, w in sorted(used.items()):
        pool = train_by[name]
        target = round(w / norm * total)
        copies, extra = divmod(target, len(pool))
        train += [{**r, "id": _copy_id(r["id"], k)} for k in range(copies) for r in pool]
        ranked = sorted(pool, key=lambda r: _unit(f"{seed}:extra:{r['id']}"))
        train += [{**r, "id": _copy_id(r["id"], copies)} for r in ranked[:extra]]
        stats["sources"][name] = {"available_train": len(pool), "weight": round(w / norm, 4),
                                  "train_rows": target, "repeat": round(target / len(pool), 3),
                                  "val_rows": len(val_by[name])}
    train.sort(key=lambda r: _unit(f"{seed}:order:{r['id']}"))
    val.sort(key=lambda r: _unit(f"{seed}:order:{r['id']}"))
    stats.update(train_rows=len(train), val_rows=len(val))
    return train, val, stats


def _copy_id(conversation_id: str, k: int) -> str:
    return conversation_id if k == 0 else f"{conversation_id}#{k}"


def load_sources(paths: dict[str, Path]) -> dict[str, list[dict]]:
    """{source name: rows} from dataset paths (a missing path: no rows)."""
    return {name: list(read_conversations(p, decode=False)) if Path(p).exists() else []
            for name, p in paths.items()}


def conversation_chars(rows: Iterable[dict]) -> int:
    """Characters of the messages' text (the stored JSON's length less its syntax, roughly)."""
    total = 0
    for r in rows:
        msgs = json.loads(r["messages"]) if isinstance(r["messages"], str) else r["messages"]
        for m in msgs:
            c = m["content"]
            total += len(c) if isinstance(c, str) else sum(len(p.get("text") or p.get("arguments") or "") for p in c)
    return total


def pretrain_rows(documents: Iterable, chars: int, val_fraction: float) -> list[dict]:
    """Documents of the pretraining train split, in corpus order, until `chars` characters."""
    from pipelines.shards import split_of as shard_split
    rows, total = [], 0
    for d in documents:
        if total >= chars:
            break
        if d.text and d.text.strip() and shard_split(d.id, val_fraction) == "train":
            rows.append({"id": d.id, "source": "pretrain", "text": d.text})
            total += len(d.text)
    return rows


def write_mixture(paths: dict[str, Path], out_dir, cfg, documents: Iterable | None = None) -> dict:
    """Mix the datasets at `paths` under the mixture config; writes out_dir/train and out_dir/val,
    and with cfg.pretrain_fraction > 0 out_dir/pretrain from `documents` (clean text)."""
    train, val, stats = mix(load_sources(paths), dict(cfg.weights), cfg.rows, cfg.val_fraction, cfg.seed)
    if not train:
        raise InputError("the SFT mixture has no training rows: every weighted source is empty or has weight 0 "
                         f"(sources: {', '.join(f'{n}={w}' for n, w in cfg.weights.items())}); materialize them "
                         "or set data.mixture.weights")
    out_dir = Path(out_dir)
    stats["train"] = write_conversations(train, out_dir / "train")
    stats["val"] = write_conversations(val, out_dir / "val")
    f = cfg.pretrain_fraction
    if f > 0:
        if documents is None:
            raise InputError(f"data.mixture.pretrain_fraction is {f} but no clean text was given to mix in: "
                             "materialize clean_text, or set pretrain_fraction to 0")
        budget = int(PRETRAIN_MARGIN * f / (1 - f) * conversation_chars(train))
        text = pretrain_rows(documents, budget, cfg.pretrain_val_fraction)
        if not text:
            raise InputError("data.mixture.pretrain_fraction > 0 but clean text has no train-split documents")
        write_table_dataset(text, out_dir / "pretrain", PRETRAIN_SCHEMA, kind="pretrain_text")
        (out_dir / "pretrain.json").write_text(json.dumps({"fraction": f, "documents": len(text),
                                                           "chars": sum(len(r["text"]) for r in text),
                                                           "val_fraction": cfg.pretrain_val_fraction}))
        stats["pretrain"] = {"fraction": f, "documents": len(text), "chars": sum(len(r["text"]) for r in text)}
    return stats
