"""Held-out means held out: every gate and eval prompt checked against every training prompt by a
hash of its normalized text.

    normalize(text)      Unicode NFKC, casefold, whitespace collapsed, punctuation stripped at the ends
                         ("  What's your NAME?! " and "what's your name" are the same prompt)
    text_hash(text)      sha256 of the normalized text (16 hex digits: collisions are out of reach
                         for sets of millions)
    training_hashes(rows)        every user turn of the training conversations
    check_disjoint(texts, train) the texts that are not in training, and the ones that were (a caller
                                 excludes them, or fails loudly with `strict`)
    gate_prompts(train, val, n)  the chat model's protocol gate: held-out opening turns stratified by
                                 source (user-supplied conversations included), none in training

Why not the val split as it stands: the mixture splits by conversation id, and generated
conversations repeat their questions with other answers (17 of 21 val identity prompts appeared
verbatim in training), so a "held-out" prompt was often a trained one.
"""
from __future__ import annotations

import hashlib
import json
import unicodedata
from typing import Iterable

from pipelines.errors import UserError


def normalize(text: str) -> str:
    text = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    start, end = 0, len(text)
    while start < end and unicodedata.category(text[start]).startswith("P"):
        start += 1
    while end > start and unicodedata.category(text[end - 1]).startswith("P"):
        end -= 1
    return text[start:end].strip()


def text_hash(text: str) -> str:
    return hashlib.sha256(normalize(text).encode()).hexdigest()[:16]


def message_list(row_or_messages) -> list[dict]:
    msgs = row_or_messages.get("messages") if isinstance(row_or_messages, dict) else row_or_messages
    return json.loads(msgs) if isinstance(msgs, str) else list(msgs or [])


def content_text(content) -> str:
    """A message's text: the string, or its text parts (tool calls and outputs are not prompt text)."""
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content or [] if isinstance(p, dict) and p.get("type") == "text")


def user_texts(row_or_messages) -> list[str]:
    return [content_text(m["content"]) for m in message_list(row_or_messages) if m.get("role") == "user"]


def opening_prompt(row_or_messages) -> list[dict] | None:
    """The messages before the first assistant turn, when the last of them is a user turn."""
    msgs = message_list(row_or_messages)
    first = next((i for i, m in enumerate(msgs) if m["role"] == "assistant"), None)
    if first and msgs[first - 1]["role"] == "user":
        return msgs[:first]
    return None


def training_hashes(rows: Iterable) -> set[str]:
    """Hashes of every user turn of every training conversation (not only the opening ones: a
    prompt trained as a second turn is trained all the same)."""
    return {text_hash(t) for r in rows for t in user_texts(r) if t.strip()}


def check_disjoint(texts: list[str], train: set[str], what: str = "eval set",
                   strict: bool = False) -> tuple[list[int], list[int]]:
    """(indices of texts not in training, indices of texts that are). With `strict` a text found in
    training fails with one line naming it (for sets that must be held out by construction)."""
    kept, dropped = [], []
    for i, t in enumerate(texts):
        (dropped if text_hash(t) in train else kept).append(i)
    if strict and dropped:
        raise UserError(f"{what}: {len(dropped)} of {len(texts)} prompts appear in the training data "
                        f"(normalized-text hash), e.g. {texts[dropped[0]]!r}")
    return kept, dropped


def _order(seed: int, key: str) -> bytes:
    return hashlib.sha256(f"{seed}:{key}".encode()).digest()


def gate_prompts(train_rows: Iterable, val_rows: Iterable, n: int, seed: int = 0,
                 extra: dict[str, list[str]] | None = None) -> tuple[list[list[dict]], dict]:
    """Up to `n` opening turns for the protocol gate, none of them (normalized) in any training
    conversation, stratified by source: sources take turns (round robin, in name order), each in a
    stable seeded order, so a small source (a user's file) is sampled as surely as a big one.

    `val_rows`: the mixture's val split (source per row); `extra`: more held-out prompts by source
    (the generators' held-out paraphrases and problems), checked the same way.
    Returns (prompts, stats): stats per source {"available", "in_training", "used"}."""
    train = training_hashes(train_rows)
    pools: dict[str, list[tuple[bytes, list[dict]]]] = {}
    stats: dict[str, dict] = {}
    seen: set[str] = set()

    def offer(source: str, key: str, prompt: list[dict]):
        s = stats.setdefault(source, {"available": 0, "in_training": 0, "used": 0})
        h = text_hash(content_text(prompt[-1]["content"]))
        if h in seen:
            return
        seen.add(h)
        s["available"] += 1
        if h in train:
            s["in_training"] += 1
            return
        pools.setdefault(source, []).append((_order(seed, key), prompt))

    for r in val_rows:
        prompt = opening_prompt(r)
        if prompt is not None and content_text(prompt[-1]["content"]).strip():
            offer(str(r.get("source") or "unknown"), str(r.get("id")), prompt)
    for source, texts in (extra or {}).items():
        for t in texts:
            offer(source, t, [{"role": "user", "content": t}])
    queues = {s: [p for _, p in sorted(pool, key=lambda x: x[0])] for s, pool in sorted(pools.items())}
    out: list[list[dict]] = []
    while len(out) < n and any(queues.values()):
        for source, q in queues.items():
            if q and len(out) < n:
                out.append(q.pop(0))
                stats[source]["used"] += 1
    return out, stats


def generator_heldout_prompts(seed: int = 0, problems: int = 64) -> dict[str, list[str]]:
    """The generators' held-out prompts by source: identity paraphrases and reasoning problems
    (never drawn for training, by construction: identity.HELDOUT, reasoning.split_of)."""
    from training.conversations.identity import identity_questions
    from training.conversations.reasoning import draw_problems
    return {"heldout:identity": [q for qs in identity_questions("heldout").values() for q in qs],
            "heldout:reasoning": [p.question for p in draw_problems(problems, seed, "heldout", tool_fraction=0.5)]}
