"""Reasoning conversations: problems whose answers need tokens to think, and letter questions that
need a tool, each with an exact answer.

- Arithmetic expressions and word problems, two answer shapes (`arithmetic` of reasoning_conversations):
  "tool" (the default) writes ONE python call that prints the expression, `print((29 + 14) * 5)`,
  then "The answer is N." from the tool's real output: a 4M-parameter model cannot add 3-digit
  numbers, but it can copy the question's expression into print(...); "steps" spreads the work
  over many tokens, one small step per line ("label: 347 * 20 = 6940"), and ends with "Answer: N"
  (also the reference solution of the RL tasks). Every step is exact (computed here, and
  re-evaluated by the tests), so the model never learns a wrong sum.
- Counting / spelling / reversing ("how many r in strawberry", "spell X backwards", "what is the
  3rd letter of X"): a model sees tokens, not letters, so the answer calls the python tool:
  tool_call(python, code) + tool_output(what the sandboxed tool REALLY printed for that code,
  training/engine/python_tool.py) + a final sentence built from that output.

Tool answers open with the call itself and every family has ONE code shape, a single print(...)
line with the word in single quotes (`print('strawberry'.count('r'))`): a tiny model copies a
regular template; the demo model trained on two-line programs, mixed quotes and a varied lead-in
sentence wrote a syntax error in every one of 105 held-out tool calls. The wording of the
questions is what varies (many phrasings per family), so the model learns to find the operands in
any of them.

Held-out problems for the evals never appear in training, by construction: a problem's split is a
stable hash of its canonical key (the operands, or task + word, not the wording), so no seed can
draw a held-out problem into the training side; the two sides also draw from different seed
streams.
"""
from __future__ import annotations

import ast
import hashlib
import random
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable

from training.conversations.dataset import content_id

SOURCE = "reasoning"
HELDOUT_FRACTION = 0.2

BUILTIN_WORDS = """strawberry banana raspberry blueberry pineapple coconut avocado broccoli cucumber tomato
potato carrot pepper lemon orange mango apple cherry grape melon elephant giraffe kangaroo penguin dolphin
octopus squirrel rabbit turtle hamster parrot butterfly mosquito chimpanzee crocodile alligator mississippi
tennessee california massachusetts connecticut philadelphia amsterdam barcelona copenhagen stockholm
bookkeeper committee coffee balloon assessment necessary accommodate embarrass occurrence millennium
rhythm queue onomatopoeia bureaucracy conscientious questionnaire parallel occasionally entrepreneur
handkerchief chrysanthemum algorithm variable function compiler keyboard monitor network protocol
database internet software hardware library language sentence paragraph alphabet letter vowel
consonant syllable mountain volcano glacier desert island river ocean forest meadow valley canyon
thunder lightning rainbow weather season summer winter autumn spring morning evening midnight
calendar umbrella scissors envelope notebook pencil eraser blackboard telescope microscope magnet
battery engine bicycle airplane submarine helicopter tractor ambulance university hospital restaurant
museum theatre orchestra symphony guitar trumpet violin piano saxophone accordion harmonica banjo
chocolate vanilla cinnamon pepperoni spaghetti macaroni lasagna broccolini tiramisu cappuccino""".split()

THINK_INTROS = ["Let's work it out step by step.", "Step by step:", "Let me break this into small steps.",
                "I'll do it one step at a time."]
ARITHMETIC_QUESTIONS = [
    "What is {e}?", "what is {e}", "Calculate {e}.", "Compute {e}.", "Evaluate {e}.", "Work out {e}.",
    "What does {e} equal?", "{e} = ?", "Solve {e}.", "How much is {e}?", "Can you calculate {e}?",
    "Please compute {e}.", "Find the value of {e}.", "What's {e}?", "Quick math: {e}", "{e}",
    "I need the result of {e}.", "Tell me what {e} is.", "What do you get for {e}?", "Help me with {e}, please.",
    "calculate {e}", "What is the value of {e}?", "Could you work out {e} for me?", "Give me the answer to {e}."]
ANSWER_LINES = ["The answer is {out}.", "{e} = {out}.", "The result is {out}."]


@dataclass
class Problem:
    key: str                  # canonical: what the problem is, not how it is worded
    question: str
    steps: list[str] | None = None     # arithmetic: "label: expr = value" lines
    answer: int | None = None
    code: str | None = None            # tool task: the python the assistant runs
    expr: str | None = None            # arithmetic: one python expression whose value is the answer
    final: Callable[[str], str] | None = None   # tool output -> the closing sentence


def split_of(key: str) -> str:
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2 ** 64
    return "heldout" if h < HELDOUT_FRACTION else "train"


def _ordinal(n: int) -> str:
    return f"{n}th" if 10 <= n % 100 <= 20 else f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


# ---- arithmetic -------------------------------------------------------------------------------

def _multiply(rng: random.Random) -> Problem:
    a, b = rng.randint(12, 999), rng.randint(12, 99)
    tens, units = b // 10 * 10, b % 10
    steps = [f"Split {b} into {tens} and {units}." if units else f"{b} is {b // 10} tens.",
             f"{a} times {tens}: {a} * {tens} = {a * tens}"]
    if units:
        steps += [f"{a} times {units}: {a} * {units} = {a * units}",
                  f"Add the two parts: {a * tens} + {a * units} = {a * b}"]
    q = rng.choice(["What is {a} * {b}?", "Compute {a} times {b}.", "Multiply {a} by {b}.",
                    "What is the product of {a} and {b}?"]).format(a=a, b=b)
    return Problem(f"mul:{a}:{b}", q, steps, a * b, expr=f"{a} * {b}")


def _chain(rng: random.Random) -> Problem:
    total = rng.randint(10, 999)
    expr, steps = str(total), []
    for _ in range(rng.randint(2, 4)):
        x = rng.randint(10, 999)
        op = "-" if total > x and rng.random() < 0.4 else "+"
        new = total - x if op == "-" else total + x
        steps.append(f"{'Subtract' if op == '-' else 'Add'} {x}: {total} {op} {x} = {new}")
        expr, total = f"{expr} {op} {x}", new
    q = rng.choice(["What is {e}?", "Calculate {e}.", "Work out {e} step by step."]).format(e=expr)
    return Problem(f"chain:{expr}", q, steps, total, expr=expr)


def _divide(rng: random.Random) -> Problem:
    d, q = rng.randint(3, 49), rng.randint(12, 999)
    while sum(c != "0" for c in str(q)) < 2:  # at least two groups, so the last step adds them up
        q = rng.randint(12, 999)
    n, rest, steps = d * q, d * q, []
    parts = [int(c) * 10 ** i for i, c in enumerate(reversed(str(q))) if c != "0"][::-1]
    for p in parts:
        steps += [f"{p} groups of {d}: {d} * {p} = {d * p}", f"What is left: {rest} - {d * p} = {rest - d * p}"]
        rest -= d * p
    steps.append(f"Add the groups: {' + '.join(map(str, parts))} = {q}")
    question = rng.choice(["What is {n} / {d}?", "Divide {n} by {d}.", "How much is {n} divided by {d}?"])
    return Problem(f"div:{n}:{d}", question.format(n=n, d=d), steps, q, expr=f"{n} // {d}")


_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*"}


def expression_steps(expr: str) -> tuple[list[str], int]:
    """The steps of an expression of + - * on non-negative integers, in the order python evaluates
    them (post-order of the parse tree): ["Step 1: 29 + 14 = 43", "Step 2: 43 * 5 = 215"], value."""
    steps: list[str] = []

    def ev(node) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if not (isinstance(node, ast.BinOp) and type(node.op) in _SYMBOL):
            raise ValueError(f"not + - * on integers: {expr!r}")
        left, right = ev(node.left), ev(node.right)
        value = {ast.Add: left + right, ast.Sub: left - right, ast.Mult: left * right}[type(node.op)]
        steps.append(f"Step {len(steps) + 1}: {left} {_SYMBOL[type(node.op)]} {right} = {value}")
        return value
    return steps, ev(ast.parse(expr, mode="eval").body)


def _expression(rng: random.Random) -> Problem:
    """2 to 4 operands, + - *, sometimes parentheses; no negative value on the way (the steps'
    numbers stay plain), products kept below a million."""
    while True:
        nums = [rng.randint(2, 99) if rng.random() < 0.75 else rng.randint(100, 999) for _ in range(4)]
        ops = [rng.choice("+-*") for _ in range(3)]
        a, b, c, d = nums
        shape = rng.randrange(6)
        expr = [f"{a} {ops[0]} {b}", f"{a} {ops[0]} {b} {ops[1]} {c}", f"({a} {ops[0]} {b}) {ops[1]} {c}",
                f"{a} {ops[0]} ({b} {ops[1]} {c})", f"{a} {ops[0]} {b} {ops[1]} {c} {ops[2]} {d}",
                f"({a} {ops[0]} {b}) {ops[1]} ({c} {ops[2]} {d})"][shape]
        if "(" in expr and "*" not in expr:   # parentheses that change nothing teach nothing
            continue
        steps, value = expression_steps(expr)
        if all(int(s.rsplit("=", 1)[1]) >= 0 for s in steps) and value < 10 ** 6:
            q = rng.choice(ARITHMETIC_QUESTIONS).format(e=expr)
            return Problem(f"expr:{expr}", q, steps, value, expr=expr)


WORD_PROBLEMS = [
    # (template, draw the numbers, steps from the numbers): steps return (label, expr, value) triples,
    # and the one python expression of the whole problem
    ("A shop sells pencils in boxes of {a}. Maria buys {b} boxes and gives {c} pencils to her friends. "
     "How many pencils does she have left?",
     lambda r: (lambda a, b: dict(a=a, b=b, c=r.randint(1, a * b - 1)))(r.randint(6, 24), r.randint(2, 15)),
     lambda a, b, c: [("Pencils bought", f"{b} * {a}", b * a), ("Pencils left", f"{b * a} - {c}", b * a - c)],
     lambda a, b, c: f"{b} * {a} - {c}"),
    ("A book has {p} pages. Ana reads {r} pages a day for {d} days. How many pages does she still have to read?",
     lambda r: (lambda rr, d: dict(r=rr, d=d, p=rr * d + r.randint(1, 400)))(r.randint(5, 40), r.randint(2, 14)),
     lambda p, r, d: [("Pages read", f"{r} * {d}", r * d), ("Pages left", f"{p} - {r * d}", p - r * d)],
     lambda p, r, d: f"{p} - {r} * {d}"),
    ("Adult tickets cost {a} dollars and child tickets cost {b} dollars. A family buys {x} adult tickets "
     "and {y} child tickets. How much do they pay in total?",
     lambda r: dict(a=r.randint(8, 60), b=r.randint(3, 30), x=r.randint(1, 6), y=r.randint(1, 8)),
     lambda a, b, x, y: [("Adult tickets", f"{x} * {a}", x * a), ("Child tickets", f"{y} * {b}", y * b),
                         ("Total", f"{x * a} + {y * b}", x * a + y * b)],
     lambda a, b, x, y: f"{x} * {a} + {y} * {b}"),
    ("A train travels at {v} km per hour for {t} hours and then another {u} km. How far does it travel in total?",
     lambda r: dict(v=r.randint(40, 240), t=r.randint(2, 9), u=r.randint(5, 300)),
     lambda v, t, u: [("Distance in the first part", f"{v} * {t}", v * t), ("Total", f"{v * t} + {u}", v * t + u)],
     lambda v, t, u: f"{v} * {t} + {u}"),
    ("Sam saves {s} dollars every week for {w} weeks, then spends {e} dollars on a bike. "
     "How much money does he have left?",
     lambda r: (lambda s, w: dict(s=s, w=w, e=r.randint(1, s * w - 1)))(r.randint(5, 80), r.randint(3, 52)),
     lambda s, w, e: [("Money saved", f"{s} * {w}", s * w), ("Money left", f"{s * w} - {e}", s * w - e)],
     lambda s, w, e: f"{s} * {w} - {e}"),
    ("A bakery bakes {t} trays of {c} cookies each and sells {s} cookies. How many cookies are left?",
     lambda r: (lambda t, c: dict(t=t, c=c, s=r.randint(1, t * c - 1)))(r.randint(2, 30), r.randint(6, 36)),
     lambda t, c, s: [("Cookies baked", f"{t} * {c}", t * c), ("Cookies left", f"{t * c} - {s}", t * c - s)],
     lambda t, c, s: f"{t} * {c} - {s}"),
    ("Tom has {a} marbles. He buys {b} more and then loses {c}. How many marbles does he have now?",
     lambda r: (lambda a, b: dict(a=a, b=b, c=r.randint(1, a + b)))(r.randint(5, 300), r.randint(5, 300)),
     lambda a, b, c: [("After buying", f"{a} + {b}", a + b), ("After losing", f"{a + b} - {c}", a + b - c)],
     lambda a, b, c: f"{a} + {b} - {c}"),
    ("A hall has {r} rows of chairs with {c} chairs in each row. How many chairs are there?",
     lambda r: dict(r=r.randint(3, 60), c=r.randint(4, 40)),
     lambda r, c: [("Chairs", f"{r} * {c}", r * c)],
     lambda r, c: f"{r} * {c}"),
    ("A farm has {a} cows and {b} chickens. How many legs do the animals have in total?",
     lambda r: dict(a=r.randint(2, 90), b=r.randint(2, 90)),
     lambda a, b: [("Cow legs", f"{a} * 4", a * 4), ("Chicken legs", f"{b} * 2", b * 2),
                   ("Total", f"{a * 4} + {b * 2}", a * 4 + b * 2)],
     lambda a, b: f"{a} * 4 + {b} * 2"),
    ("Lena had {a} dollars. She spent {b} dollars on lunch and {c} dollars on a book. How much money does she have left?",
     lambda r: (lambda a: (lambda b: dict(a=a, b=b, c=r.randint(1, a - b)))(r.randint(1, a // 2)))(r.randint(40, 900)),
     lambda a, b, c: [("After lunch", f"{a} - {b}", a - b), ("Money left", f"{a - b} - {c}", a - b - c)],
     lambda a, b, c: f"{a} - {b} - {c}"),
    ("Each box holds {n} apples. How many apples are in {k} boxes and {x} loose apples?",
     lambda r: dict(n=r.randint(6, 48), k=r.randint(2, 40), x=r.randint(1, 30)),
     lambda n, k, x: [("Apples in boxes", f"{k} * {n}", k * n), ("Total", f"{k * n} + {x}", k * n + x)],
     lambda n, k, x: f"{k} * {n} + {x}"),
]


def _word_problem(rng: random.Random) -> Problem:
    i = rng.randrange(len(WORD_PROBLEMS))
    template, draw, solve, whole = WORD_PROBLEMS[i]
    nums = draw(rng)
    steps = [f"{label}: {expr} = {value}" for label, expr, value in solve(**nums)]
    key = f"word:{i}:" + ",".join(f"{k}={v}" for k, v in sorted(nums.items()))
    return Problem(key, template.format(**nums), steps, int(steps[-1].rsplit("=", 1)[1]), expr=whole(**nums))


# ---- letters through the python tool ---------------------------------------------------------

LETTER_QUESTIONS = {
    "count": ["How many times does the letter '{l}' appear in '{w}'?", "How many {l}'s are in {w}?",
              "Count the letter {l} in the word {w}.", "how many {l} in {w}", "How many {l} are there in {w}?",
              "How often does '{l}' occur in '{w}'?", "Count how many times {l} shows up in {w}.",
              "In the word {w}, how many {l}'s are there?", "Number of '{l}' in '{w}'?",
              "how many times is {l} in {w}?", "Can you count the {l}'s in '{w}'?",
              "Tell me how many letters {l} the word {w} has."],
    "reverse": ["Spell '{w}' backwards.", "What is '{w}' reversed?", "Write the word {w} in reverse.",
                "reverse the letters of {w}", "What is {w} spelled backwards?", "Reverse '{w}'.",
                "Can you write {w} backwards?", "Give me {w} with its letters in reverse order.",
                "how do you spell {w} backwards"],
    "nth": ["What is the {o} letter of '{w}'?", "Which letter is {o} in the word {w}?",
            "In '{w}', what is letter number {n}?", "What's the {o} letter in {w}?",
            "Tell me the {o} letter of the word {w}.", "which letter comes {o} in {w}?",
            "What letter is at position {n} in '{w}'?"],
    "length": ["How many letters are in '{w}'?", "How long is the word {w}, in letters?",
               "Count the letters of {w}.", "How many letters does {w} have?", "What is the length of '{w}'?",
               "how many characters are in {w}", "Number of letters in the word {w}?"],
    "spell": ["Spell '{w}' letter by letter.", "How do you spell {w}? One letter at a time, please.",
              "Spell out {w}.", "Can you spell the word {w} letter by letter?", "spell {w}",
              "Break '{w}' into its letters."],
    "vowels": ["How many vowels are in '{w}'?", "Count the vowels (a, e, i, o, u) in {w}.",
               "How many vowels does the word {w} have?", "how many vowels in {w}",
               "Number of vowels in '{w}'?"],
}


def _letters(rng: random.Random, words: list[str]) -> Problem:
    """One code shape per kind: a single print(...) line, the word in single quotes."""
    w = rng.choice(words)
    kind = rng.choice(["count", "count", "count", "reverse", "nth", "length", "spell", "vowels"])
    q = rng.choice(LETTER_QUESTIONS[kind])
    if kind == "count":
        letter = rng.choice(w) if rng.random() < 0.85 else rng.choice("abcdefghijklmnopqrstuvwxyz")
        return Problem(f"count:{w}:{letter}", q.format(l=letter, w=w), code=f"print('{w}'.count('{letter}'))",
                       final=lambda out: f"The letter '{letter}' appears {out} time{'' if out == '1' else 's'} in '{w}'.")
    if kind == "reverse":
        return Problem(f"reverse:{w}", q.format(w=w), code=f"print('{w}'[::-1])",
                       final=lambda out: f"'{w}' backwards is '{out}'.")
    if kind == "nth":
        n = rng.randint(1, len(w))
        return Problem(f"nth:{w}:{n}", q.format(o=_ordinal(n), w=w, n=n), code=f"print('{w}'[{n - 1}])",
                       final=lambda out: f"The {_ordinal(n)} letter of '{w}' is '{out}'.")
    if kind == "length":
        return Problem(f"length:{w}", q.format(w=w), code=f"print(len('{w}'))", final=lambda out: f"'{w}' has {out} letters.")
    if kind == "spell":
        return Problem(f"spell:{w}", q.format(w=w), code=f"print('-'.join('{w}'))", final=lambda out: f"Letter by letter: {out}.")
    return Problem(f"vowels:{w}", q.format(w=w), code=f"print(sum(c in 'aeiou' for c in '{w}'))",
                   final=lambda out: f"'{w}' has {out} vowel{'' if out == '1' else 's'}.")


ARITHMETIC = [_expression, _expression, _expression, _multiply, _chain, _divide, _word_problem, _word_problem,
              _word_problem]


def corpus_words(texts: Iterable[str], max_words: int = 2000, min_count: int = 2) -> list[str]:
    """Lowercase alphabetic words of 5-14 letters seen at least `min_count` times, most frequent first
    (words written lowercase in the text: names and sentence starts stay out)."""
    counts = Counter(w for t in texts for w in re.findall(r"(?<![\w'-])[a-z]{5,14}(?![\w'-])", t))
    return [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count][:max_words]


def draw_problems(n: int, seed: int = 0, split: str = "train", tool_fraction: float = 0.5,
                  words: list[str] | None = None) -> list[Problem]:
    """`n` distinct problems of one split (fewer only if the space runs out), deterministic for a seed."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    words = [w for w in (words or BUILTIN_WORDS) if re.fullmatch(r"[a-z]+", w)] or BUILTIN_WORDS
    rng = random.Random(f"reasoning:{split}:{seed}")
    out, seen = [], set()
    for _ in range(n * 50):
        if len(out) >= n:
            break
        p = _letters(rng, words) if rng.random() < tool_fraction else rng.choice(ARITHMETIC)(rng)
        if p.key not in seen and split_of(p.key) == split:
            seen.add(p.key)
            out.append(p)
    return out


def tool_code(p: Problem, arithmetic: str = "tool") -> str | None:
    """The python the assistant runs for `p` (None: answered in text)."""
    if p.code is not None:
        return p.code
    return f"print({p.expr})" if arithmetic == "tool" and p.expr is not None else None


def to_conversation(p: Problem, rng: random.Random, tool_output: str | None = None,
                    arithmetic: str = "tool") -> list[dict]:
    code = tool_code(p, arithmetic)
    if code is None:
        text = "\n".join([rng.choice(THINK_INTROS), *p.steps, f"Answer: {p.answer}"])
        return [{"role": "user", "content": p.question}, {"role": "assistant", "content": text}]
    final = p.final(tool_output) if p.final else rng.choice(ANSWER_LINES).format(e=p.expr, out=tool_output)
    return [{"role": "user", "content": p.question},
            {"role": "assistant", "content": [
                {"type": "tool_call", "name": "python", "arguments": code},
                {"type": "tool_output", "text": tool_output},
                {"type": "text", "text": final}]}]


def reasoning_conversations(n: int, seed: int = 0, split: str = "train", tool_fraction: float = 0.5,
                            words: list[str] | None = None, run_python: Callable[[str], str] | None = None,
                            workers: int = 4, arithmetic: str = "tool") -> list[dict]:
    """Dataset rows of `n` problems; tool answers run their code through `run_python` (default: the
    engine's sandboxed python tool), concurrently, and a failed run is an error, not a training row.
    `arithmetic`: "tool" (print the expression) or "steps" (step-by-step text)."""
    if arithmetic not in ("tool", "steps"):
        raise ValueError(f"arithmetic must be 'tool' or 'steps', not {arithmetic!r}")
    if run_python is None:
        from training.engine.python_tool import python_tool as run_python
    problems = draw_problems(n, seed, split, tool_fraction, words)
    codes = list(dict.fromkeys(c for p in problems if (c := tool_code(p, arithmetic)) is not None))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        outputs = dict(zip(codes, pool.map(run_python, codes)))
    bad = {c: o for c, o in outputs.items() if o.startswith("Error") or "\nError: " in o}
    if bad:
        code, out = next(iter(bad.items()))
        raise RuntimeError(f"the python tool failed on {len(bad)} generated program(s), e.g. {code!r} -> {out!r}")
    rng = random.Random(f"reasoning-text:{split}:{seed}")
    rows = []
    for p in problems:
        messages = to_conversation(p, rng, outputs.get(tool_code(p, arithmetic)), arithmetic)
        rows.append({"id": content_id(SOURCE, messages), "source": SOURCE, "messages": messages})
    return rows

