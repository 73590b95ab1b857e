"""Base-model tasks: they score any language model from its next-token probabilities (no sampling).

    bpb             bits per byte on the validation token shards: Σ nats over text targets /
                    (ln 2 · Σ their UTF-8 bytes), the trainer's own measure (trainer.lm_sums);
                    lower is better, and it compares across tokenizers
    mc:<name>       multiple choice by continuation log-likelihood (CORE / HellaSwag style): each
                    choice is scored by its mean log-probability per token after the context, the
                    highest wins; all choices of all items scored in length-sorted batches.
                    Score: centred accuracy (acc - baseline) / (1 - baseline), baseline = the mean
                    of 1/len(choices), so chance is 0 and perfect is 1. Tied best choices (equal
                    to 1e-9) share the item's credit: a model with no preference scores the baseline.

Items come from a user's JSONL ({"context": str, "choices": [str, ...], "gold": index}) or from
`clean_text_items`: sentence completions cut from validation-split documents of clean_text (text the
base model never trained on), the true ending against endings of other sentences.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from pipelines.errors import InputError
from training.evals.core import EvalResult, timed

IGNORE = -100


@dataclass
class Choice:
    id: str
    context: str
    choices: list[str]
    gold: int


# ---- bits per byte -------------------------------------------------------------------------------

class BitsPerByte:
    kind = "base"

    def __init__(self, shards_root: str | Path, max_tokens: int = 32_768, micro_batch: int = 8, name: str = "bpb"):
        self.name, self.root, self.max_tokens, self.micro_batch = name, Path(shards_root), max_tokens, micro_batch

    def run(self, engine, seed: int) -> EvalResult:   # seed unused: the windows are fixed
        return timed(lambda: self._run(engine))

    def _run(self, engine) -> EvalResult:
        from pipelines.shards import TokenShards
        from training.data import val_batches
        from training.lm_job import lm_sums
        shards = TokenShards(self.root, "val")
        vocab = engine.model.config.vocab_size
        if shards.vocab_size != vocab:
            return EvalResult(self.name, self.kind, None, 0, [], higher_is_better=False,
                              note=f"{self.root}: shards of a {shards.vocab_size}-token vocabulary, the model has "
                                   f"{vocab}: not the model's tokenizer")
        seq_len = engine.model.config.block_size
        if shards.num_tokens <= seq_len:
            seq_len = max(8, shards.num_tokens - 1)
        batches = val_batches(shards, seq_len, self.max_tokens, 0, 1, self.micro_batch)
        device = engine.device
        tb = torch.from_numpy(engine.tokenizer.token_bytes.astype(np.int64)).to(device)
        rows = []
        with torch.inference_mode():
            for x, y in batches:
                rows.append(lm_sums(engine.model, x.to(device), y.to(device), tb).cpu())
        sums = torch.cat(rows)
        records = [{"window": i, "nats": r[0], "targets": int(r[1]), "text_nats": r[2], "bytes": int(r[3]),
                    "bpb": r[2] / (np.log(2) * r[3]) if r[3] else None} for i, r in enumerate(sums.tolist())]
        loss, count, nats, nbytes = sums.sum(0).tolist()
        bpb = nats / (np.log(2) * nbytes) if nbytes else None
        return EvalResult(self.name, self.kind, bpb, len(records), records,
                          {"val_loss": loss / count if count else None, "tokens": count, "bytes": nbytes},
                          higher_is_better=False)


# ---- multiple choice -----------------------------------------------------------------------------

def continuation_scores(engine, pairs: list[tuple[list[int], list[int]]], batch_rows: int = 32) -> list[float]:
    """Mean log-probability per continuation token of each (context ids, continuation ids) pair.
    Contexts are cut from the left to fit the model's context. Pairs are scored in batches sorted by
    length (right-padded; padding and context positions are not targets)."""
    model, block = engine.model, engine.model.config.block_size
    seqs = []
    for ctx, cont in pairs:
        cont = cont[:block - 1]
        ctx = ctx[-(block + 1 - len(cont)):]
        seqs.append((ctx + cont, len(ctx)))
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    out = [0.0] * len(seqs)
    with torch.inference_mode():
        for start in range(0, len(order), batch_rows):
            chunk = order[start:start + batch_rows]
            width = max(len(seqs[i][0]) for i in chunk) - 1
            x = torch.zeros((len(chunk), width), dtype=torch.long)
            y = torch.full((len(chunk), width), IGNORE, dtype=torch.long)
            for row, i in enumerate(chunk):
                ids, n_ctx = seqs[i]
                x[row, :len(ids) - 1] = torch.tensor(ids[:-1])
                y[row, n_ctx - 1:len(ids) - 1] = torch.tensor(ids[n_ctx:])
            nll = model(x.to(engine.device), y.to(engine.device), reduction="none").double().cpu()
            counts = (y != IGNORE).sum(1)
            for row, i in enumerate(chunk):
                out[i] = -float(nll[row].sum()) / int(counts[row])
    return out


class MultipleChoice:
    kind = "base"

    def __init__(self, name: str, items: list[Choice], batch_rows: int = 32):
        self.name, self.items, self.batch_rows = name, items, batch_rows

    def run(self, engine, seed: int) -> EvalResult:   # seed unused: scoring is deterministic
        return timed(lambda: self._run(engine))

    def _run(self, engine) -> EvalResult:
        if not self.items:
            return EvalResult(self.name, self.kind, None, 0, [], note="no items")
        tok = engine.tokenizer
        pairs, owner = [], []
        for k, it in enumerate(self.items):
            ctx = [tok.bos_id, *tok.encode(it.context)]
            for c in it.choices:
                pairs.append((ctx, tok.encode(c) or [tok.bos_id]))
                owner.append(k)
        scores = continuation_scores(engine, pairs, self.batch_rows)
        per_item: list[list[float]] = [[] for _ in self.items]
        for k, s in zip(owner, scores):
            per_item[k].append(s)
        records, credit, baseline = [], 0.0, 0.0
        for it, s in zip(self.items, per_item):
            best = max(s)
            tied = [j for j, v in enumerate(s) if math.isclose(v, best, rel_tol=1e-9)]   # float rounding
            got = 1.0 / len(tied) if it.gold in tied else 0.0
            credit += got
            baseline += 1.0 / len(it.choices)
            records.append({"id": it.id, "context": it.context, "choices": it.choices, "gold": it.gold,
                            "scores": s, "chosen": tied[0], "credit": got})
        n = len(self.items)
        acc, base = credit / n, baseline / n
        return EvalResult(self.name, self.kind, (acc - base) / (1 - base), n, records,
                          {"accuracy": acc, "baseline": base})


def read_choice_file(path: str | Path) -> list[Choice]:
    """Items of a user JSONL: one {"context": str, "choices": [str, ...] (2 or more), "gold": index}."""
    from training.evals.core import jsonl_rows
    path = Path(path)
    items = []
    for line_no, where, row in jsonl_rows(path, "multiple-choice", "{context, choices, gold}"):
        if not isinstance(row, dict) or not isinstance(row.get("context"), str):
            raise InputError(f"{where}: context: expected a string")
        choices = row.get("choices")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise InputError(f"{where}: choices: expected a list of two or more non-empty strings")
        gold = row.get("gold")
        if not isinstance(gold, int) or isinstance(gold, bool) or not 0 <= gold < len(choices):
            raise InputError(f"{where}: gold: expected the index of the right choice, 0..{len(choices) - 1}, "
                             f"got {gold!r}")
        items.append(Choice(f"{path.stem}:{line_no}", row["context"], choices, gold))
    if not items:
        raise InputError(f"{path}: no items in the file")
    return items


_SENTENCES = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def clean_text_items(documents: Iterable, n: int, val_fraction: float, choices: int = 4, seed: int = 0,
                     max_docs: int = 5000) -> list[Choice]:
    """Sentence completions from validation-split documents only (a sentence that a train document
    among the scanned ones also holds is left out): the context is the previous sentence and the
    first half of a sentence, the gold the true second half, the distractors second halves of
    sentences of other documents with a word count within 3 of the gold's."""
    from pipelines.shards import split_of
    cands, trained = [], set()   # (doc id, previous sentence, sentence); sentences of train documents
    for i, doc in enumerate(documents):
        if i >= max_docs:
            break
        if not doc.text:
            continue
        sentences = _SENTENCES.split(" ".join(doc.text.split()))
        if split_of(doc.id, val_fraction) != "val":
            trained.update(sentences)
            continue
        cands += [(doc.id, prev[-300:], s) for prev, s in zip([""] + sentences, sentences) if 10 <= len(s.split()) <= 40]
    cands = [(d, prev, " ".join(s.split()[:len(s.split()) // 2]), " " + " ".join(s.split()[len(s.split()) // 2:]))
             for d, prev, s in cands if s not in trained]   # boilerplate a train document also has: not unseen
    ranked = sorted(cands, key=lambda c: hashlib.sha256(f"{seed}:{c[0]}:{c[2]}".encode()).digest())
    items = []
    for k, (doc_id, prev, head, tail) in enumerate(ranked):
        if len(items) >= n:
            break
        size = len(tail.split())
        others = [c[3] for c in ranked[k + 1:] + ranked[:k]
                  if c[0] != doc_id and abs(len(c[3].split()) - size) <= 3 and c[3] != tail]
        distractors = list(dict.fromkeys(others))[:choices - 1]
        if len(distractors) < choices - 1:
            continue
        gold = int(hashlib.sha256(f"{seed}:gold:{doc_id}:{head}".encode()).hexdigest(), 16) % choices
        options = distractors[:gold] + [tail] + distractors[gold:]
        context = (prev + " " + head).strip()
        items.append(Choice(f"clean:{hashlib.sha256(context.encode()).hexdigest()[:12]}", context, options, gold))
    return items
