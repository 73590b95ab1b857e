"""Generative chat tasks: the model answers a user turn; an exact checker scores each reply.

    identity        held-out paraphrases of "who are you" (identity.identity_questions("heldout"));
                    right when the reply contains the configured name
    arithmetic      held-out step-by-step problems (reasoning.draw_problems(split="heldout")):
                    right when the committed number (after "Answer:", else the last) is the answer
    counting        held-out letter counts, vowel counts, word lengths: the number
    spelling        held-out reversals, n-th letters, letter-by-letter spellings: the exact string
    gsm8k:<file>    a user's GSM8K-format JSONL ({question, answer} with "#### n"): the number

Reasoning tasks run with the engine's tools (the python sandbox) and, as `<task>_no_tools`, without
any (a tool call then gets an "unknown tool" error back). With `samples` > 1 (temperature > 0) every
item gets that many replies and pass@k is reported; the score is pass@1 (the mean share right).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pipelines.errors import InputError
from training.evals.core import (EvalResult, Sampling, final_number, generate_rows, pass_at_k_metrics, reply_parts,
                                 reply_text, row_seed, timed, to_number, without_tools)

COUNTING = ("count", "vowels", "length")
SPELLING = ("reverse", "nth", "spell")


@dataclass
class Item:
    id: str
    question: str
    expected: str
    check: Callable[[str], tuple[bool, str | None]]    # reply text -> (right, what was extracted)
    meta: dict = field(default_factory=dict)
    system: str | None = None                          # a system prompt before the question


class GenerativeTask:
    kind = "chat"

    def __init__(self, name: str, items: list[Item], sampling: Sampling | None = None, tools: bool = True):
        self.name, self.items, self.sampling, self.tools = name, items, sampling or Sampling(), tools

    def run(self, engine, seed: int) -> EvalResult:
        return timed(lambda: self._run(engine, seed))

    def _run(self, engine, seed: int) -> EvalResult:
        from training.conversations.render import render_for_completion
        if not self.items:
            return EvalResult(self.name, self.kind, None, 0, [], note="no items")
        engine = engine if self.tools else without_tools(engine)
        s = self.sampling
        rows = [(i, j) for i in range(len(self.items)) for j in range(s.samples)]
        prompts = {i: render_for_completion(engine.tokenizer, ([{"role": "system", "content": it.system}]
                                                               if it.system else [])
                                            + [{"role": "user", "content": it.question}])
                   for i, it in enumerate(self.items)}
        done = generate_rows(engine, [prompts[i] for i, _ in rows],
                             [row_seed(seed, self.name, self.items[i].id, j) for i, j in rows], s)
        records = [{"id": it.id, "question": it.question, "expected": it.expected, **it.meta, "replies": [],
                    "extracted": [], "correct": [], "tool_calls": [], "finish_reason": []} for it in self.items]
        for (i, _), c in zip(rows, done):
            parts = reply_parts(engine.tokenizer, c)
            text = reply_text(parts)
            right, got = self.items[i].check(text)
            r = records[i]
            r["replies"].append(text)
            r["extracted"].append(got)
            r["correct"].append(bool(right))
            r["tool_calls"].append(sum(p["type"] == "tool_call" for p in parts))
            r["finish_reason"].append(c.finish_reason)
        counts = [(len(r["correct"]), sum(r["correct"])) for r in records]
        metrics = pass_at_k_metrics(counts)
        metrics["tool_call_rate"] = sum(min(1, t) for r in records for t in r["tool_calls"]) / len(rows)
        score = sum(c / n for n, c in counts) / len(counts)
        if any(it.system for it in self.items):   # the rate with and without a system prompt
            for key, under in (("with_system", True), ("without_system", False)):
                rates = [c / n for it, (n, c) in zip(self.items, counts) if bool(it.system) == under]
                metrics[f"{key}_rate"], metrics[f"{key}_items"] = (sum(rates) / len(rates) if rates else None), len(rates)
        return EvalResult(self.name, self.kind, score, len(records), records, metrics)


# ---- checkers --------------------------------------------------------------------------------

def number_check(expected: float) -> Callable[[str], tuple[bool, str | None]]:
    def check(text: str):
        got = final_number(text)
        return got is not None and got == expected, None if got is None else f"{got:g}"
    return check


def word_check(expected: str, chars: str = "a-z") -> Callable[[str], tuple[bool, str | None]]:
    """Right when `expected` occurs as a whole word (not inside a longer run of `chars`)."""
    pattern = re.compile(rf"(?<![{chars}]){re.escape(expected.lower())}(?![{chars}])")

    def check(text: str):
        hit = pattern.search(text.lower())
        return hit is not None, hit[0] if hit else None
    return check


_QUOTED_LETTER = re.compile(r"""(?<![A-Za-z])['"‘’“”]([A-Za-z])['"‘’“”](?![A-Za-z])""")
_LONE_LETTER = re.compile(r"(?<![A-Za-z'’])([A-Za-z])(?![A-Za-z])")
_PRONOUN_I = re.compile(r"I(?:['’][a-z]|\s+[a-z])")  # "I'm", "I hope": a word, not the letter


def letter_check(expected: str) -> Callable[[str], tuple[bool, str | None]]:
    """Right when the answer's letter is the expected one: the last quoted letter ('r', "r"), else
    the last letter standing alone (r) that is not the pronoun I ("... is r. I hope that helps")."""
    def check(text: str):
        found = _QUOTED_LETTER.findall(text) or [
            m[1] for m in _LONE_LETTER.finditer(text) if not (m[1] == "I" and _PRONOUN_I.match(text, m.start()))]
        got = found[-1].lower() if found else None
        return got == expected.lower(), got
    return check


def name_check(name: str) -> Callable[[str], tuple[bool, str | None]]:
    def check(text: str):
        hit = name.lower() in text.lower()
        return hit, name if hit else None
    return check


# ---- item sets -------------------------------------------------------------------------------

def identity_items(name: str, intents: tuple[str, ...] = ("name", "who", "other"),
                   systems: bool = True) -> list[Item]:
    """The held-out paraphrases of the intents whose every training answer says the name, asked bare
    and (`systems`) under each held-out system prompt: the name must hold under prompts never trained."""
    from training.conversations.identity import identity_questions, system_prompts
    heldout = identity_questions("heldout")
    bare = [Item(f"identity:{intent}:{k}", q, name, name_check(name), {"intent": intent, "system": False})
            for intent in intents for k, q in enumerate(heldout[intent])]
    under = [Item(f"{it.id}:system{j}", it.question, name, it.check, {**it.meta, "system": True}, system)
             for j, system in enumerate(system_prompts("heldout") if systems else []) for it in bare]
    return bare + under


def unknown_entity_items(n: int, seed: int = 0) -> list[Item]:
    """`n` held-out questions about invented people, places and books (general.unknown_questions, the
    held-out split by the entity's hash, which no training conversation draws from): right when the
    reply says it does not know (knowledge.is_refusal), wrong when it makes something up."""
    from training.conversations.general import unknown_questions
    from training.evals.knowledge import is_refusal

    def check(text: str) -> tuple[bool, str | None]:
        return is_refusal(text), text[:60] or None
    return [Item(f"unknown:{kind}:{entity}", q, "I don't know", check, {"entity": entity, "kind": kind})
            for q, entity, kind in unknown_questions(n, seed, split="heldout")]


def letters_answer(key: str) -> tuple[str, str]:
    """(kind, exact answer) of a letter problem from its canonical key (reasoning.Problem.key)."""
    kind, word, *rest = key.split(":")
    answers = {"count": lambda: str(word.count(rest[0])), "reverse": lambda: word[::-1],
               "nth": lambda: word[int(rest[0]) - 1], "length": lambda: str(len(word)),
               "spell": lambda: "-".join(word), "vowels": lambda: str(sum(c in "aeiou" for c in word))}
    if kind not in answers:
        raise ValueError(f"not a letter problem key: {key!r}")
    return kind, answers[kind]()


def _letter_item(p) -> Item:
    kind, answer = letters_answer(p.key)
    if kind in COUNTING:
        check = number_check(float(answer))
    elif kind == "nth":
        check = letter_check(answer)
    else:
        check = word_check(answer, "a-z-" if kind == "spell" else "a-z")
    return Item(p.key, p.question, answer, check, {"problem": kind})


def reasoning_items(task: str, n: int, seed: int = 0, words: list[str] | None = None) -> list[Item]:
    """`n` held-out problems of one task (arithmetic | counting | spelling): drawn from the held-out
    side of reasoning.split_of, which no training draw can reach."""
    from training.conversations.reasoning import draw_problems
    if task == "arithmetic":
        return [Item(p.key, p.question, str(p.answer), number_check(float(p.answer)), {"problem": p.key.split(":")[0]})
                for p in draw_problems(n, seed, "heldout", tool_fraction=0.0, words=words)]
    kinds = {"counting": COUNTING, "spelling": SPELLING}[task]
    items, pool = [], 4 * n
    while len(items) < n:
        drawn = draw_problems(pool, seed, "heldout", tool_fraction=1.0, words=words)
        items = [_letter_item(p) for p in drawn if p.key.split(":")[0] in kinds][:n]
        if len(drawn) < pool:   # the held-out space ran out
            break
        pool *= 2
    return items


def gsm8k_item(row, where: str, item_id: str) -> Item:
    """One GSM8K row {"question", "answer" ending in "#### <number>"}, scored by that final number."""
    if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not isinstance(row.get("answer"), str):
        raise InputError(f"{where}: expected string fields 'question' and 'answer'")
    m = re.search(r"####\s*(-?[\d,]*\.?\d+)\s*$", row["answer"].strip())
    value = to_number(m[1]) if m else None
    if value is None:
        raise InputError(f"{where}: answer: the final answer must end the text as '#### <number>'")
    return Item(item_id, row["question"], m[1].replace(",", ""), number_check(value))


def gsm8k_items(path: str | Path) -> list[Item]:
    """GSM8K-format JSONL: one {"question": str, "answer": str ending in "#### <number>"} per line."""
    from training.evals.core import jsonl_rows
    path = Path(path)
    items = []
    for line_no, where, row in jsonl_rows(path, "GSM8K-format", "{question, answer} with '#### n'"):
        items.append(gsm8k_item(row, where, f"{path.stem}:{line_no}"))
    if not items:
        raise InputError(f"{path}: no questions in the file")
    return items
