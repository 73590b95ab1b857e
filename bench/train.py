"""Training throughput of the REAL training loop (training/trainer.py run(), through training.pretrain);
prints JSON.

The config is a run's: a preset yaml (load_config) with --set overrides, grad accumulation derived to
train.batch_tokens, the WindowLoader over token shards behind the prefetcher, the padded vocabulary,
the chunked loss and train.compile. Data: --data <shards root>, or a random-token shard set written
by the project's shard writer into a temp dir (vocabulary --vocab). For each ZeRO stage x compile
setting it reports
  - tokens/s and MFU (CUDA) of the trainer's own loop: the mean step time its history reports over the
    steps after --warmup (the loop reads the device once per log interval, here = --warmup steps);
  - a step-time breakdown from a bench-only instrumented loop over the same engine setup, with a
    device synchronize around each part: data wait, forward, backward, optimizer (engine.step at the
    accumulation boundary: ZeRO's parameter all-gather included) and comm, estimated as the boundary
    micro-step's backward minus a plain micro-step's (the gradient all-reduce / reduce-scatter that
    DeepSpeed runs at the boundary; null without accumulation or on one rank);
  - peak device memory (CUDA);
  - the loss's rows per chunk (model.py loss_rows) and the FLOPs backward recomputes (head matmul of
    checkpointed loss chunks, activation checkpointing): `hfu` counts them, `mfu` does not
    (training/tracking.py MFU_DEFINITION). --loss-chunk N forces N positions per loss chunk (today's
    8192, or one chunk) to time the head recompute against none.
CPU default: training/configs/tiny.yaml, ZeRO 0,1,2, compile off (inductor's CPU compile takes
minutes on two cores; --compile 0,1 times both). CUDA default: training/configs/gpt2-124m.yaml
(ctx 1024, bf16, compile on), ZeRO 0,1,2. More than one GPU: `deepspeed --num_gpus N bench/train.py`.

    python bench/train.py [--config Y] [--set K=V ...] [--steps 4] [--warmup 2] [--stages 0,1,2]
                          [--compile 0,1] [--data SHARDS] [--vocab 50257] [--threads N] [--loss-chunk N]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def real_loop(cfg: dict, data: Path, out: Path, warmup: int) -> dict:
    """Mean step time of the trainer's loop after `warmup` steps (its history, interval means)."""
    from training.pretrain import train
    summary = train(cfg, data, out)
    steady = [r for r in summary["history"] if r["step"] > warmup]
    step_s = statistics.fmean(r["train/step_ms"] for r in steady) / 1000
    return {"step_ms": round(1000 * step_s, 2), "tokens_per_s": round(cfg["train"]["batch_tokens"] / step_s, 1),
            "final_loss": summary["final"]["train/loss"]}


def instrumented(cfg: dict, data: Path, steps: int, warmup: int) -> dict:
    """The breakdown: the run's engine setup, each part of each micro-step between synchronizes."""
    import deepspeed
    from deepspeed.accelerator import get_accelerator
    from training.config import deepspeed_config
    from training.data import Prefetcher, WindowLoader, open_shards
    from training.lm_job import lm_loss, to_device
    from training.trainer import build_model, build_optimizer, start
    d, t = start(), cfg["train"]
    shards = open_shards(data, "train")
    model = build_model(cfg, vocab_size=shards.vocab_size, device=d.device)
    seq = int(t["seq_len"] or model.config.block_size)
    model.activation_checkpointing = bool(t["activation_checkpointing"])
    ds_cfg = deepspeed_config(cfg, d.world, seq, d.on_cuda)
    engine, *_ = deepspeed.initialize(model=model, optimizer=build_optimizer(model, t, d.on_cuda), config=ds_cfg)
    if t["compile"]:
        engine.module.compile_loss()
    loader = Prefetcher(WindowLoader(shards, seq, t["micro_batch"], d.rank, d.world, seed=t["seed"]), pin=d.on_cuda)
    gas = ds_cfg["gradient_accumulation_steps"]
    scale = d.world / t["batch_tokens"]  # pretraining: every target counts (trainer.optimizer_step)

    def clock() -> float:
        get_accelerator().synchronize()
        return time.perf_counter()
    parts = {k: [] for k in ("data", "forward", "backward", "optimizer", "step")}
    plain_bwd, boundary_bwd = [], []
    for step in range(warmup + steps):
        sums = dict.fromkeys(parts, 0.0)
        start_s = clock()
        for i in range(gas):
            t0 = clock()
            batch = to_device(loader.next_batch(), d.device)
            t1 = clock()
            loss, _ = lm_loss(engine, batch)
            t2 = clock()
            engine.backward(loss * scale, scale_wrt_gas=False)
            t3 = clock()
            engine.step()
            t4 = clock()
            for k, v in (("data", t1 - t0), ("forward", t2 - t1), ("backward", t3 - t2), ("optimizer", t4 - t3)):
                sums[k] += v
            if step >= warmup:
                (boundary_bwd if i == gas - 1 else plain_bwd).append(t3 - t2)
        sums["step"] = clock() - start_s
        if step >= warmup:
            for k, v in sums.items():
                parts[k].append(v)
    loader.close()
    out = {f"{k}_ms": round(1000 * statistics.fmean(v), 2) for k, v in parts.items()}
    out["comm_ms"] = round(1000 * (statistics.fmean(boundary_bwd) - statistics.fmean(plain_bwd)), 2) \
        if plain_bwd and d.world > 1 else None
    del engine, model
    return out


def bench_one(args, data: Path, work: Path, stage: int, compiled: bool, on_cuda: bool) -> dict:
    from training.config import load_config
    from training.data import open_shards
    from training.model import GPT, preset
    from training.tracking import device_name, mfu, peak_flops
    world = torch.distributed.get_world_size()
    sets = [f"train.zero_stage={stage}", f"train.compile={str(compiled).lower()}",
            f"train.steps={args.warmup + args.steps}", "train.warmup_steps=1", f"log.every={args.warmup}",
            "log.mlflow=false", "eval.every=0", "eval.sample_every=0", "eval.prompts=[]", "checkpoint.every=0",
            "checkpoint.keep=1", *args.set]
    cfg = load_config(args.config, sets)
    t, m = cfg["train"], cfg["model"]
    with torch.device("meta"):  # sizes only
        model = GPT(preset(m["preset"], **{k: v for k, v in m.items() if k not in ("preset", "init_from")},
                           vocab_size=open_shards(data).vocab_size))
    seq = int(t["seq_len"] or model.config.block_size)
    cfg["eval"]["val_tokens"] = t["micro_batch"] * seq  # the run's final evaluation: one batch
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    from training.config import deepspeed_config, resolve_precision
    ds = deepspeed_config(cfg, world, seq, on_cuda)
    # bf16 is DeepSpeed's bf16 (ZeRO 1-3, fp32 grad accumulation) or torch autocast (stage 0)
    res = {"zero_stage": stage, "compile": compiled, "world_size": world,
           "precision": resolve_precision(t["precision"], on_cuda),
           "bf16_path": "bf16+fp32 grad accum" if "bf16" in ds else "torch_autocast" if "torch_autocast" in ds else None,
           **real_loop(cfg, data, work / f"z{stage}-c{int(compiled)}", args.warmup),
           "breakdown": instrumented(cfg, data, args.steps, args.warmup)}
    fpt = model.flops_per_token(seq)
    model.activation_checkpointing = bool(t["activation_checkpointing"])
    dev = torch.device("cuda" if on_cuda else "cpu")
    rows = model.loss_rows(t["micro_batch"], seq, dev)  # on CUDA: sized from the free memory now
    recompute = model.recompute_flops_per_token(t["micro_batch"], seq, dev)
    peak = peak_flops(device_name()) if on_cuda else None
    res.update({"batch_tokens": t["batch_tokens"], "micro_batch": t["micro_batch"], "seq_len": seq,
                "grad_accum": t["batch_tokens"] // (t["micro_batch"] * seq * world),
                "vocab_size": model.config.vocab_size, "padded_vocab": model.config.padded_vocab,
                "params": sum(p.numel() for p in model.parameters()), "flops_per_token": fpt,
                "loss_rows": rows, "loss_chunks": -(-t["micro_batch"] // rows),
                "recompute_flops_per_token": recompute,
                "mfu": mfu(res["tokens_per_s"] / world, fpt, peak),
                "hfu": mfu(res["tokens_per_s"] / world, fpt + recompute, peak),
                "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if on_cuda else None})
    if on_cuda:
        torch.cuda.empty_cache()
    return res


def main() -> None:
    on_cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "training/configs" / ("gpt2-124m.yaml" if on_cuda else "tiny.yaml")))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    ap.add_argument("--steps", type=int, default=4, help="timed optimizer steps (after --warmup)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation, allocator)")
    ap.add_argument("--stages", default="0,1,2", help="ZeRO stages to time")
    ap.add_argument("--compile", default="1" if on_cuda else "0", help="train.compile settings: 0, 1 or 0,1")
    ap.add_argument("--data", help="token shards root (default: random tokens written into a temp dir)")
    ap.add_argument("--vocab", type=int, default=50257 if on_cuda else 8192, help="vocabulary of the random shards")
    ap.add_argument("--threads", type=int, help="torch intra-op threads on CPU")
    ap.add_argument("--loss-chunk", type=int, default=None,
                    help="positions per loss chunk (GPT.loss_chunk; default: sized from memory, 8192 on CPU)")
    ap.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.warmup = max(1, args.warmup)
    with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed's and the trainer's lines: stdout is the JSON
        out = run_all(args, on_cuda)
    if out is not None:
        print(json.dumps(out, indent=1))


def run_all(args, on_cuda: bool) -> dict | None:
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.loss_chunk:
        from training.model import GPT
        GPT.loss_chunk = args.loss_chunk  # the class default: the trainer's model takes it too
    import deepspeed
    from training.data import random_token_shards
    from training.trainer import setup_distributed
    from training.tracking import device_name, peak_flops
    rank, world, _ = setup_distributed()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = Path(args.data) if args.data else work / "shards"
        if not args.data:
            if rank == 0:  # enough windows for every timed step of every rank, plus the final eval
                from training.config import load_config
                t = load_config(args.config, args.set)["train"]
                n = t["batch_tokens"] * (args.warmup + args.steps + 2) * 2
                random_token_shards(data, args.vocab, {"train": n, "val": 4 * t["micro_batch"] * 1025})
            torch.distributed.barrier()
        results = [bench_one(args, data, work, int(s), bool(int(c)), on_cuda)
                   for s in args.stages.split(",") for c in args.compile.split(",")]
    name = device_name()
    out = {"bench": "train", "config": os.path.relpath(args.config, REPO), "overrides": args.set,
           "data": args.data or f"random tokens (vocab {args.vocab})", "device": name, "cuda": on_cuda,
           "world_size": world, "peak_bf16_flops": peak_flops(name) if on_cuda else None,
           "torch": torch.__version__, "deepspeed": deepspeed.__version__, "threads": torch.get_num_threads(),
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "steps": args.steps, "warmup": args.warmup,
           "loss_chunk": args.loss_chunk,
           "results": results}
    return out if rank == 0 else None


if __name__ == "__main__":
    main()
