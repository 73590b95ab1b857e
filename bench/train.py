"""Training throughput through the real DeepSpeed engine; prints JSON.

CPU:  the `tiny` preset (context 256), fp32, ZeRO-0: tokens/s.
CUDA: GPT-2 124M, context 1024, bf16: tokens/s and MFU for ZeRO-0, and the step time of ZeRO-1 and
      ZeRO-2 against stage 0 (overhead %). Single process unless launched with `deepspeed`.

    python bench/train.py [--steps 5] [--warmup 2] [--stages 0,1,2] [--micro-batch N] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def bench_stage(stage: int, preset_name: str, seq_len: int, micro_batch: int, vocab: int,
                steps: int, warmup: int, on_cuda: bool) -> dict:
    import deepspeed
    from deepspeed.accelerator import get_accelerator
    from training.config import deepspeed_config, load_config
    from training.model import GPT, preset
    from training.trainer import build_optimizer
    from training.tracking import device_name, mfu, peak_flops

    world = torch.distributed.get_world_size()
    cfg = load_config(None, [f"train.zero_stage={stage}", f"train.micro_batch={micro_batch}",
                             f"train.batch_tokens={micro_batch * seq_len * world}", "train.precision=auto"])
    torch.manual_seed(0)
    model = GPT(preset(preset_name, vocab_size=vocab, block_size=seq_len))
    fpt = model.flops_per_token(seq_len)
    ds_cfg = deepspeed_config(cfg, world, seq_len, on_cuda)
    engine, *_ = deepspeed.initialize(model=model, optimizer=build_optimizer(model, cfg["train"], on_cuda),
                                      config=ds_cfg)
    device = engine.device
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, vocab, (micro_batch, seq_len + 1), generator=g).to(device)
    times = []
    for i in range(warmup + steps):
        get_accelerator().synchronize()
        t0 = time.perf_counter()
        loss = engine(x[:, :-1], x[:, 1:])
        engine.backward(loss)
        engine.step()
        get_accelerator().synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    step_s = sorted(times)[len(times) // 2]  # median: the shared box is noisy
    tok_s = micro_batch * seq_len * world / step_s
    name = device_name()
    res = {"zero_stage": stage, "precision": "bf16" if "bf16" in ds_cfg else "fp32", "world_size": world,
           "preset": preset_name, "seq_len": seq_len, "micro_batch": micro_batch, "vocab_size": vocab,
           "params": sum(p.numel() for p in model.parameters()), "flops_per_token": fpt,
           "step_ms": round(1000 * step_s, 2), "tokens_per_s": round(tok_s, 1),
           "mfu": mfu(tok_s / world, fpt, peak_flops(name) if on_cuda else None), "final_loss": loss.item()}
    del engine, model
    if on_cuda:
        torch.cuda.empty_cache()
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--stages", help="ZeRO stages to time (default: 0 on CPU, 0,1,2 on CUDA)")
    ap.add_argument("--micro-batch", type=int)
    ap.add_argument("--threads", type=int, help="torch intra-op threads on CPU")
    ap.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    import logging
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    from training.trainer import setup_distributed
    from training.tracking import device_name, peak_flops
    import deepspeed

    on_cuda = torch.cuda.is_available()
    if args.threads:
        torch.set_num_threads(args.threads)
    rank, world, _ = setup_distributed()
    if on_cuda:
        preset_name, seq_len, mb, vocab = "gpt2-124m", 1024, args.micro_batch or 16, 50304
    else:
        preset_name, seq_len, mb, vocab = "tiny", 256, args.micro_batch or 8, 8192
    stages = [int(s) for s in (args.stages or ("0,1,2" if on_cuda else "0")).split(",")]
    results = [bench_stage(s, preset_name, seq_len, mb, vocab, args.steps, args.warmup, on_cuda) for s in stages]
    base = next((r for r in results if r["zero_stage"] == 0), None)
    if base:
        for r in results:
            r["overhead_vs_stage0_pct"] = round(100 * (r["step_ms"] / base["step_ms"] - 1), 1)
    name = device_name()
    out = {"bench": "train", "device": name, "cuda": on_cuda, "peak_bf16_flops": peak_flops(name) if on_cuda else None,
           "torch": torch.__version__, "deepspeed": deepspeed.__version__, "threads": torch.get_num_threads(),
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "results": results}
    if rank == 0:
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
