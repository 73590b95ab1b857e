"""The eval suite: which tasks a model gets, built from a small config and the lineage's data.

    cfg = load_suite_config(path)                 # YAML of SuiteConfig's fields (all optional)
    tasks, notes = build_suite(cfg, SuiteInputs(shards_root=..., clean_dir=..., val_fraction=...), "chat")
    results = run_suite(engine, tasks, cfg.seed)

Base models get the base tasks (bits per byte, multiple choice); chat models (SFT, RL, RLHF) get
them too, so the summary table shows what post-training cost the language model, plus the chat
tasks. A task whose data is missing (no token shards, no clean_text) is left out with a note.
"""
from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.errors import ConfigError, UserError
from training.evals.core import EvalResult, Sampling

SUITE_VERSION = "3"   # 2: intervals, held-out checks against the SFT data, decontamination; 3: unknown_entities   # bump when a task's definition changes: versions get evaluated again


class SuiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = 0
    samples: int = Field(default=2, ge=1)          # replies per generative item (pass@k); 1 with temperature 0
    temperature: float = Field(default=0.7, ge=0.0)
    top_k: int | None = Field(default=50, ge=1)
    max_tokens: int = Field(default=64, ge=1)      # reply budget of the generative tasks
    batch_rows: int = Field(default=64, ge=1)      # engine rows per generate() call
    identity_name: str | None = None               # None: the SFT data config's identity.name
    reasoning_items: int = Field(default=8, ge=0)  # held-out problems per reasoning task
    unknown_items: int = Field(default=8, ge=0)    # held-out questions about invented entities ("I don't know")
    protocol_prompts: int = Field(default=16, ge=0)
    protocol_max_tokens: int = Field(default=96, ge=1)
    probes: int = Field(default=12, ge=0)          # held-out knowledge probes
    probe_max_tokens: int = Field(default=12, ge=1)
    mc_items: int = Field(default=32, ge=0)        # generated clean_text sentence completions
    mc_paths: list[str] = []                       # user multiple-choice JSONL files
    gsm8k_paths: list[str] = []                    # user GSM8K-format JSONL files
    bpb_tokens: int = Field(default=16_384, ge=1)  # validation targets for bits per byte
    # n-gram overlap of every eval item with the pretraining corpus (clean_text's train split) and the
    # SFT data (training/evals/decontam.py): "flag" reports it per task, "exclude" also leaves the items
    # out, "off" skips it. Cost: 2-11 us per corpus word on one core (bench/decontam.py: 11 on realweb's
    # text on a shared core), scanned once per lineage for base and once for chat items: the demo's
    # corpus (~0.1M words) takes about a second, a 1B-word corpus hours (set "off" there)
    decontamination: Literal["flag", "exclude", "off"] = "flag"
    decontamination_ngram: int = Field(default=13, ge=1)
    # standard benchmarks from local files (training/evals/benchmarks.py): none unless benchmarks_dir is set.
    # benchmark_items caps each at its first N rows: 200 MC items cost ~4 x 200 scored continuations,
    # seconds on the demo model; the full sets (MMLU 14k) are for a GPU (None: no cap)
    benchmarks_dir: str | None = None
    benchmarks: list[str] = ["arc_easy", "arc_challenge", "hellaswag", "mmlu", "gsm8k", "humaneval"]
    benchmark_items: int | None = Field(default=200, ge=1)

    def digest(self) -> str:
        """What identifies a suite run: the suite version and this config."""
        return hashlib.sha256(f"{SUITE_VERSION}:{self.model_dump_json()}".encode()).hexdigest()[:12]


def load_suite_config(path: str | Path | None = None, overrides: dict | None = None) -> SuiteConfig:
    raw = {}
    if path:
        from pipelines.config import read_yaml
        raw = read_yaml(Path(path)) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of {', '.join(SuiteConfig.model_fields)}")
    raw = {**raw, **(overrides or {})}
    try:
        return SuiteConfig.model_validate(raw)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            key = ".".join(map(str, err["loc"]))
            if err["type"] == "extra_forbidden":
                hint = difflib.get_close_matches(key, list(SuiteConfig.model_fields), n=1)
                problems.append(f"unknown key '{key}'" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
            else:
                problems.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(f"{path or 'eval config'}: " + "; ".join(problems)) from None


@dataclass
class SuiteInputs:
    shards_root: Path | None = None          # token shards (bits per byte on val/)
    clean_dir: Path | None = None            # clean_text (generated multiple choice, knowledge probes)
    val_fraction: float = 0.01               # the shards' document split (pipelines.shards.split_of)
    training_probes_dir: Path | None = None  # knowledge_probes outcomes: excluded from the eval probes
    identity_name: str = "crawl2chat"
    training_prompts: set[str] | None = None # normalized-text hashes of the lineage's SFT user turns
    sft_mixture: Path | None = None          # the lineage's SFT mixture (its train split: held-out checks)


def protocol_prompts(n: int, seed: int = 0) -> list[list[dict]]:
    """Opening user turns no training set holds: held-out identity paraphrases and held-out
    reasoning questions, in a stable order."""
    from training.conversations.identity import identity_questions
    from training.conversations.reasoning import draw_problems
    questions = [q for qs in identity_questions("heldout").values() for q in qs]
    questions += [p.question for p in draw_problems(n, seed, "heldout", tool_fraction=0.5)]
    questions.sort(key=lambda q: hashlib.sha256(f"{seed}:{q}".encode()).digest())
    return [[{"role": "user", "content": q}] for q in questions[:n]]


def build_suite(cfg: SuiteConfig, inputs: SuiteInputs, kind: str) -> tuple[list, list[str]]:
    """(tasks, notes) for a model of `kind` ("base" or "chat"); notes say what was left out and why."""
    from training.evals import generative as gen
    from training.evals.knowledge import KnowledgeProbes, heldout_probes, training_probe_keys
    from training.evals.lm import BitsPerByte, MultipleChoice, clean_text_items, read_choice_file
    from training.evals.protocol import ProtocolAdherence
    if kind not in ("base", "chat"):
        raise ValueError(f"kind must be 'base' or 'chat', not {kind!r}")
    tasks, notes = [], []
    docs = _documents(inputs.clean_dir)
    if inputs.shards_root is not None and (Path(inputs.shards_root) / "val").is_dir():
        tasks.append(BitsPerByte(inputs.shards_root, cfg.bpb_tokens))
    else:
        notes.append(f"bpb: no validation token shards ({inputs.shards_root or 'token_shards not materialized'})")
    if docs is not None and cfg.mc_items:
        items = clean_text_items(docs(), cfg.mc_items, inputs.val_fraction, seed=cfg.seed)
        if items:
            tasks.append(MultipleChoice("mc_clean_text", items))
        else:
            notes.append("mc_clean_text: no validation-split sentences in clean_text")
    elif cfg.mc_items:
        notes.append("mc_clean_text: no clean_text to cut sentence completions from")
    tasks += [MultipleChoice(f"mc_{_stem(p)}", read_choice_file(p)) for p in cfg.mc_paths]
    sampling = Sampling(cfg.samples, cfg.temperature, cfg.top_k, cfg.max_tokens, cfg.batch_rows)
    if cfg.benchmarks_dir:
        from training.evals.benchmarks import build_benchmarks
        found, missing = build_benchmarks(cfg.benchmarks_dir, cfg.benchmarks, kind, cfg.benchmark_items, sampling)
        tasks, notes = tasks + found, notes + missing
    if kind == "base":
        return tasks, notes

    if cfg.protocol_prompts:
        tasks.append(ProtocolAdherence(protocol_prompts(cfg.protocol_prompts, cfg.seed), cfg.protocol_max_tokens,
                                       cfg.temperature))
    name = cfg.identity_name or inputs.identity_name
    tasks.append(gen.GenerativeTask("identity", gen.identity_items(name), sampling))
    if cfg.unknown_items:
        tasks.append(gen.GenerativeTask("unknown_entities", gen.unknown_entity_items(cfg.unknown_items, cfg.seed),
                                        sampling))
    if cfg.reasoning_items:
        for task in ("arithmetic", "counting", "spelling"):
            items = gen.reasoning_items(task, cfg.reasoning_items, cfg.seed)
            tasks.append(gen.GenerativeTask(task, items, sampling, tools=True))
            tasks.append(gen.GenerativeTask(f"{task}_no_tools", items, sampling, tools=False))
    for p in cfg.gsm8k_paths:
        tasks.append(gen.GenerativeTask(f"gsm8k_{_stem(p)}", gen.gsm8k_items(p), sampling))
    if docs is not None and cfg.probes:
        exclude = training_probe_keys(inputs.training_probes_dir)
        probes = heldout_probes(docs(), cfg.probes, exclude, inputs.val_fraction, seed=cfg.seed)
        tasks.append(KnowledgeProbes(probes, cfg.samples, cfg.temperature or 0.7, cfg.top_k, cfg.probe_max_tokens,
                                     batch_rows=cfg.batch_rows))
    elif cfg.probes:
        notes.append("knowledge: no clean_text to find held-out facts in")
    sft_rows = _sft_rows(inputs.sft_mixture)
    train = inputs.training_prompts
    if train is None and sft_rows is not None:
        from training.conversations.heldout import training_hashes
        train = training_hashes(sft_rows())
    if train:
        notes += _drop_trained(tasks, train)
    if cfg.decontamination != "off":
        notes += _decontaminate(cfg, inputs, tasks, docs, sft_rows)
    return tasks, notes


def _sft_rows(mixture: Path | None):
    if mixture is None or not Path(mixture).exists():
        return None
    from training.sft import load_conversations
    return lambda: load_conversations(mixture, "train")


def _decontaminate(cfg: SuiteConfig, inputs: SuiteInputs, tasks: list, docs, sft_rows) -> list[str]:
    from training.conversations.heldout import content_text, message_list
    from training.evals.decontam import apply, cached_contamination
    corpora = {}
    if docs is not None:
        from pipelines.shards import split_of
        corpora["pretraining"] = ((str(inputs.clean_dir), inputs.val_fraction), lambda: (
            d.text or "" for d in docs() if split_of(d.id, inputs.val_fraction) == "train"))
    if sft_rows is not None:
        corpora["sft"] = ((str(inputs.sft_mixture),), lambda: (
            " ".join(content_text(m["content"]) for m in message_list(r)) for r in sft_rows()))
    if not corpora:
        return ["decontamination: no pretraining corpus (clean_text) or SFT data to check the items against"]
    report = cached_contamination(tasks, corpora, cfg.decontamination_ngram)
    return apply(tasks, report, cfg.decontamination == "exclude")


def _drop_trained(tasks: list, train: set[str]) -> list[str]:
    """Leave out every chat-task item whose prompt (normalized) a training conversation holds: the
    generators keep their held-out sides apart by construction, a user's GSM8K file or SFT file may
    not. Returns notes naming what was dropped."""
    from training.conversations.heldout import check_disjoint
    notes = []
    for task in (t for t in tasks if t.kind == "chat"):
        attr, text = next(((a, f) for a, f in (("items", lambda i: i.question), ("prompts", lambda p: p[-1]["content"]),
                                               ("probes", lambda p: p.question)) if hasattr(task, a)), (None, None))
        if attr is None:
            continue
        rows = getattr(task, attr)
        kept, dropped = check_disjoint([str(text(r)) for r in rows], train)
        if dropped:
            setattr(task, attr, [rows[i] for i in kept])
            notes.append(f"{task.name}: {len(dropped)} of {len(rows)} items left out, their prompt is in the SFT data")
    return notes


def run_suite(engine, tasks: list, seed: int, log: Callable[[str], None] = lambda _: None) -> list[EvalResult]:
    """Every task on the engine; a task that fails on its data (a UserError) scores None with the reason."""
    from training.evals import intervals
    results = []
    for task in tasks:
        try:
            r = task.run(engine, seed)
        except UserError as e:
            r = EvalResult(task.name, task.kind, None, 0, [], note=str(e))
        r.metrics.update(getattr(task, "contamination", {}))
        found = intervals.of(r)
        if found is not None and all(x == x for x in found[:2]):   # NaN: no finite resample
            r.interval, r.interval_method = (found[0], found[1]), found[2]
        ci = f" [{r.interval[0]:.4f}, {r.interval[1]:.4f}]" if r.interval else ""
        log(f"{task.name}: score {r.score if r.score is None else round(r.score, 4)}{ci} on {r.n} items "
            f"({r.seconds:.1f} s){' - ' + r.note if r.note else ''}")
        results.append(r)
    from training.evals.benchmarks import aggregate
    core = aggregate(results)
    if core is not None:
        log(f"{core.task}: {core.score:.4f} (mean centred score of {core.n} benchmarks)")
        results.append(core)
    return results


def _documents(clean_dir: Path | None):
    """A function giving a fresh iterator over clean_text's documents, or None when there are none."""
    if clean_dir is None or not Path(clean_dir).exists():
        return None
    from pipelines.io import read_documents
    return lambda: read_documents([clean_dir])


def _stem(path: str | Path) -> str:
    import re
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path).stem)
