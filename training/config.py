"""Training config: a job's defaults < config file (YAML/JSON) < --set overrides; the DeepSpeed config
is derived from it (one source of truth, so the MLflow params describe the run completely).

Each job (training/trainer.py runs them all) has its defaults: JOB_DEFAULTS["pretrain"] is DEFAULTS,
SFT's are DEFAULTS with its own values and a `checks:` section. Every key is checked against the
job's defaults; a section another module owns is checked by that module's schema (SFT's `data:`,
the post-training data config, training/conversations/config.py), never passed through unread."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml

from pipelines.errors import ConfigError

DEFAULTS: dict = {
    "model": {"preset": "tiny",           # any GPTConfig field overrides the preset (rope: true, ...)
              "init_from": None},         # or start from an export dir / registered model NAME@ALIAS
    "train": {
        "steps": 200,                     # optimizer steps of the schedule
        "stop_after": None,               # stop early at this step (the schedule still spans `steps`)
        "batch_tokens": 16384,            # tokens per optimizer step, all ranks together
        "micro_batch": 8,                 # sequences per rank per forward
        "seq_len": None,                  # default: the model's block_size
        "lr": 3.0e-3,
        "min_lr_ratio": 0.1,              # cosine decays to lr * min_lr_ratio
        "warmup_steps": 20,
        "weight_decay": 0.1,              # on matrices only (not biases, norms, embeddings; trainer.py)
        "betas": [0.9, 0.95],
        "eps": 1.0e-8,
        "grad_clip": 1.0,
        "zero_stage": 1,                  # optimizer states sharded; 2/3 when the model does not fit
        # Elements per ZeRO reduce / all-gather bucket (deepspeed_config says why 5e7). Under bf16 at
        # stage 1 only the all-gather uses it: DeepSpeed's BF16_Optimizer ignores the reduce bucket.
        "zero_bucket_elements": 50_000_000,
        "precision": "auto",              # auto: bf16 on CUDA, fp32 on CPU; or "bf16" / "fp32"
        "activation_checkpointing": False,
        "compile": False,                 # torch.compile of the training loss forward only (CPU or CUDA)
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
    # dir: where checkpoints go (default <out>/checkpoints); node_local: that path is each node's own disk
    # (DeepSpeed's checkpoint.use_node_local_storage: every node writes the shared model states too).
    "checkpoint": {"every": 50, "keep": 2, "dir": None, "node_local": False},
    "log": {"every": 1, "mlflow": True, "experiment": "crawl2chat-pretrain", "run_name": None,
            "flush_every": 10},
}


# Supervised fine-tuning (training/sft.py): the registered base model's weights, a smaller lr decayed
# to 0, no weight decay, few steps (sized in training/configs/sft.yaml), chat prompts for the samples.
SFT_DEFAULTS: dict = {
    **DEFAULTS,
    "model": {"preset": None, "init_from": "crawl2chat-base@candidate"},
    "train": {**DEFAULTS["train"], "steps": 40, "lr": 1.0e-3, "min_lr_ratio": 0.0, "warmup_steps": 0,
              "weight_decay": 0.0, "batch_tokens": 4096},
    "eval": {**DEFAULTS["eval"], "every": 10, "val_tokens": 16384, "sample_every": 20, "sample_tokens": 48,
             "prompts": ["Who are you?", "What is 17 + 25?", "How many r are in the word strawberry?",
                         "What is the capital of France?"]},
    "checkpoint": {**DEFAULTS["checkpoint"], "every": 20},
    "log": {**DEFAULTS["log"], "experiment": "crawl2chat-sft"},
    # The chat_model asset's blocking check: held-out prompts (the val split's user turns) sampled
    # through the engine must end the turn with <|im_end|> within max_tokens and never open a turn.
    # 64 x 10 = 640 replies: at a true rate of 99.7% about 2 fail, so the 0.99 gate (6 allowed) is
    # missed by chance well under 1% of the time; at 64 x 3 a single second failure already missed it.
    "checks": {"protocol_adherence_min": 0.99, "protocol_prompts": 64, "protocol_samples": 10,
               "protocol_max_tokens": 176, "protocol_temperature": 0.7},
}

# RL on verifiable tasks (training/rl/job.py, GRPO): the chat model's weights; one optimizer step per
# rollout batch of prompts_per_step x group_size replies; train.batch_tokens is derived from those
# (rows x the model's context), so it is left unset. Knobs are explained in training/configs/rl.yaml.
RL_DEFAULTS: dict = {
    **DEFAULTS,
    "model": {"preset": None, "init_from": "crawl2chat-chat@candidate"},
    "train": {**DEFAULTS["train"], "steps": 20, "lr": 1.0e-4, "min_lr_ratio": 1.0, "warmup_steps": 0,
              "weight_decay": 0.0, "batch_tokens": None, "micro_batch": 16},
    "eval": {**DEFAULTS["eval"], "every": 10, "sample_every": 0, "sample_tokens": 48, "prompts": []},
    "checkpoint": {**DEFAULTS["checkpoint"], "every": 10},
    "log": {**DEFAULTS["log"], "experiment": "crawl2chat-rl"},
    "rl": {"task": "toy", "train_problems": None, "heldout_problems": 64, "task_seed": 0,
           "prompts_per_step": 8, "group_size": 8, "temperature": 1.0, "top_k": None, "top_p": None,
           "max_tokens": 64, "tools": True, "scale_std": False, "updates_per_batch": 1, "clip_eps": 0.2,
           "kl_coef": 0.0, "reference": True, "eval_samples": 8, "eval_temperature": 1.0,
           "log_rollouts_every": 10, "log_rollouts": 4, "kl_max": None, "kl_stop_fraction": 0.8,
           "patience": None},
    # rl_model's check (training/rl/gates.py): the final held-out pass@1's 95% Wilson interval lies
    # above the starting model's pass@1 (same items, seeds): no threshold to tune, none that 0 >= 0 passes
    "checks": {},
}
# RLHF (training/rl/reward_model.py, then training/rl/rlhf.py): one file for both stages. The reward
# model trains with `reward_model:` in place of train.steps/lr/...; the policy stage is GRPO with the
# reward model's score as reward and a per-token k3 KL penalty, stopped early when the KL passes
# rl.kl_max or the held-out reward-model score stops improving for rl.patience evaluations.
RLHF_DEFAULTS: dict = {
    **RL_DEFAULTS,
    "log": {**DEFAULTS["log"], "experiment": "crawl2chat-rlhf"},
    "rl": {**RL_DEFAULTS["rl"], "task": None, "kl_coef": 0.05, "kl_max": 0.5, "patience": 3,
           "heldout_problems": 32},
    "pairs": {"paths": [], "task": "arithmetic", "problems": 200, "samples": 4, "max_tokens": 64,
              "temperature": 1.0, "heldout_fraction": 0.2, "max_words": 60, "seed": 0},
    "reward_model": {"init_from": None, "steps": 30, "lr": 3.0e-4, "micro_batch": 8, "batch_pairs": 16,
                     "warmup_steps": 2, "eval_every": 10, "max_len": None},
    "checks": {"rm_accuracy_margin": 0.1},   # reward_model check: held-out pairwise accuracy >= 0.5 + margin
}
JOB_DEFAULTS: dict[str, dict] = {"pretrain": DEFAULTS, "sft": SFT_DEFAULTS, "rl": RL_DEFAULTS,
                                 "rm": RLHF_DEFAULTS, "rlhf": RLHF_DEFAULTS}


def _check_post_training_data(section, cfg_path: str | Path | None) -> None:
    from training.conversations.config import load_data_config
    if not isinstance(section, dict):
        raise ConfigError(f"{cfg_path or 'training config'}: section 'data' must be a mapping, got {section!r}")
    # The owner's loader reads the file's data: section; the merged section as its overrides checks
    # --set data.* values too.
    load_data_config(cfg_path, overrides=section)


# Sections whose keys another module defines and checks: job -> section -> checker(section, file).
OWNED_ELSEWHERE: dict[str, dict] = {"sft": {"data": _check_post_training_data}}


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


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                job: str = "pretrain") -> dict:
    """The job's defaults < file < overrides; a misspelled section or key is a ConfigError, never ignored."""
    if job not in JOB_DEFAULTS:
        raise ConfigError(f"unknown training job {job!r}; known: {', '.join(JOB_DEFAULTS)}")
    cfg = copy.deepcopy(JOB_DEFAULTS[job])
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
    check_keys(cfg, str(path) if path else "training config", job)
    # A fresh model must be one that transformers and llama.cpp can load: refused now, not after training
    from training.interop.families import check_trainable
    check_trainable(cfg["model"])
    for name, checker in OWNED_ELSEWHERE.get(job, {}).items():
        if name in cfg:
            checker(cfg[name], path)
    return cfg


def check_keys(cfg: dict, source: str, job: str = "pretrain") -> None:
    """Every section and key must be one the job reads (model: a preset or GPTConfig field); sections
    owned elsewhere are left to their owner's check (load_config runs it)."""
    import difflib
    from dataclasses import fields

    from training.model import GPTConfig
    known = {name: set(section) for name, section in JOB_DEFAULTS[job].items()}
    known["model"] = {"preset", "init_from"} | {f.name for f in fields(GPTConfig)}
    owned = OWNED_ELSEWHERE.get(job, {})
    problems = []
    for name, section in cfg.items():
        if name in owned:
            continue
        if name not in known:
            known_names = list(known) + list(owned)
            hint = difflib.get_close_matches(name, known_names, n=1)
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
    """DeepSpeed JSON config. Optimizer and LR schedule are built in trainer.py and handed to
    deepspeed.initialize (torch AdamW with decay/no-decay groups; a warmup + cosine LambdaLR that
    DeepSpeed steps once per optimizer step and saves in its checkpoints).

    bf16 (DeepSpeed 0.19.8, engine._do_optimizer_sanity_check): weights and activations are bf16 but
    gradients are accumulated over the micro-batches, reduced over the ranks, clipped and applied to
    fp32 master weights, so a step of G micro-batches equals one large batch to fp32 rounding. A bf16
    accumulator keeps 8 mantissa bits: each += rounds to ~2^-9 relative, and over G micro-batches
    the error grows ~G·2^-9 (tests/test_numerics.py measures it), i.e. small updates are lost.
      stage 1:   bf16 + data_types.grad_accum_dtype=fp32 -> BF16_Optimizer (fp32 grads per parameter,
                 one all-reduce at the boundary, fp32 master weights and optimizer state). It ignores
                 reduce_bucket_size, overlap_comm and contiguous_gradients (DeepSpeed 0.19.8: the
                 engine all-reduces its fp32 grads after the last micro-batch's backward, in 5e8-
                 element buffers, engine.allreduce_gradients -> buffered_allreduce_fallback): nothing
                 overlaps the backward. Only allgather_bucket_size reaches it (the updated weights'
                 all-gather). Stage 2 is the one whose reduction overlaps the backward under bf16.
      stage 2/3: the same keys -> the ZeRO-2/3 optimizer with fp32 gradient partitions (its reduce-
                 scatter runs every micro-batch, then adds the partition into the fp32 buffer)
      stage 0:   DeepSpeed refuses bf16 weights with fp32 accumulation without ZeRO (it only offers
                 bf16 accumulation there), so stage 0 runs torch autocast instead: fp32 weights, grads
                 and optimizer, bf16 matmuls in the forward/backward.
    communication_data_type=fp32: DeepSpeed reduces in the weights' dtype by default; a bf16 sum of
    W ranks' gradients rounds to 8 bits again. fp32 doubles the gradient bytes: GPT-2 124M on 8 GPUs
    reduces 0.5 GB per reduction, ~1-2 ms of NVLink against ~35 ms of compute per micro-batch."""
    t = cfg["train"]
    gas = grad_accum_steps(t["batch_tokens"], t["micro_batch"], seq_len, world_size)
    stage = int(t["zero_stage"])
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0-3, not {stage}")
    zero: dict = {"stage": stage}
    if stage > 0:
        # Buckets: DeepSpeed's default 5e8 elements exceeds the whole 124M model, so the one bucket
        # fills at the end of the backward and nothing overlaps it. 5e7 (200 MB in fp32) makes ~3
        # buckets of GPT-2 124M, so the first reduction runs while the backward of the lower layers
        # still computes, and each collective stays far above the ~10 MB where NCCL is latency bound.
        # That holds for the ZeRO optimizers (stage 2, 3; stage 1 in fp32). Stage 1 under bf16 is
        # DeepSpeed's BF16_Optimizer, which reads allgather_bucket_size only: reduce_bucket_size and
        # overlap_comm are set but unused there (see the docstring).
        bucket = int(t["zero_bucket_elements"])
        zero.update(reduce_bucket_size=bucket, allgather_bucket_size=bucket,
                    overlap_comm=on_cuda,          # a side stream; on CPU (gloo) it only adds copies
                    contiguous_gradients=True)     # grads copied into one buffer: no fragmentation
    if stage == 2:
        # ZeRO-2 reduce-scatters each bucket as the backward fills it, every micro-batch (it frees
        # the full gradients, that is the memory it saves); reduce_scatter (not all-reduce) moves
        # 1/W of the bytes to each rank. Where the model fits, ZeRO-1 reduces once per step instead.
        zero.update(reduce_scatter=True)
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
        if stage == 0:
            ds["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
        else:
            ds["bf16"] = {"enabled": True}
            ds["data_types"] = {"grad_accum_dtype": "fp32"}
            ds["communication_data_type"] = "fp32"
    if cfg["checkpoint"].get("node_local"):
        # At ZeRO 0-2 DeepSpeed writes the model states (weights, stage 0's optimizer, client state)
        # on global rank 0 only: a node whose disk lacks them cannot resume. This writes them on every
        # node's first rank, and each rank loads its own node's copy.
        ds["checkpoint"] = {"use_node_local_storage": True}
    if stage > 0:
        # torch AdamW is not DeepSpeed's own optimizer; it is in ZeRO's supported list, this only
        # keeps builds with a stricter list from refusing it.
        ds["zero_allow_untested_optimizer"] = True
    return ds
