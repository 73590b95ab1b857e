"""The one training mechanism every job runs on: pretraining, SFT, and later the reward model and RL.

    dist = start()                                   # torch.distributed through DeepSpeed (gloo on CPU)
    model = build_model(cfg, vocab_size)             # fresh from a preset, or model.init_from an export
    job = Job(stage="sft", seq_len=..., batches=..., evaluate=..., ...)
    summary = run(cfg, job, model, out, resume)

What the mechanism owns: the DeepSpeed engine built from the derived config (training/config.py), the
optimizer and LR schedule, the step loop with gradient accumulation, evaluation and samples every N
steps, marker-verified checkpoints and exact resume (training/checkpoint.py), the export
(training/export.py), MLflow from rank 0 and the Dagster Pipes report (training/tracking.py).
What a job plugs in (`Job`): a batch source (next_batch(), state_dict()/load_state_dict(), so a resume
continues on the exact data an uninterrupted run would see), a loss returning (loss_sum, count) for a
micro-batch, the count of a micro-batch known before its forward, an eval function, sample prompts,
and a stage name that tags the MLflow run and prefixes its params; optionally an after_step hook (extra
per-step metrics and text artifacts: RL's reward, KL, rollouts) and a should_stop hook (early stopping,
e.g. RLHF's KL bound: the run then checkpoints and exports at that step).

Loss normalization (training-recipes.md, Conversations): every job's loss is a SUM over its units
(trained tokens, pairs, ...) divided by the GLOBAL count of units of the whole optimizer step: all
micro-batches of all ranks. The step's counts are all-reduced before the first forward; each
micro-batch backpropagates loss_sum · world / global_count with `scale_wrt_gas=False` (DeepSpeed
would divide by the accumulation steps again) and DeepSpeed's gradient all-reduce averages over the
`world` ranks, so the gradient is that of Σ loss / Σ count over the step, however the units fall
across micro-batches. A micro-batch without a trained unit has loss_sum 0 and adds 0 (no 0/0). For
pretraining every target counts, and this is exactly the mean loss of the step.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch

from pipelines.errors import ConfigError
from training import checkpoint as ckpt
from training.config import deepspeed_config, flat
from training.model import GPT, preset
from training.tracking import Tracker, dagster_pipes_session, device_name, mfu, peak_flops, step_line

IGNORE = -100  # target of a position that is not trained (F.cross_entropy's default ignore_index)


# ---- distributed setup ----------------------------------------------------------------------

@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    on_cuda: bool


def free_port() -> int:
    """A TCP port free on this machine now (the rendezvous of single-node runs)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup_distributed() -> tuple[int, int, int]:
    """(rank, world_size, local_rank); initializes torch.distributed through DeepSpeed once."""
    import deepspeed
    import torch.distributed as dist
    if not dist.is_initialized():
        # Defaults for a plain `python -m training.<job>`: a world of one. A free port keeps
        # concurrent single-process runs (tests, several demos) from colliding on 29500.
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("LOCAL_RANK", "0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))


def start() -> Dist:
    from deepspeed.accelerator import get_accelerator
    if not os.environ.get("CRAWL2CHAT_DS_VERBOSE"):
        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    rank, world, local_rank = setup_distributed()
    on_cuda = torch.cuda.is_available()
    device = torch.device(get_accelerator().device_name(local_rank)) if on_cuda else torch.device("cpu")
    return Dist(rank, world, local_rank, device, on_cuda)


def all_reduce_sum(values: list[float], device) -> list[float]:
    import torch.distributed as dist
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.tolist()


# ---- model, optimizer, schedule ---------------------------------------------------------------

def resolve_export(source: str | Path) -> Path:
    """An export directory, or a registered model 'NAME@ALIAS' / 'NAME/VERSION' resolved (and cached)
    through the inference engine's registry resolver: one resolver for serving and training."""
    from training.engine.engine import _MODEL_URI, _download_registered
    path = Path(source)
    if path.is_dir():
        return path
    if _MODEL_URI.match(str(source)):
        return _download_registered(str(source))[0]
    raise ConfigError(f"model.init_from: {source} is neither an export directory (model.safetensors + "
                      "config.json) nor a registered model 'NAME@ALIAS' / 'NAME/VERSION'")


def build_model(cfg: dict, vocab_size: int | None = None, init_dir: Path | None = None) -> GPT:
    """The GPT to train: model.init_from's weights (an export or registered version, `init_dir` when
    the caller resolved it already; its config wins, and the data's vocabulary must match it), else a
    fresh init of model.preset with overrides."""
    from training.export import load_model
    m = cfg["model"]
    torch.manual_seed(cfg["train"]["seed"])  # identical init on every rank (DeepSpeed also broadcasts rank 0's)
    if m.get("init_from"):
        extra = sorted(k for k, v in m.items() if k not in ("preset", "init_from") and v is not None)
        if extra:
            raise ConfigError(f"model.{extra[0]}: the architecture comes from model.init_from "
                              f"({m['init_from']}); remove model.{', model.'.join(extra)}")
        model = load_model(init_dir or resolve_export(m["init_from"]), dtype=torch.float32).train()
        if vocab_size is not None and vocab_size != model.config.vocab_size:
            raise ConfigError(f"model.init_from {m['init_from']} has a vocabulary of {model.config.vocab_size}, "
                              f"the data {vocab_size}: use the tokenizer the model was trained with")
        return model  # fp32 master weights: DeepSpeed casts its copy for bf16
    over = {k: v for k, v in m.items() if k not in ("preset", "init_from")}
    return GPT(preset(m.get("preset") or "tiny", **{**over, "vocab_size": vocab_size}))


def lr_lambda(warmup: int, total: int, min_ratio: float):
    """Multiplier of the peak lr at optimizer step s (0-based, as LambdaLR counts)."""
    def f(s: int) -> float:
        if s < warmup:
            return (s + 1) / max(1, warmup)
        progress = min(1.0, (s - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def build_optimizer(model: torch.nn.Module, t: dict, on_cuda: bool) -> torch.optim.Optimizer:
    # Decay matrices (linear weights, embeddings) only; biases and norm gains are not decayed (nanoGPT).
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": t["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=t["lr"], betas=tuple(t["betas"]), eps=t["eps"],
                             **({"fused": True} if on_cuda else {}))


@torch.no_grad()
def _grad_norm(module: torch.nn.Module) -> float:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])).item()


# ---- what a language-model job plugs in ------------------------------------------------------

def to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return type(batch)(to_device(v, device) for v in batch)


def count_targets(batch) -> int:
    """Trained positions of an (inputs, targets) micro-batch: targets that are not IGNORE."""
    return int((batch[1] != IGNORE).sum())


def lm_loss(engine, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ cross-entropy over the trained targets, their count, a tensor: no device sync). IGNORE
    targets add exactly 0."""
    x, y = batch
    return engine(x, y, reduction="sum"), (y != IGNORE).sum()


@torch.no_grad()
def lm_sums(model, x: torch.Tensor, y: torch.Tensor, token_bytes: torch.Tensor | None) -> torch.Tensor:
    """Per row of an (inputs, targets) micro-batch, (B, 4) float64: Σ nats over the trained targets,
    their count, Σ nats over the text targets (UTF-8 bytes > 0) and Σ their bytes (0 without
    token_bytes). Shared by the trainer's validation and the bits-per-byte eval (training/evals)."""
    per_tok = model(x, y, reduction="none").float()  # 0 at IGNORE targets
    trained = y != IGNORE
    b = token_bytes[y.clamp(min=0)] * trained if token_bytes is not None else torch.zeros_like(y)
    return torch.stack([per_tok.sum(1).double(), trained.sum(1).double(),
                        (per_tok * (b > 0)).sum(1).double(), b.sum(1).double()], dim=1)


@torch.no_grad()
def evaluate_lm(engine, batches, device, token_bytes: np.ndarray | None) -> dict:
    """Val loss (nats per trained token) and bits per byte = Σ nats over trained text tokens /
    (ln 2 · Σ their UTF-8 bytes). Special tokens have 0 bytes: they count in the loss, not in bits
    per byte (as nanochat). Collective: every rank runs its batches, then the sums are reduced."""
    engine.eval()
    tb = torch.from_numpy(token_bytes.astype(np.int64)).to(device) if token_bytes is not None else None
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    for x, y in batches:
        sums += lm_sums(engine, x.to(device), y.to(device), tb).sum(0)
    engine.train()
    loss_sum, count, nats_text, nbytes = all_reduce_sum(sums.tolist(), device)
    return {"val/loss": loss_sum / count if count else None,
            "val/bpb": nats_text / (math.log(2) * nbytes) if nbytes > 0 else None}


def sample(engine, tokenizer, prompts: list[tuple[str, list[int]]], ev: dict, device, zero3: bool, rank: int,
           stop_ids: tuple[int, ...] = ()) -> str | None:
    """Text of samples from fixed prompts (rank 0): the prompt (after its first token) and what follows,
    cut after the first stop token. Under ZeRO-3 every rank runs the same forwards, because each forward
    gathers parameter shards from all ranks."""
    if tokenizer is None or not prompts or (rank != 0 and not zero3):
        return None
    module = engine.module
    module.eval()
    gen = torch.Generator(device=device).manual_seed(1234)
    out = []
    for label, ids in prompts:
        idx = torch.tensor([ids], device=device)
        new = module.generate(idx, ev["sample_tokens"], temperature=ev["temperature"], top_k=ev["top_k"],
                              generator=gen)[0, len(ids):].tolist()
        stop = next((i for i, t in enumerate(new) if t in stop_ids), None)
        new = new if stop is None else new[:stop + 1]
        out.append(f"### {label!r}\n{tokenizer.decode(ids[1:] + new)}\n")
    module.train()
    return "\n".join(out) if rank == 0 else None


class BatchSource(Protocol):
    def next_batch(self) -> Any: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class Job:
    stage: str                                   # "pretrain", "sft", ...: MLflow tag, param prefix, log prefix
    seq_len: int                                 # positions per sequence (DeepSpeed's batch derivation)
    batches: BatchSource                         # this rank's training micro-batches
    loss: Callable = lm_loss                     # (engine, micro-batch) -> (loss_sum tensor, count)
    count: Callable = count_targets              # micro-batch -> count, before its forward
    evaluate: Callable | None = None             # engine -> {"val/loss": ...}; collective
    tokenizer: Any = None                        # for samples
    tokenizer_dir: Path | None = None            # copied into the export
    sample_prompts: list = field(default_factory=list)   # [(label, prompt ids)]
    sample_stop: tuple[int, ...] = ()            # cut samples after these tokens
    params: dict = field(default_factory=dict)   # extra MLflow params (data, packing, ...)
    report: dict = field(default_factory=dict)   # extra figures for summary.json, export and Pipes
    after_step: Callable | None = None           # step record -> (extra metrics, {artifact path: text}); collective
    should_stop: Callable | None = None          # step record -> why to stop before train.steps (exported), or None


# ---- the loop ------------------------------------------------------------------------------------

def optimizer_step(engine, job: Job, micro: list, world: int, device, own_norm_needed: bool
                   ) -> tuple[float | None, float, float | None]:
    """One optimizer step over this rank's micro-batches: (loss per unit over the whole step and all
    ranks, None without a unit; the global unit count; the pre-clip gradient norm)."""
    # The step's global count first: every micro-batch's loss is divided by it.
    counts = [job.count(b) for b in micro]
    counted = all_reduce_sum([float(sum(counts))], device)[0]
    scale = world / max(counted, 1.0)  # DeepSpeed's all-reduce then averages over the world
    loss_acc = torch.zeros((), device=device, dtype=torch.float64)
    own_norm, units = None, 0
    for i, b in enumerate(micro):
        loss_sum, n = job.loss(engine, to_device(b, device))
        units = units + n
        engine.backward(loss_sum * scale, scale_wrt_gas=False)
        if i == len(micro) - 1 and own_norm_needed:
            own_norm = _grad_norm(engine.module)  # grads are all-reduced at the boundary
        engine.step()
        loss_acc += loss_sum.detach().double()
    if int(units) != sum(counts):  # read with the loss below: no extra device sync
        raise RuntimeError(f"{job.stage}: the loss counted {int(units)} units, job.count {sum(counts)}")
    loss_total = all_reduce_sum([loss_acc.item()], device)[0]
    norm = own_norm if own_norm_needed else engine.get_global_grad_norm()
    return (loss_total / counted if counted else None), counted, (float(norm) if norm is not None else None)


def _console_line(rec: dict, total: int) -> str:
    loss = rec["train/loss"] if rec["train/loss"] is not None else float("nan")
    line = step_line(rec["step"], total, loss, rec["train/grad_norm"], rec["train/lr"], rec["train/step_ms"],
                     rec["train/tokens_per_s"], rec["train/mfu"])
    if rec.get("val/loss") is not None:
        line += f" | val {rec['val/loss']:.4f}" + (f" | {rec['val/bpb']:.3f} bpb" if rec.get("val/bpb") is not None else "")
    return line


def _export(engine, job: Job, export_dir: Path, figures: dict, tracker: Tracker) -> Path | None:
    """Full weights gathered (collective under ZeRO-3) and exported by rank 0 with the tokenizer."""
    import torch.distributed as dist
    from training.export import export_state, gather_state_dict
    state = gather_state_dict(engine)
    out = None
    if dist.get_rank() == 0:
        out = export_state(state, engine.module.config, export_dir, job.tokenizer_dir, extra={
            **figures, "stage": job.stage, "mlflow_run_id": tracker.run_id, **job.report})
        tracker.log_artifact(out / "config.json", "export")
    dist.barrier()
    return out


def run(cfg: dict, job: Job, model: GPT, out: str | Path, resume: bool = False) -> dict:
    import deepspeed
    import torch.distributed as dist
    from deepspeed.accelerator import get_accelerator

    d = start()
    rank, world, device = d.rank, d.world, d.device
    out = Path(out)
    ckpt_dir = out / "checkpoints"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    t, ev, lg = cfg["train"], cfg["eval"], cfg["log"]
    if job.seq_len > model.config.block_size:
        raise ConfigError(f"train.seq_len {job.seq_len} > the model's block_size {model.config.block_size}")
    model.activation_checkpointing = bool(t["activation_checkpointing"])
    # Sizes before deepspeed.initialize: under ZeRO-3 the local parameters are empty partitions after.
    n_params, n_params_non_emb = sum(p.numel() for p in model.parameters()), model.num_params()
    fpt = model.flops_per_token(job.seq_len)
    ds_cfg = deepspeed_config(cfg, world, job.seq_len, d.on_cuda)
    optimizer = build_optimizer(model, t, d.on_cuda)
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(t["warmup_steps"], t["steps"], t["min_lr_ratio"]))
    engine, optimizer, _, sched = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=sched,
                                                       config=ds_cfg)
    if t.get("compile") and d.on_cuda:
        engine.compile()
    stage = ds_cfg["zero_optimization"]["stage"]
    # DeepSpeed reports the gradient norm from its ZeRO and bf16 optimizers; plain fp32 stage 0 clips
    # without keeping the norm, so we compute it ourselves there (same pre-clip definition).
    own_norm_needed = stage == 0 and "bf16" not in ds_cfg
    gas = ds_cfg["gradient_accumulation_steps"]

    step, tokens_seen, resumed_from = 0, 0, None
    if resume and (found := ckpt.latest_complete(ckpt_dir)) is not None:
        load_path, client = engine.load_checkpoint(str(ckpt_dir), tag=found[1])
        if load_path is None:
            raise RuntimeError(f"DeepSpeed could not load {ckpt_dir / found[1]}")
        step, tokens_seen = int(client["step"]), int(client["tokens"])
        job.batches.load_state_dict(client["loader"])
        resumed_from = found[1]
    total, stop = int(t["steps"]), min(int(t["steps"]), int(t["stop_after"] or t["steps"]))

    dev_name = device_name()
    peak = peak_flops(dev_name) if d.on_cuda else None
    params = {**flat(cfg), "world_size": world, "grad_accum": gas, "seq_len": job.seq_len,
              "n_params": n_params, "n_params_non_embedding": n_params_non_emb,
              "flops_per_token": fpt, "device": dev_name, "resumed_from": resumed_from, **job.params}
    tracker = Tracker(bool(lg["mlflow"]) and rank == 0, out, lg["experiment"], lg.get("run_name"),
                      params=params, tags={"crawl2chat.stage": job.stage}, flush_every=lg["flush_every"],
                      param_prefix=job.stage)
    bar = None
    if rank == 0 and sys.stderr.isatty():
        from tqdm import tqdm
        bar = tqdm(total=total, initial=step, unit="step", dynamic_ncols=True)
    say = (bar.write if bar else print) if rank == 0 else (lambda *_: None)
    say(f"[{job.stage}] {dev_name} | world {world} | ZeRO-{stage} | {n_params:,} params | {job.seq_len} ctx | "
        f"grad accum {gas} | {'resumed from ' + resumed_from if resumed_from else 'fresh start'} at step {step}")

    history: list[dict] = []
    last: dict = {}
    stopped_early = None
    metrics_file = out / "metrics.jsonl"
    with (dagster_pipes_session() if rank == 0 else contextlib.nullcontext()) as pipes:
        status = "FAILED"
        try:
            while step < stop:
                step += 1
                lr = optimizer.param_groups[0]["lr"]
                t0 = time.perf_counter()
                micro = [job.batches.next_batch() for _ in range(gas)]
                train_loss, counted, norm = optimizer_step(engine, job, micro, world, device, own_norm_needed)
                get_accelerator().synchronize()
                dt = time.perf_counter() - t0
                tokens_seen += t["batch_tokens"]
                tok_s = t["batch_tokens"] / dt
                m = mfu(tok_s / world, fpt, peak)
                rec = {"step": step, "train/loss": train_loss, "train/lr": lr, "train/grad_norm": norm,
                       "train/step_ms": 1000 * dt, "train/tokens_per_s": tok_s, "train/mfu": m,
                       "train/tokens": tokens_seen, "train/trained_tokens": counted,
                       "train/trained_tokens_per_s": counted / dt}
                texts = {}
                if job.after_step:
                    extra, texts = job.after_step(rec)
                    rec.update(extra)
                evaluated = bool(job.evaluate and ((ev["every"] and step % ev["every"] == 0) or step == total))
                if evaluated:
                    rec.update(job.evaluate(engine))
                stopped_early = job.should_stop(rec) if job.should_stop else None
                if stopped_early and job.evaluate and not evaluated:
                    rec.update(job.evaluate(engine))   # the exported model's figures, as at the last step
                for name, text in texts.items():
                    tracker.log_text(text, name)
                    if rank == 0:
                        (out / name).parent.mkdir(parents=True, exist_ok=True)
                        (out / name).write_text(text)
                if (ev["sample_every"] and step % ev["sample_every"] == 0) or step == total:
                    text = sample(engine, job.tokenizer, job.sample_prompts, ev, device, stage == 3, rank,
                                  job.sample_stop)
                    if text is not None:
                        tracker.log_text(text, f"samples/step_{step:08d}.txt")
                        (out / "samples").mkdir(exist_ok=True)
                        (out / "samples" / f"step_{step:08d}.txt").write_text(text)
                history.append(rec)
                last = rec
                if rank == 0:
                    tracker.log_metrics({k: v for k, v in rec.items() if k != "step"}, step)
                    with open(metrics_file, "a") as f:
                        f.write(json.dumps(rec) + "\n")
                    if bar:
                        bar.update(1)
                    if step % lg["every"] == 0 or step == stop:
                        say(_console_line(rec, total))
                    if pipes is not None and rec.get("val/loss") is not None:
                        pipes.log.info(f"step {step}/{total} val loss {rec['val/loss']:.4f}")
                if stopped_early:
                    say(f"[{job.stage}] stopping early at step {step}: {stopped_early}")
                    stop = step
                every = cfg["checkpoint"]["every"]
                if (every and step % every == 0) or step == stop:
                    client = {"step": step, "tokens": tokens_seen, "loader": job.batches.state_dict(),
                              "config": cfg, "world_size": world, "stage": job.stage}
                    ckpt.save(engine, ckpt_dir, step, client, cfg["checkpoint"]["keep"], dist.barrier)
            figures = {"step": step, "tokens": tokens_seen, "train_loss": last.get("train/loss"),
                       "val_loss": last.get("val/loss"), "val_bpb": last.get("val/bpb")}
            export_dir = _export(engine, job, out / "export", figures, tracker) \
                if step >= total or stopped_early else None
            summary = {"step": step, "steps": total, "tokens": tokens_seen, "world_size": world,
                       "stopped_early": stopped_early,
                       "zero_stage": stage, "device": dev_name, "stage": job.stage,
                       "resumed_from": resumed_from, "final": last, "export": str(export_dir) if export_dir else None,
                       "mlflow_run_id": tracker.run_id,
                       "mlflow_tracking_uri": getattr(tracker, "tracking_uri", None), **job.report}
            if rank == 0:
                (out / "summary.json").write_text(json.dumps(summary, indent=1))
                if pipes is not None:
                    pipes.report_asset_materialization(metadata={
                        **figures, "tokens_per_s": last.get("train/tokens_per_s"), "mfu": last.get("train/mfu"),
                        "export_dir": str(export_dir) if export_dir else None,
                        "mlflow_run_id": tracker.run_id, "device": dev_name, "world_size": world, **job.report})
            status = "FINISHED"
        finally:
            if bar:
                bar.close()
            tracker.finish(status)
    summary["history"] = history
    return summary


def job_arg_parser(doc: str | None, data_help: str):
    """The arguments every job's command line shares (the deepspeed launcher adds --local_rank)."""
    import argparse
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML or JSON training config (training/configs/*.yaml)")
    ap.add_argument("--data", required=True, help=data_help)
    ap.add_argument("--out", required=True, help="run directory: checkpoints/, export/, metrics.jsonl")
    ap.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set train.zero_stage=2 (repeatable)")
    ap.add_argument("--steps", type=int, help="shorthand for --set train.steps=N")
    ap.add_argument("--zero-stage", type=int, help="shorthand for --set train.zero_stage=N")
    ap.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    return ap


def job_overrides(args) -> list[str]:
    overrides = list(args.set)
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    if args.zero_stage is not None:
        overrides.append(f"train.zero_stage={args.zero_stage}")
    return overrides


def cli_main(main: Callable[[], Any]) -> None:
    """Entry point of a job module: a UserError (a bad config, damaged data) prints one line and exits
    with its code instead of a traceback per rank."""
    from pipelines.errors import UserError
    try:
        main()
    except UserError as e:
        print(f"crawl2chat: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
