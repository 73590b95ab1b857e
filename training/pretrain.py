"""Pretrain the GPT on token shards with DeepSpeed (ZeRO 0-3), checkpointing, MLflow and Dagster Pipes.

    deepspeed --num_gpus 8 -m training.pretrain --config training/configs/gpt2-124m.yaml \
        --data lake/tokens/v1 --out lake/models/base/run1 [--resume] [--set train.zero_stage=2]
    python -m training.pretrain --config training/configs/tiny.yaml --data <shards> --out <dir>   # 1 process

Single-process runs get MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK defaults and gloo on CPU.
Optimizer: torch AdamW (fused on CUDA) with weight decay on matrices only. LR schedule: our own
LambdaLR (linear warmup to lr, cosine to lr·min_lr_ratio at `steps`) handed to deepspeed.initialize,
which steps it once per optimizer step and saves/loads it with its checkpoints.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np
import torch

from training import checkpoint as ckpt
from training.config import deepspeed_config, flat, load_config
from training.data import WindowLoader, find_tokenizer_dir, open_shards, val_batches
from training.model import GPT, preset
from training.tracking import Tracker, dagster_pipes_session, device_name, mfu, peak_flops, step_line


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup_distributed() -> tuple[int, int, int]:
    """(rank, world_size, local_rank); initializes torch.distributed through DeepSpeed once."""
    import deepspeed
    import torch.distributed as dist
    if not dist.is_initialized():
        # Defaults for a plain `python -m training.pretrain`: a world of one. A free port keeps
        # concurrent single-process runs (tests, several demos) from colliding on 29500.
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("LOCAL_RANK", "0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))


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


def _all_reduce_sum(values: list[float], device) -> list[float]:
    import torch.distributed as dist
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.tolist()


@torch.no_grad()
def _grad_norm(module: torch.nn.Module) -> float:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])).item()


@torch.no_grad()
def evaluate(engine, batches, device, token_bytes: np.ndarray | None) -> dict:
    """Val loss (nats/token) and bits per byte = Σ nats over text tokens / (ln 2 · Σ their UTF-8 bytes).
    Special tokens (BOS) have 0 bytes: they count in the loss but not in bits/byte (as nanochat)."""
    engine.eval()
    tb = torch.from_numpy(token_bytes.astype(np.int64)).to(device) if token_bytes is not None else None
    loss_sum = count = nats_text = nbytes = 0.0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        per_tok = engine(x, y, reduction="none").float()
        loss_sum += per_tok.sum().item()
        count += y.numel()
        if tb is not None:
            b = tb[y]
            nats_text += (per_tok * (b > 0)).sum().item()
            nbytes += b.sum().item()
    engine.train()
    loss_sum, count, nats_text, nbytes = _all_reduce_sum([loss_sum, count, nats_text, nbytes], device)
    return {"val/loss": loss_sum / count,
            "val/bpb": nats_text / (math.log(2) * nbytes) if nbytes > 0 else None}


def sample(engine, tokenizer, prompts: list[str], ev: dict, device, zero3: bool, rank: int) -> str | None:
    """Text of samples from fixed prompts (rank 0). Under ZeRO-3 every rank runs the same forwards,
    because each forward gathers parameter shards from all ranks."""
    if tokenizer is None or not prompts or (rank != 0 and not zero3):
        return None
    module = engine.module
    module.eval()
    gen = torch.Generator(device=device).manual_seed(1234)
    out = []
    for p in prompts:
        idx = torch.tensor([[tokenizer.bos_id] + tokenizer.encode(p)], device=device)
        ids = module.generate(idx, ev["sample_tokens"], temperature=ev["temperature"], top_k=ev["top_k"],
                              generator=gen)[0, 1:].tolist()
        out.append(f"### {p!r}\n{tokenizer.decode(ids)}\n")
    module.train()
    return "\n".join(out) if rank == 0 else None


def train(cfg: dict, data: str | Path, out: str | Path, resume: bool = False,
          tokenizer_dir: str | Path | None = None) -> dict:
    import deepspeed
    import torch.distributed as dist
    from deepspeed.accelerator import get_accelerator

    if not os.environ.get("CRAWL2CHAT_DS_VERBOSE"):
        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    rank, world, local_rank = setup_distributed()
    on_cuda = torch.cuda.is_available()
    device = torch.device(get_accelerator().device_name(local_rank)) if on_cuda else torch.device("cpu")
    out = Path(out)
    ckpt_dir = out / "checkpoints"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    t, ev = cfg["train"], cfg["eval"]

    train_shards, val_shards = open_shards(data, "train"), open_shards(data, "val")
    tok_dir = find_tokenizer_dir(data, tokenizer_dir)
    tokenizer = token_bytes = None
    if tok_dir is not None:
        from pipelines.tokenizer import load_tokenizer
        tokenizer = load_tokenizer(tok_dir)
        token_bytes = tokenizer.token_bytes

    model_over = {k: v for k, v in cfg["model"].items() if k != "preset"}
    mcfg = preset(cfg["model"].get("preset", "tiny"), **{**model_over, "vocab_size": train_shards.vocab_size})
    seq_len = int(t["seq_len"] or mcfg.block_size)
    if seq_len > mcfg.block_size:
        raise ValueError(f"seq_len {seq_len} > block_size {mcfg.block_size}")
    torch.manual_seed(t["seed"])  # identical init on every rank (DeepSpeed also broadcasts rank 0's)
    model = GPT(mcfg)
    model.activation_checkpointing = bool(t["activation_checkpointing"])
    # Sizes before deepspeed.initialize: under ZeRO-3 the local parameters are empty partitions after.
    n_params, n_params_non_emb = sum(p.numel() for p in model.parameters()), model.num_params()
    fpt = model.flops_per_token(seq_len)
    ds_cfg = deepspeed_config(cfg, world, seq_len, on_cuda)
    optimizer = build_optimizer(model, t, on_cuda)
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(t["warmup_steps"], t["steps"], t["min_lr_ratio"]))
    engine, optimizer, _, sched = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=sched,
                                                       config=ds_cfg)
    if t.get("compile") and on_cuda:
        engine.compile()
    zero3 = ds_cfg["zero_optimization"]["stage"] == 3
    # DeepSpeed reports the gradient norm from its ZeRO and bf16 optimizers; plain fp32 stage 0 clips
    # without keeping the norm, so we compute it ourselves there (same pre-clip definition).
    own_norm_needed = ds_cfg["zero_optimization"]["stage"] == 0 and "bf16" not in ds_cfg
    gas = ds_cfg["gradient_accumulation_steps"]
    loader = WindowLoader(train_shards, seq_len, t["micro_batch"], rank, world, seed=t["seed"], shuffle=t["shuffle"])
    val = val_batches(val_shards, seq_len, ev["val_tokens"], rank, world, t["micro_batch"])

    step, tokens_seen, resumed_from = 0, 0, None
    if resume and (found := ckpt.latest_complete(ckpt_dir)) is not None:
        load_path, client = engine.load_checkpoint(str(ckpt_dir), tag=found[1])
        if load_path is None:
            raise RuntimeError(f"DeepSpeed could not load {ckpt_dir / found[1]}")
        step, tokens_seen = int(client["step"]), int(client["tokens"])
        loader.load_state_dict(client["loader"])
        resumed_from = found[1]
    total, stop = int(t["steps"]), min(int(t["steps"]), int(t["stop_after"] or t["steps"]))

    dev_name = device_name()
    peak = peak_flops(dev_name) if on_cuda else None
    lg = cfg["log"]
    params = {**flat(cfg), "world_size": world, "grad_accum": gas, "seq_len": seq_len,
              "n_params": n_params, "n_params_non_embedding": n_params_non_emb,
              "flops_per_token": fpt, "device": dev_name, "data": str(data), "resumed_from": resumed_from}
    tracker = Tracker(bool(lg["mlflow"]) and rank == 0, out, lg["experiment"], lg.get("run_name"),
                      params=params, tags={"crawl2chat.stage": "pretrain"}, flush_every=lg["flush_every"])
    bar = None
    if rank == 0 and sys.stderr.isatty():
        from tqdm import tqdm
        bar = tqdm(total=total, initial=step, unit="step", dynamic_ncols=True)
    say = (bar.write if bar else print) if rank == 0 else (lambda *_: None)
    say(f"[pretrain] {dev_name} | world {world} | ZeRO-{ds_cfg['zero_optimization']['stage']} | "
        f"{params['n_params']:,} params | {seq_len} ctx | grad accum {gas} | "
        f"{'resumed from ' + resumed_from if resumed_from else 'fresh start'} at step {step}")

    history: list[dict] = []
    last: dict = {}
    metrics_file = out / "metrics.jsonl"
    with (dagster_pipes_session() if rank == 0 else contextlib.nullcontext()) as pipes:
        status = "FAILED"
        try:
            while step < stop:
                step += 1
                lr = optimizer.param_groups[0]["lr"]
                t0 = time.perf_counter()
                loss_acc = torch.zeros((), device=device)
                own_norm = None
                for micro in range(gas):
                    x, y = loader.next_batch()
                    loss = engine(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
                    engine.backward(loss)
                    if micro == gas - 1 and own_norm_needed:
                        own_norm = _grad_norm(engine.module)  # grads are all-reduced at the boundary
                    engine.step()
                    loss_acc += loss.detach().float()
                train_loss = _all_reduce_sum([loss_acc.item() / gas], device)[0] / world
                get_accelerator().synchronize()
                dt = time.perf_counter() - t0
                tokens_seen += t["batch_tokens"]
                norm = own_norm if own_norm_needed else engine.get_global_grad_norm()
                norm = float(norm) if norm is not None else None
                tok_s = t["batch_tokens"] / dt
                m = mfu(tok_s / world, fpt, peak)
                rec = {"step": step, "train/loss": train_loss, "train/lr": lr, "train/grad_norm": norm,
                       "train/step_ms": 1000 * dt, "train/tokens_per_s": tok_s, "train/mfu": m,
                       "train/tokens": tokens_seen}
                if (ev["every"] and step % ev["every"] == 0) or step == total:
                    rec.update(evaluate(engine, val, device, token_bytes))
                if (ev["sample_every"] and step % ev["sample_every"] == 0) or step == total:
                    text = sample(engine, tokenizer, ev["prompts"], ev, device, zero3, rank)
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
                        line = step_line(step, total, train_loss, norm, lr, 1000 * dt, tok_s, m)
                        if "val/loss" in rec:
                            line += f" | val {rec['val/loss']:.4f}" + (
                                f" | {rec['val/bpb']:.3f} bpb" if rec.get("val/bpb") is not None else "")
                        say(line)
                    if pipes is not None and "val/loss" in rec:
                        pipes.log.info(f"step {step}/{total} val loss {rec['val/loss']:.4f}")
                every = cfg["checkpoint"]["every"]
                if (every and step % every == 0) or step == stop:
                    client = {"step": step, "tokens": tokens_seen, "loader": loader.state_dict(),
                              "config": cfg, "world_size": world}
                    ckpt.save(engine, ckpt_dir, step, client, cfg["checkpoint"]["keep"], dist.barrier)
            export_dir = None
            if step >= total:
                from training.export import export_state, gather_state_dict
                state = gather_state_dict(engine)  # collective under ZeRO-3
                if rank == 0:
                    export_dir = export_state(state, mcfg, out / "export", tok_dir, extra={
                        "step": step, "tokens": tokens_seen, "train_loss": last.get("train/loss"),
                        "val_loss": last.get("val/loss"), "val_bpb": last.get("val/bpb"),
                        "mlflow_run_id": tracker.run_id})
                    tracker.log_artifact(export_dir / "config.json", "export")
                dist.barrier()
            summary = {"step": step, "steps": total, "tokens": tokens_seen, "world_size": world,
                       "zero_stage": ds_cfg["zero_optimization"]["stage"], "device": dev_name,
                       "resumed_from": resumed_from, "final": last, "export": str(export_dir) if export_dir else None,
                       "mlflow_run_id": tracker.run_id,
                       "mlflow_tracking_uri": getattr(tracker, "tracking_uri", None)}
            if rank == 0:
                (out / "summary.json").write_text(json.dumps(summary, indent=1))
                if pipes is not None:
                    pipes.report_asset_materialization(metadata={
                        "step": step, "tokens": tokens_seen, "train_loss": last.get("train/loss"),
                        "val_loss": last.get("val/loss"), "val_bpb": last.get("val/bpb"),
                        "tokens_per_s": last.get("train/tokens_per_s"), "mfu": last.get("train/mfu"),
                        "export_dir": str(export_dir) if export_dir else None,
                        "mlflow_run_id": tracker.run_id, "device": dev_name, "world_size": world})
            status = "FINISHED"
        finally:
            if bar:
                bar.close()
            tracker.finish(status)
    summary["history"] = history
    return summary


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML or JSON training config (training/configs/*.yaml)")
    ap.add_argument("--data", required=True, help="token shards root (manifest.json, train/, val/)")
    ap.add_argument("--out", required=True, help="run directory: checkpoints/, export/, metrics.jsonl")
    ap.add_argument("--tokenizer", help="tokenizer directory (default: from the shards root)")
    ap.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set train.zero_stage=2 (repeatable)")
    ap.add_argument("--steps", type=int, help="shorthand for --set train.steps=N")
    ap.add_argument("--zero-stage", type=int, help="shorthand for --set train.zero_stage=N")
    ap.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # the deepspeed launcher
    args = ap.parse_args(argv)
    overrides = list(args.set)
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    if args.zero_stage is not None:
        overrides.append(f"train.zero_stage={args.zero_stage}")
    cfg = load_config(args.config, overrides)
    return train(cfg, args.data, args.out, resume=args.resume, tokenizer_dir=args.tokenizer)


if __name__ == "__main__":
    from pipelines.errors import UserError
    try:
        main()
    except UserError as e:  # a bad config or damaged shards: one line, not a traceback per rank
        print(f"crawl2chat: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
