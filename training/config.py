"""Pretraining config: defaults < config file (YAML/JSON) < --set overrides; the DeepSpeed config is
derived from it (one source of truth, so the MLflow params describe the run completely)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml

from pipelines.errors import ConfigError

DEFAULTS: dict = {
    "model": {"preset": "tiny"},          # any GPTConfig field overrides the preset (rope: true, ...)
    "train": {
        "steps": 200,                     # optimizer steps of the schedule
        "stop_after": None,               # stop early at this step (the schedule still spans `steps`)
        "batch_tokens": 16384,            # tokens per optimizer step, all ranks together
        "micro_batch": 8,                 # sequences per rank per forward
        "seq_len": None,                  # default: the model's block_size
        "lr": 3.0e-3,
        "min_lr_ratio": 0.1,              # cosine decays to lr * min_lr_ratio
        "warmup_steps": 20,
        "weight_decay": 0.1,              # on matrices only (not biases, norms, embeddings)
        "betas": [0.9, 0.95],
        "eps": 1.0e-8,
        "grad_clip": 1.0,
        "zero_stage": 0,
        "precision": "auto",              # auto: bf16 on CUDA, fp32 on CPU; or "bf16" / "fp32"
        "activation_checkpointing": False,
        "compile": False,                 # engine.compile() on CUDA
        "seed": 1337,
        "shuffle": True,
    },
    "eval": {
        "every": 50,                      # val loss + bits/byte every N steps (and at the end)
        "val_tokens": 65536,
        "sample_every": 100,              # samples from fixed prompts every M steps (and at the end)
        "sample_tokens": 48,
        "temperature": 0.8,
        "top_k": 50,
        "prompts": ["The", "Once upon a time", "The capital of France is", "In this article, we"],
    },
    "checkpoint": {"every": 50, "keep": 2},
    "log": {"every": 1, "mlflow": True, "experiment": "crawl2chat-pretrain", "run_name": None,
            "flush_every": 10},
}


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(expr: str) -> tuple[list[str], object]:
    """"train.lr=1e-3" -> (["train", "lr"], 0.001); values parse as YAML (numbers, bools, lists)."""
    if "=" not in expr:
        raise ValueError(f"override {expr!r} is not key=value")
    key, raw = expr.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else None
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    return key.strip().split("."), value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> dict:
    """DEFAULTS < file < overrides; a misspelled section or key is a ConfigError, never ignored."""
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        from pipelines.config import read_yaml
        if str(path).endswith(".json"):
            try:
                data = json.loads(Path(path).read_text())
            except (OSError, ValueError) as e:
                raise ConfigError(f"{path}: cannot read the training config ({e})") from None
        else:
            data = read_yaml(path)
        cfg = deep_merge(cfg, data or {})
    for expr in overrides or []:
        try:
            keys, value = parse_override(expr)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        node = cfg
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    check_keys(cfg, str(path) if path else "training config")
    return cfg


def check_keys(cfg: dict, source: str) -> None:
    """Every section and key must be one the trainer reads (model: a preset or GPTConfig field)."""
    import difflib
    from dataclasses import fields

    from training.model import GPTConfig
    known = {name: set(section) for name, section in DEFAULTS.items()}
    known["model"] = {"preset"} | {f.name for f in fields(GPTConfig)}
    problems = []
    for name, section in cfg.items():
        if name not in known:
            hint = difflib.get_close_matches(name, known, n=1)
            problems.append(f"unknown section '{name}'" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
            continue
        if not isinstance(section, dict):
            problems.append(f"section '{name}' must be a mapping, got {section!r}")
            continue
        for key in section:
            if key not in known[name]:
                hint = difflib.get_close_matches(key, known[name], n=1)
                problems.append(f"unknown key '{name}.{key}'" + (f" (did you mean '{name}.{hint[0]}'?)" if hint else ""))
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))


def flat(cfg: dict, prefix: str = "") -> dict:
    """{"train": {"lr": 1}} -> {"train.lr": 1} for MLflow params."""
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def grad_accum_steps(batch_tokens: int, micro_batch: int, seq_len: int, world_size: int) -> int:
    per_micro = micro_batch * seq_len * world_size
    if batch_tokens % per_micro:
        raise ValueError(f"batch_tokens {batch_tokens} is not a multiple of micro_batch·seq_len·world "
                         f"= {micro_batch}·{seq_len}·{world_size} = {per_micro}")
    return batch_tokens // per_micro


def resolve_precision(precision: str, on_cuda: bool) -> str:
    if precision == "auto":
        return "bf16" if on_cuda else "fp32"
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, not {precision!r}")
    return precision


def deepspeed_config(cfg: dict, world_size: int, seq_len: int, on_cuda: bool) -> dict:
    """DeepSpeed JSON config. Optimizer and LR schedule are built in pretrain.py and handed to
    deepspeed.initialize (torch AdamW with decay/no-decay groups; a warmup + cosine LambdaLR that
    DeepSpeed steps once per optimizer step and saves in its checkpoints)."""
    t = cfg["train"]
    gas = grad_accum_steps(t["batch_tokens"], t["micro_batch"], seq_len, world_size)
    stage = int(t["zero_stage"])
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0-3, not {stage}")
    zero: dict = {"stage": stage}
    if stage >= 2:
        zero.update(overlap_comm=on_cuda, contiguous_gradients=True, reduce_scatter=True)
    if stage == 3:
        # Lets the exporter gather full 16-bit weights on rank 0 (engine.save_16bit_model).
        zero.update(stage3_gather_16bit_weights_on_model_save=True)
    ds = {
        "train_micro_batch_size_per_gpu": t["micro_batch"],
        "gradient_accumulation_steps": gas,
        "train_batch_size": t["micro_batch"] * gas * world_size,
        "gradient_clipping": float(t["grad_clip"]) if t["grad_clip"] else 0.0,
        "zero_optimization": zero,
        "steps_per_print": 10**9,   # we print our own line per step
        "wall_clock_breakdown": False,
    }
    if resolve_precision(t["precision"], on_cuda) == "bf16":
        ds["bf16"] = {"enabled": True}
    if stage > 0:
        # torch AdamW is not DeepSpeed's own optimizer; it is in ZeRO's supported list, this only
        # keeps builds with a stricter list from refusing it.
        ds["zero_allow_untested_optimizer"] = True
    return ds
