"""Arithmetic, counting and spelling as RL tasks: reasoning.py's generators (both splits) with the
eval suite's exact checkers (training/evals/generative.py), so RL rewards exactly what the evals score."""
from __future__ import annotations

from training.tasks import TaskItem, user_turn


def reasoning_task(task: str, split: str, n: int, seed: int = 0, words: list[str] | None = None) -> list[TaskItem]:
    """`n` problems of one split. reasoning.draw_problems keeps the splits apart by a hash of each
    problem's canonical key, whatever the seed."""
    from training.conversations.reasoning import draw_problems
    from training.evals.generative import COUNTING, SPELLING, _letter_item, number_check
    if task == "arithmetic":
        return [TaskItem(p.key, user_turn(p.question), str(p.answer), number_check(float(p.answer)),
                         reference="\n".join([*p.steps, f"Answer: {p.answer}"]), meta={"problem": p.key.split(":")[0]})
                for p in draw_problems(n, seed, split, tool_fraction=0.0, words=words)]
    kinds = {"counting": COUNTING, "spelling": SPELLING}[task]
    items, pool = [], 4 * n
    while True:
        drawn = draw_problems(pool, seed, split, tool_fraction=1.0, words=words)
        items = [_letter_item(p) for p in drawn if p.key.split(":")[0] in kinds][:n]
        if len(items) >= n or len(drawn) < pool:   # enough, or the split's space ran out
            break
        pool *= 2
    return [TaskItem(it.id, user_turn(it.question), it.expected, it.check, reference=f"The answer is {it.expected}.",
                     meta=it.meta) for it in items]
