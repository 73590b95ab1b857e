"""What every eval task shares: the result, the task interface, seeds, sampling, pass@k.

    result = task.run(engine, seed)     # EvalResult(score, n, records, metrics)

A task has a `name`, a `kind` ("base": scores any language model, "chat": needs the chat protocol)
and `run(engine, seed)`. Its items are fixed when the task is built (from held-out generators or a
user file), so every model meets the same questions; the seed drives only the sampling, and each
sampled row gets its own seed (a hash of seed, task, item and sample number), so a reply does not
depend on which other rows share its batch: the same seed gives the same score.
"""
from __future__ import annotations

import hashlib
import math
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from pipelines.errors import ConfigError

KINDS = ("base", "chat")


@dataclass
class EvalResult:
    task: str
    kind: str
    score: float | None                 # the task's headline number (None: nothing to score)
    n: int                              # items scored
    records: list[dict]                 # one per item: what a person opens when a score moves
    metrics: dict[str, float] = field(default_factory=dict)   # extra figures (pass@k, rates, ...)
    higher_is_better: bool = True
    seconds: float = 0.0
    note: str = ""                      # why a task scored nothing, if it did not
    interval: tuple[float, float] | None = None   # 95% interval of the score (training/evals/intervals.py)
    interval_method: str = ""                     # wilson | bootstrap

    def all_metrics(self) -> dict[str, float]:
        """score, n, seconds, the 95% interval and the extra metrics, keyed '<task>/<metric>' (MLflow
        metric names)."""
        ci = dict(zip(("ci_low", "ci_high"), self.interval)) if self.interval else {}
        out = {"score": self.score, "n": self.n, "seconds": self.seconds, **ci, **self.metrics}
        return {f"{self.task}/{k}": float(v) for k, v in out.items() if v is not None}


class Task(Protocol):
    name: str
    kind: str

    def run(self, engine, seed: int) -> EvalResult: ...


def row_seed(*parts) -> int:
    """A 31-bit seed from any parts (seed, task, item id, sample number): stable across processes."""
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "big") >> 1


def timed(run: Callable[[], EvalResult]) -> EvalResult:
    t0 = time.perf_counter()
    result = run()
    result.seconds = round(time.perf_counter() - t0, 3)
    return result


# ---- pass@k ------------------------------------------------------------------------------------

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021, "Evaluating Large
    Language Models Trained on Code"): 1 - C(n-c, k) / C(n, k), as the product
    1 - prod_{i=n-c+1..n} (1 - k/i), which never forms the huge binomials."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_k_metrics(counts: list[tuple[int, int]], ks: tuple[int, ...] = (1, 2, 4, 8, 16)) -> dict[str, float]:
    """Mean pass@k over items for each k that every item has samples for: {"pass_at_1": ...}."""
    if not counts:
        return {}
    n_min = min(n for n, _ in counts)
    return {f"pass_at_{k}": float(np.mean([pass_at_k(n, c, k) for n, c in counts])) for k in ks if k <= n_min}


# ---- sampling ----------------------------------------------------------------------------------

@dataclass
class Sampling:
    """How a generative task samples: `samples` replies per item (pass@k needs more than one),
    greedy at temperature 0 (then one sample is all there is)."""
    samples: int = 1
    temperature: float = 0.0
    top_k: int | None = 50
    max_tokens: int = 128
    batch_rows: int = 64

    def __post_init__(self):
        if self.temperature <= 0:
            self.samples = 1   # greedy: every sample would be the same reply


def without_tools(engine):
    """An engine on the same model and tokenizer with no tools: a tool call gets an 'unknown tool'
    error as its output, so the model must answer by itself."""
    from training.engine.engine import Engine
    return Engine(engine.model, engine.tokenizer, tools={}, device=str(engine.device))


def generate_rows(engine, prompts: list[list[int]], seeds: list[int], sampling: Sampling) -> list:
    """Completions of `prompts` (one row each, its own seed), `batch_rows` rows per engine call.
    Prompts too long for the context keep their last tokens (the question is at the end)."""
    from training.engine.engine import SamplingParams
    keep = engine.model.config.block_size - sampling.max_tokens - 1
    if keep < 8:
        raise ConfigError(f"max_tokens: {sampling.max_tokens} leaves no room for a prompt in the model's context "
                          f"of {engine.model.config.block_size} tokens; lower max_tokens in the eval config")
    params = SamplingParams(max_tokens=sampling.max_tokens, temperature=sampling.temperature, top_k=sampling.top_k)
    out = []
    for start in range(0, len(prompts), sampling.batch_rows):
        chunk = [p[-keep:] for p in prompts[start:start + sampling.batch_rows]]
        out += engine.generate(chunk, params, seeds=seeds[start:start + sampling.batch_rows])
    return out


def reply_parts(tokenizer, completion) -> list[dict]:
    from training.conversations.render import parse_assistant
    return parse_assistant(tokenizer, completion.tokens, completion.sampled)


def reply_text(parts: list[dict]) -> str:
    """What the assistant said in words (tool calls and outputs left out)."""
    return "".join(p["text"] for p in parts if p["type"] == "text")


# ---- answer extraction (exact checkers) ---------------------------------------------------------

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def to_number(text: str) -> float | None:
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def final_number(text: str) -> float | None:
    """The number an answer commits to: after '####' or 'Answer:' when present, else the last one."""
    for marker in ("####", "answer:", "answer is"):
        at = text.lower().rfind(marker)
        if at >= 0:
            m = _NUMBER.search(text, at + len(marker))
            if m:
                return to_number(m[0])
    found = _NUMBER.findall(text)
    return to_number(found[-1]) if found else None


def jsonl_rows(path, what: str, shape: str):
    """(line number, where, row) for each non-blank line of a user JSONL file; InputError naming the file (and
    line) when it is missing or a line is not a JSON object. `what`/`shape` word the messages."""
    import json
    from pathlib import Path

    from pipelines.errors import InputError
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such {what} file (JSONL of {shape})")
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: not JSON ({e.msg}); each line is {shape}") from None
        yield line_no, where, row
