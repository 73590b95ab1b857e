"""The one training mechanism every job runs on: pretraining, SFT, and later the reward model and RL.

    dist = start()                                   # torch.distributed through DeepSpeed (gloo on CPU)
    model = build_model(cfg, vocab_size)             # fresh from a preset, or model.init_from an export
    job = Job(stage="sft", seq_len=..., batches=..., evaluate=..., ...)
    summary = run(cfg, job, model, out, resume)

What the mechanism owns: the DeepSpeed engine built from the derived config (training/config.py), the
optimizer and LR schedule, the step loop with gradient accumulation, evaluation and samples every N
steps, marker-verified checkpoints and exact resume (training/checkpoint.py), the export
(training/export.py), MLflow from rank 0 and the Dagster Pipes report (training/tracking.py).
What a job plugs in (`Job`; a language model's parts are in training/lm_job.py, the shared command line
in training/job_cli.py): a batch source (next_batch(), state_dict()/load_state_dict(), so a resume
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

import atexit
import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch

from pipelines.errors import ConfigError
from pipelines.io import check_output_target
from pipelines.services import free_port
from training import checkpoint as ckpt
from training import multinode
from training.config import deepspeed_config, flat
from training.data import Prefetcher
from training.lm_job import count_targets, lm_loss, sample, to_device
from training.model import GPT, IGNORE, preset  # noqa: F401 - IGNORE re-exported for the jobs
from training.tracking import (MFU_DEFINITION, Tracker, dagster_pipes_session, device_name, mfu, peak_flops,
                               step_line)


# ---- distributed setup ----------------------------------------------------------------------

@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    on_cuda: bool


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
        atexit.register(_leave_process_group)
        if not torch.cuda.is_available():
            _unlink_cpu_shm_buffer()
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))


def _leave_process_group() -> None:
    """Tear the process group down before the interpreter does: left to interpreter exit, gloo's and
    the CPU shared-memory op's threads are destroyed while running and a rank that finished its work
    aborts ("terminate called without an active exception", exit -6), which fails the launch."""
    import torch.distributed as dist
    if dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def _unlink_cpu_shm_buffer() -> None:
    """DeepSpeed's CPU communication op creates a 66 MB /dev/shm/deepspeed_allreduce_buffer_<uid>_
    <addr>_<port>_<rank> per rank when all ranks are local (the launcher's LOCAL_SIZE) and never
    removes it: every CPU launch left one per rank. Each rank maps every peer's buffer before
    init_distributed returns, so after a barrier the names can go (the mappings stay valid) and
    nothing is left in /dev/shm however the run ends."""
    import torch.distributed as dist
    dist.barrier()
    name = (f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR', '')}_"
            f"{os.environ.get('MASTER_PORT', '')}_{dist.get_rank()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(Path("/dev/shm") / name)


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


def build_model(cfg: dict, vocab_size: int | None = None, init_dir: Path | None = None,
                device: torch.device | str = "cpu") -> GPT:
    """The GPT to train, on `device` (the job's Dist.device): model.init_from's weights (an export or
    registered version, `init_dir` when the caller resolved it already; its config wins, and the
    data's vocabulary must match it), else a fresh init of model.preset with overrides.

    This is the one place a training model is put on its device, before anything sees it: the jobs
    evaluate their starting model (RL's held-out pass@k and KL, the reward model's accuracy) before
    deepspeed.initialize, which would otherwise be the first to move it. Weights stay fp32 (master
    weights; DeepSpeed casts its copy for bf16)."""
    from training.export import load_model
    m = cfg["model"]
    torch.manual_seed(cfg["train"]["seed"])  # identical init on every rank (DeepSpeed also broadcasts rank 0's)
    if m.get("init_from"):
        extra = sorted(k for k, v in m.items() if k not in ("preset", "init_from") and v is not None)
        if extra:
            raise ConfigError(f"model.{extra[0]}: the architecture comes from model.init_from "
                              f"({m['init_from']}); remove model.{', model.'.join(extra)}")
        model = load_model(init_dir or resolve_export(m["init_from"]), device=device, dtype=torch.float32).train()
        if vocab_size is not None and vocab_size != model.config.vocab_size:
            raise ConfigError(f"model.init_from {m['init_from']} has a vocabulary of {model.config.vocab_size}, "
                              f"the data {vocab_size}: use the tokenizer the model was trained with")
        return model
    over = {k: v for k, v in m.items() if k not in ("preset", "init_from")}
    return GPT(preset(m.get("preset") or "tiny", **{**over, "vocab_size": vocab_size})).to(device)


def lr_lambda(warmup: int, total: int, min_ratio: float):
    """Multiplier of the peak lr at optimizer step s (0-based, as LambdaLR counts)."""
    def f(s: int) -> float:
        if s < warmup:
            return (s + 1) / max(1, warmup)
        progress = min(1.0, (s - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def decay_groups(model: torch.nn.Module) -> tuple[list, list]:
    """(decayed, not decayed) trainable parameters. Weight decay pulls the matmul weights (attention,
    MLP, an untied lm_head) towards 0; embeddings are lookup tables, where decay only shrinks the rows
    of rare tokens that get few gradient updates, and biases / norm gains set scale and offset, so
    those are not decayed (GPT-2 / nanochat; nanoGPT decays every matrix, embeddings too). The tied
    lm_head IS wte.weight (model.parameters() yields it once), so it is not decayed either."""
    embeddings = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding)
                  for p in m.parameters(recurse=False)}
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2 and id(p) not in embeddings]
    decayed = {id(p) for p in decay}
    return decay, [p for p in params if id(p) not in decayed]


def build_optimizer(model: torch.nn.Module, t: dict, on_cuda: bool) -> torch.optim.Optimizer:
    decay, no_decay = decay_groups(model)
    groups = [{"params": decay, "weight_decay": t["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=t["lr"], betas=tuple(t["betas"]), eps=t["eps"],
                             **({"fused": True} if on_cuda else {}))


@torch.no_grad()
def _grad_norm(module: torch.nn.Module) -> torch.Tensor:
    """The pre-clip gradient 2-norm, a device tensor (read with the step's other figures)."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))


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
    export_weights: Callable | None = None       # () -> (True, weights on rank 0) to export other weights than the
                                                 # engine's (RL's leash: the last policy within the KL bound); collective


# ---- the loop ------------------------------------------------------------------------------------

@dataclass
class StepFigures:
    """One optimizer step's figures as they come off the device: tensors (or host numbers where no
    device work made them), read in one transfer per log interval by read_figures()."""
    loss_sum: torch.Tensor     # Σ loss over the step, all ranks (float64)
    counted: Any               # global unit count: a host float (one rank) or an all-reduced tensor
    norm: Any                  # pre-clip gradient norm: tensor, float or None
    units: Any                 # units the loss counted on this rank (tensor)
    expected: int              # units job.count gave on this rank, to check against `units`


def _host_to_device(values: list[float], device) -> torch.Tensor:
    t = torch.tensor(values, dtype=torch.float64)
    if torch.device(device).type == "cuda":
        t = t.pin_memory()  # a non_blocking copy from pinned memory does not wait for the stream
    return t.to(device, non_blocking=True)


def optimizer_step(engine, job: Job, micro: list, world: int, device, own_norm_needed: bool) -> StepFigures:
    """One optimizer step over this rank's micro-batches, queued on the device without a host sync:
    no .item(), no tensor built from host values by a blocking copy. Its figures are read later,
    several steps at once (read_figures)."""
    import torch.distributed as dist
    # The step's global count first: every micro-batch's loss is divided by it. job.count reads the
    # host batches. One rank: the count stays a host number. Several: it is all-reduced on the device
    # and the scale stays a device tensor, so nothing waits for the collective.
    counts = [job.count(b) for b in micro]
    local = float(sum(counts))
    if world > 1:
        counted = _host_to_device([local], device)
        dist.all_reduce(counted)
        counted = counted[0]
        scale = (world / counted.clamp(min=1.0)).float()  # DeepSpeed's all-reduce then averages over the world
    else:
        counted, scale = local, 1.0 / max(local, 1.0)
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
    if world > 1:
        dist.all_reduce(loss_acc)
    norm = own_norm if own_norm_needed else engine.get_global_grad_norm()
    if isinstance(norm, torch.Tensor):
        norm = norm.detach().clone()  # DeepSpeed may overwrite its cached tensor at the next step
    return StepFigures(loss_acc, counted, norm, units, sum(counts))


def read_figures(steps: list[StepFigures], stage: str) -> list[tuple[float | None, float, float | None]]:
    """(loss per unit over the whole step and all ranks, None without a unit; the global unit count;
    the pre-clip gradient norm) of each step, with ONE device->host transfer for all of them. Also
    checks that the loss counted the units job.count said (an inconsistent job is caught at the
    first read, not at its step)."""
    fields_ = [v for f in steps for v in (f.loss_sum, f.counted, f.norm, f.units)]
    tensors = [v for v in fields_ if isinstance(v, torch.Tensor)]
    values = iter(torch.stack([v.reshape(()).double() for v in tensors]).tolist() if tensors else [])
    host = [next(values) if isinstance(v, torch.Tensor) else v for v in fields_]
    out = []
    for i, f in enumerate(steps):
        loss_sum, counted, norm, units = host[4 * i:4 * i + 4]
        if int(units) != f.expected:
            raise RuntimeError(f"{stage}: the loss counted {int(units)} units, job.count {f.expected}")
        out.append((loss_sum / counted if counted else None, counted, float(norm) if norm is not None else None))
    return out


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
    replaced, state = job.export_weights() if job.export_weights else (False, None)
    if not replaced:
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
    ckpt_dir = Path(cfg["checkpoint"]["dir"] or out / "checkpoints")
    # Across hosts: the same environment on every rank, and a checkpoint directory every rank sees
    # unless the config says it is node-local (one line on every rank otherwise).
    multinode.check_world(rank, world, ckpt_dir, bool(cfg["checkpoint"]["node_local"]))
    if rank == 0:
        # Before hours of training, not at the export: a directory there that crawl2chat did not write
        # would be refused then (pipelines/io.py).
        check_output_target(out / "export", "export")
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
    if t.get("compile"):
        # The training loss forward only (fixed shapes: one compilation); sampling, per-token eval
        # and the KV-cache engine keep the eager module (training/model.py, compile_loss).
        engine.module.compile_loss()
    if getattr(job.batches, "prefetchable", False):  # the next batches are built while this one trains
        job = dataclasses.replace(job, batches=Prefetcher(job.batches, depth=2, pin=d.on_cuda))
    stage = ds_cfg["zero_optimization"]["stage"]
    # DeepSpeed reports the gradient norm from its ZeRO and BF16 optimizers (stages 1-3, either
    # precision); stage 0 steps the plain torch optimizer (fp32, or fp32 under bf16 autocast: config.py)
    # and clips without keeping the norm, so we compute it ourselves there (same pre-clip definition).
    own_norm_needed = stage == 0
    gas = ds_cfg["gradient_accumulation_steps"]

    step, tokens_seen, resumed_from = 0, 0, None
    if resume and (found := ckpt.latest_complete(ckpt_dir)) is not None:
        client = ckpt.load(engine, ckpt_dir, found[1])  # this rank's own client state
        step, tokens_seen = int(client["step"]), int(client["tokens"])
        job.batches.load_state_dict(client["loader"])
        resumed_from = found[1]
    total, stop = int(t["steps"]), min(int(t["steps"]), int(t["stop_after"] or t["steps"]))

    dev_name = device_name()
    peak = peak_flops(dev_name) if d.on_cuda else None
    params = {**flat(cfg), "world_size": world, "grad_accum": gas, "seq_len": job.seq_len,
              "n_params": n_params, "n_params_non_embedding": n_params_non_emb,
              "flops_per_token": fpt, "mfu_definition": MFU_DEFINITION, "device": dev_name,
              "resumed_from": resumed_from, **job.params}
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
    if peak:
        say(f"[{job.stage}] MFU: {MFU_DEFINITION}"
            + (" (activation checkpointing is on: MFU reads ~25% low)" if t["activation_checkpointing"] else ""))

    history: list[dict] = []
    last: dict = {}
    stopped_early = None
    metrics_file = out / "metrics.jsonl"
    with (dagster_pipes_session() if rank == 0 else contextlib.nullcontext()) as pipes:
        status = "FAILED"
        try:
            # Figures stay on the device and are read once per log interval (one transfer, one
            # synchronize): a per-step .item() would make the host wait for every step's last kernel
            # before queuing the next. Jobs with per-step hooks (RL) read every step. The step time is
            # the interval's mean; evaluation, samples and checkpoints are outside it.
            read_every = 1 if (job.after_step or job.should_stop) else max(1, int(lg["every"]))
            pending: list[tuple[int, float, int, StepFigures]] = []   # (step, lr, tokens, figures)
            window_t0 = time.perf_counter()
            while step < stop:
                step += 1
                lr = optimizer.param_groups[0]["lr"]
                micro = [job.batches.next_batch() for _ in range(gas)]
                tokens_seen += t["batch_tokens"]
                pending.append((step, lr, tokens_seen,
                                optimizer_step(engine, job, micro, world, device, own_norm_needed)))
                every = cfg["checkpoint"]["every"]
                evaluated = bool(job.evaluate and ((ev["every"] and step % ev["every"] == 0) or step == total))
                sampled = bool((ev["sample_every"] and step % ev["sample_every"] == 0) or step == total)
                if not (evaluated or sampled or step % read_every == 0 or step == stop
                        or (every and step % every == 0)):
                    continue
                get_accelerator().synchronize()
                dt = (time.perf_counter() - window_t0) / len(pending)
                tok_s = t["batch_tokens"] / dt
                m = mfu(tok_s / world, fpt, peak)
                recs = [{"step": s, "train/loss": loss, "train/lr": lr_s, "train/grad_norm": norm,
                         "train/step_ms": 1000 * dt, "train/tokens_per_s": tok_s, "train/mfu": m,
                         "train/tokens": tok, "train/trained_tokens": counted,
                         "train/trained_tokens_per_s": counted / dt}
                        for (s, lr_s, tok, _), (loss, counted, norm)
                        in zip(pending, read_figures([f for *_, f in pending], job.stage))]
                pending = []
                rec = recs[-1]
                texts = {}
                if job.after_step:
                    extra, texts = job.after_step(rec)
                    rec.update(extra)
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
                if sampled:
                    text = sample(engine, job.tokenizer, job.sample_prompts, ev, device, stage == 3, rank,
                                  job.sample_stop)
                    if text is not None:
                        tracker.log_text(text, f"samples/step_{step:08d}.txt")
                        (out / "samples").mkdir(exist_ok=True)
                        (out / "samples" / f"step_{step:08d}.txt").write_text(text)
                if stopped_early:
                    say(f"[{job.stage}] stopping early at step {step}: {stopped_early}")
                    stop = step
                history.extend(recs)
                last = rec
                if rank == 0:
                    with open(metrics_file, "a") as f:
                        for r in recs:
                            tracker.log_metrics({k: v for k, v in r.items() if k != "step"}, r["step"])
                            f.write(json.dumps(r) + "\n")
                            if bar:
                                bar.update(1)
                            if r["step"] % lg["every"] == 0 or r["step"] == stop:
                                say(_console_line(r, total))
                    if pipes is not None and rec.get("val/loss") is not None:
                        pipes.log.info(f"step {step}/{total} val loss {rec['val/loss']:.4f}")
                if (every and step % every == 0) or step == stop:
                    client = {"step": step, "tokens": tokens_seen, "loader": job.batches.state_dict(),
                              "config": cfg, "world_size": world, "stage": job.stage}
                    ckpt.save(engine, ckpt_dir, step, client, cfg["checkpoint"]["keep"], dist.barrier)
                window_t0 = time.perf_counter()  # the next interval's clock starts after eval/samples/checkpoint
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
            if isinstance(job.batches, Prefetcher):
                job.batches.close()
            tracker.finish(status)
    summary["history"] = history
    return summary
