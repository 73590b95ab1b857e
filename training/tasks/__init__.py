"""Verifiable task sets for RL: prompts (chat messages) with a checker that knows the exact answer.

    items = load_task("arithmetic", split="train", n=500, seed=0)      # list[TaskItem]
    right, got = items[0].check(reply_text)                               # the reward's source

Tasks (each has disjoint train / heldout splits: a problem's split is a stable hash of its canonical
key, so no seed draws a held-out problem into training):
    toy           "Repeat 47." answered exactly "Answer: 47" (training/tasks/toy.py): learnable on CPU
    arithmetic    step-by-step multiplication, chains, division, word problems (reasoning.py's
                  generators); right when the committed number is the answer
    counting      letter counts, vowel counts, word lengths (the python tool helps): the number
    spelling      reversals, n-th letters, letter-by-letter spellings: the exact string
    PATH          a user's JSONL / Parquet of {messages | prompt, answer[, check, split]}
                  (training/tasks/user.py): exact-match or numeric checker
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pipelines.errors import ConfigError

SPLITS = ("train", "heldout")
BUILTIN = ("toy", "arithmetic", "counting", "spelling")


@dataclass
class TaskItem:
    id: str                              # the canonical key: what the problem is, not its wording
    messages: list[dict]                 # the prompt: a conversation ending with a user turn
    answer: str                          # the exact answer (for reports and generated preference pairs)
    check: Callable[[str], tuple[bool, str | None]]   # reply text -> (right, what was extracted)
    reference: str | None = None         # a correct, well-formed reply (for generated preference pairs)
    meta: dict = field(default_factory=dict)


def split_of(key: str, heldout_fraction: float = 0.2) -> str:
    """'heldout' for a stable `heldout_fraction` of keys, else 'train' (the same hash as reasoning.py)."""
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2 ** 64
    return "heldout" if h < heldout_fraction else "train"


def load_task(spec: str, split: str, n: int | None = None, seed: int = 0) -> list[TaskItem]:
    """Up to `n` items (all when None) of one split of a task: a built-in name or a user file."""
    if split not in SPLITS:
        raise ConfigError(f"task split must be one of {', '.join(SPLITS)}, not {split!r}")
    if spec == "toy":
        from training.tasks.toy import toy_items
        items = toy_items(split)
    elif spec in ("arithmetic", "counting", "spelling"):
        from training.tasks.reasoning_tasks import reasoning_task
        items = reasoning_task(spec, split, n or 200, seed)
    elif Path(spec).suffix in (".jsonl", ".parquet") or spec.endswith(".jsonl.gz"):
        from training.tasks.user import user_task
        items = user_task(spec, split)
    else:
        raise ConfigError(f"rl.task: {spec!r} is neither a built-in task ({', '.join(BUILTIN)}) nor a "
                          ".jsonl / .parquet file of {messages | prompt, answer}")
    return items if n is None else items[:n]


def user_turn(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]
