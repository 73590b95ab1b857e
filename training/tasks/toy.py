"""The toy task: repeat a two-digit number in one fixed answer format, learnable by RL on CPU in minutes.

    user: Repeat 47.            reward 1 only for the reply "Answer: 47" (then <|im_end|>)

The 90 numbers 10..99 split by a stable hash of "echo:N": ~63 train, ~27 held out. What RL can teach
a tiny model here is the *format*: a model that can copy the number but answers in several styles
("47", "It is 47.", "Sure: 47.") earns reward only for the one the checker accepts, and the preference
for it carries over to numbers RL never trained on. Copying, unlike arithmetic, is a skill a 2-layer
model picks up in a few hundred SFT steps, so the test isolates the RL machinery from the model's
capacity. `warmup_conversations` writes the multi-style SFT set (the starting point of the toy test).
"""
from __future__ import annotations

import random

from training.tasks import TaskItem, split_of, user_turn

TEMPLATE = "Repeat {n}."
NUMBERS = range(10, 100)
HELDOUT_FRACTION = 0.3    # ~27 of the 90 problems: enough for a held-out pass@1 that moves visibly
STYLES = ("Answer: {n}", "{n}", "It is {n}.", "Sure: {n}.")   # only the first earns reward


def exact_check(expected: str):
    def check(text: str):
        got = text.strip()
        return got == expected, got
    return check


def toy_items(split: str) -> list[TaskItem]:
    items = []
    for n in NUMBERS:
        key = f"echo:{n}"
        if split_of(key, HELDOUT_FRACTION) == split:
            want = f"Answer: {n}"
            items.append(TaskItem(key, user_turn(TEMPLATE.format(n=n)), str(n), exact_check(want), reference=want,
                                  meta={"n": n}))
    return items


def warmup_conversations(n: int, seed: int = 0, styles: tuple[str, ...] = STYLES) -> list[dict]:
    """SFT rows {id, source, messages} over all 90 numbers, each reply in a random one of `styles`
    (the held-out numbers too: they are held out from RL, the skill of copying is the warmup's)."""
    rng = random.Random(f"toy-warmup:{seed}")
    rows = []
    for i in range(n):
        k = rng.choice(NUMBERS)
        reply = rng.choice(styles).format(n=k)
        rows.append({"id": f"toy-{seed}-{i:05d}", "source": "toy_warmup",
                     "messages": [*user_turn(TEMPLATE.format(n=k)), {"role": "assistant", "content": reply}]})
    return rows
