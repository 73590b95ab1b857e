"""Standard benchmarks from local files, in the layouts people already have (nothing is downloaded).

    eval config:  benchmarks_dir: /data/benchmarks      benchmarks: [arc_easy, mmlu, ...]
    files:        <dir>/<name>.{jsonl,jsonl.gz,parquet}, or a folder <dir>/<name>/ or <dir>/<HF config>/
                  of such files (a Hugging Face snapshot: ARC-Easy/test-00000-of-00001.parquet); in a
                  folder the split the papers report is preferred (test; HellaSwag: validation)

    name           rows (Hugging Face dataset / lm-evaluation-harness fields)             scored
    arc_easy       allenai/ai2_arc ARC-Easy: question, choices{text,label}, answerKey      MC
    arc_challenge  allenai/ai2_arc ARC-Challenge: the same                                 MC
    hellaswag      Rowan/hellaswag: activity_label, ctx_a, ctx_b, endings, label           MC
    mmlu           cais/mmlu all: question, subject, choices, answer (0-3)                 MC, letters
    gsm8k          openai/gsm8k main: question, answer ("... #### 42")                     final number
    humaneval      openai/openai_humaneval: task_id, prompt, test, entry_point             tests in the sandbox

Multiple choice (MC) is lm-evaluation-harness's prompt for each task scored as in DCLM's CORE: each
choice's log-likelihood after the context (mean per token, lm.MultipleChoice), accuracy centred on
chance: (acc - 1/k) / (1 - 1/k). GSM8K: the reply's final number against the one after "####".
HumanEval: the reply's code (a ```python block, else the reply) after the prompt, the task's tests
and check(entry_point) run in the python sandbox (training/engine/python_tool.py); pass@1. The
CORE-style aggregate is the mean centred score over the benchmarks present (the generative ones
have a chance level of 0, so their centred score is their score).

A benchmark asked for but not on disk is one line naming where to put it; the rest still run.
"""
from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

from pipelines.errors import InputError
from training.evals.core import EvalResult

# name: (Hugging Face folder, where it comes from, preferred split)
SOURCES = {"arc_easy": ("ARC-Easy", "allenai/ai2_arc (config ARC-Easy)", "test"),
           "arc_challenge": ("ARC-Challenge", "allenai/ai2_arc (config ARC-Challenge)", "test"),
           "hellaswag": ("hellaswag", "Rowan/hellaswag", "validation"),
           "mmlu": ("all", "cais/mmlu (config all)", "test"),
           "gsm8k": ("main", "openai/gsm8k (config main)", "test"),
           "humaneval": ("openai_humaneval", "openai/openai_humaneval", "test")}
SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
AGGREGATE = "core_benchmarks"


def _data_files(folder: Path, split: str) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES))
    preferred = [p for p in files if p.name.startswith(split) or f"/{split}/" in p.as_posix()]
    return preferred or files


def find_files(root: str | Path, name: str) -> list[Path]:
    root = Path(root)
    hf, _, split = SOURCES[name]
    for suffix in SUFFIXES:
        if (root / f"{name}{suffix}").is_file():
            return [root / f"{name}{suffix}"]
    for folder in (root / name, root / hf):
        if folder.is_dir() and (files := _data_files(folder, split)):
            return files
    return []


def missing_line(root: str | Path, name: str) -> str:
    hf, source, split = SOURCES[name]
    return (f"{name}: no file at {Path(root) / name}.jsonl, .parquet or {Path(root) / name}/: put the {split} split "
            f"of {source} there (JSONL or Parquet, as the Hugging Face dataset or lm-evaluation-harness has it)")


def read_rows(path: Path) -> list[tuple[str, dict]]:
    """(where, row) of a JSONL (.gz) or Parquet file."""
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq
        try:
            return [(f"{path}: row {i}", r) for i, r in enumerate(pq.read_table(path).to_pylist(), 1)]
        except Exception as e:   # noqa: BLE001 - pyarrow's many error types: one line naming the file
            raise InputError(f"{path}: not a readable Parquet file ({e})") from None
    opener = gzip.open if path.name.endswith(".gz") else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append((f"{path}:{i}", json.loads(line)))
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}:{i}: not JSON ({e.msg})") from None
    return rows


def _field(row: dict, key: str, where: str, kind=str):
    value = row.get(key) if isinstance(row, dict) else None
    if not isinstance(value, kind):
        raise InputError(f"{where}: {key}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def arc_item(row: dict, where: str, item_id: str):
    from training.evals.lm import Choice
    choices = _field(row, "choices", where, dict)
    texts, labels = list(choices.get("text") or []), list(choices.get("label") or [])
    key = str(_field(row, "answerKey", where))
    if len(texts) < 2 or len(texts) != len(labels) or key not in labels:
        raise InputError(f"{where}: choices/answerKey: answerKey {key!r} is not one of the labels {labels}")
    return Choice(item_id, f"Question: {_field(row, 'question', where)}\nAnswer:", [f" {t}" for t in texts],
                  labels.index(key))


def _hellaswag_text(text: str) -> str:
    # lm-evaluation-harness hellaswag/utils.py preprocess: WikiHow's bracketed markers out
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


def hellaswag_item(row: dict, where: str, item_id: str):
    from training.evals.lm import Choice
    ctx = _field(row, "ctx_a", where) + " " + _field(row, "ctx_b", where).capitalize()
    endings = _field(row, "endings", where, list)
    label = int(_field(row, "label", where, (str, int)))
    if not 0 <= label < len(endings):
        raise InputError(f"{where}: label: {label} is not an index of the {len(endings)} endings")
    return Choice(item_id, _hellaswag_text(f"{_field(row, 'activity_label', where)}: {ctx}"),
                  [" " + _hellaswag_text(e) for e in endings], label)


def mmlu_item(row: dict, where: str, item_id: str):
    from training.evals.lm import Choice
    choices = _field(row, "choices", where, list)
    answer = _field(row, "answer", where, int)
    if len(choices) != 4 or not 0 <= answer < 4:
        raise InputError(f"{where}: expected 4 choices and answer 0-3, got {len(choices)} and {answer}")
    subject = str(row.get("subject") or "").replace("_", " ")
    head = f"The following are multiple choice questions (with answers) about {subject}.\n\n" if subject else ""
    lines = "".join(f"\n{letter}. {c}" for letter, c in zip("ABCD", choices))
    return Choice(item_id, f"{head}{_field(row, 'question', where).strip()}{lines}\nAnswer:",
                  [" A", " B", " C", " D"], answer)


def humaneval_item(row: dict, where: str, item_id: str):
    from training.evals.generative import Item
    prompt, test, entry = (_field(row, k, where) for k in ("prompt", "test", "entry_point"))
    question = f"Complete this Python function. Reply with the code only.\n```python\n{prompt}```"
    return Item(str(row.get("task_id") or item_id), question, entry, humaneval_check(prompt, test, entry))


_CODE = re.compile(r"```(?:python|py)?\n(.*?)(?:```|$)", re.S)


def humaneval_check(prompt: str, test: str, entry: str):
    """Reply -> (tests passed, the program's verdict line): the reply's code after the prompt (or alone
    when it defines the function itself), the tests and check(entry_point), in the sandbox."""
    def check(reply: str):
        from training.engine.python_tool import python_tool
        m = _CODE.search(reply)
        code = m[1] if m else reply
        body = code if re.search(rf"^def {re.escape(entry)}\b", code, re.M) else prompt + code
        out = python_tool(f"{body}\n\n{test}\n\ncheck({entry})\nprint('PASSED')")
        last = out.strip().splitlines()[-1] if out.strip() else ""
        return last == "PASSED", last[:200]
    return check


LOADERS = {"arc_easy": arc_item, "arc_challenge": arc_item, "hellaswag": hellaswag_item, "mmlu": mmlu_item}


def load(name: str, files: list[Path], limit: int | None = None) -> list:
    """Items of a benchmark from its files (the first `limit` in file order: the papers' order)."""
    from training.evals.generative import gsm8k_item
    make = {**LOADERS, "gsm8k": gsm8k_item, "humaneval": humaneval_item}[name]
    items = []
    for path in files:
        for where, row in read_rows(path):
            if limit is not None and len(items) >= limit:
                return items
            items.append(make(row, where, f"{name}:{len(items)}"))
    if not items:
        raise InputError(f"{files[0]}: no {name} rows in the file")
    return items


def build_benchmarks(root: str | Path, names: list[str], kind: str, limit: int | None, sampling) -> tuple[list, list[str]]:
    """(tasks, notes) of the benchmarks asked for: MC ones for every model, GSM8K and HumanEval for chat models."""
    from training.evals.generative import GenerativeTask
    from training.evals.lm import MultipleChoice
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise InputError(f"benchmarks: unknown {', '.join(unknown)} (known: {', '.join(SOURCES)})")
    tasks, notes = [], []
    for name in names:
        if name not in LOADERS and kind != "chat":
            continue
        files = find_files(root, name)
        if not files:
            notes.append(missing_line(root, name))
            continue
        items = load(name, files, limit)
        tasks.append(MultipleChoice(name, items) if name in LOADERS else
                     GenerativeTask(name, items, sampling, tools=False))
    return tasks, notes


def aggregate(results: list[EvalResult]) -> EvalResult | None:
    """CORE-style: the mean centred score of the benchmarks present (None when none ran)."""
    scored = [r for r in results if r.task in SOURCES and r.score is not None]
    if not scored:
        return None
    return EvalResult(AGGREGATE, "base", sum(r.score for r in scored) / len(scored), len(scored),
                      [{"task": r.task, "score": r.score} for r in scored],
                      {f"{r.task}_centred": r.score for r in scored})
