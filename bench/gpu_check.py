"""The first run on a GPU machine, in one command (`make gpu-check`); prints JSON, last line one object.

1. jobs: each of the five training jobs (pretrain -> SFT -> reward model, GRPO, RLHF) for a few steps
   on small generated data, on the GPU, through the same train() a user's run calls: it must not crash,
   its losses must be finite and its export must load in the inference engine. This is what no CPU
   test can show (tests/test_device_discipline.py checks the placement rules on a fake device).
2. speed, through the project's own benchmarks on the same machine (each a subprocess, its JSON kept):
   - bench/train.py: gpt2-124m pretraining (bf16, compile on), ZeRO-0/1/2 side by side: tokens/s,
     MFU, peak memory and the step-time breakdown (overhead of ZeRO-1/2 over stage 0 = their ratio);
   - bench/sft.py: an SFT step on packed conversations (the segment mask) against a pretraining step
     without one, same model and tokens;
   - bench/engine.py --only rollouts: rollout tokens/s at batch 32 with and without python tool calls.
On a machine without CUDA it says so and exits 0 without running anything (CI never has a GPU);
--cpu-smoke runs part 1 on the CPU with tiny settings, to check this script itself.

    python bench/gpu_check.py [--skip-speed] [--pretrain-steps 30] [--cpu-smoke]

Sizing (one H100, ~8 minutes in all): the jobs take ~1 min (tiny model, start-up dominated); gpt2-124m
steps of 64k tokens (4 micro-batches of 16 x 1024) take ~0.15-0.3 s, so 3 stages x (30 steps + compile
~60 s) ~ 4 min; SFT and rollouts ~1 min each.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))   # engine_fixtures: the tiny English text the tokenizer learns


def small_data(root: Path) -> dict:
    """Tokenizer, token shards, an SFT mixture and preference pairs, all generated here in seconds."""
    import random

    from engine_fixtures import tiny_texts
    from pipelines.shards import write_token_shards
    from pipelines.tokenizer import load_tokenizer, train_tokenizer
    from training.conversations.dataset import write_conversations
    from training.rl.preferences import write_pairs
    from training.tasks.toy import warmup_conversations
    texts = tiny_texts()
    tok_dir = train_tokenizer(texts, vocab_size=512, out_dir=root / "tokenizer")
    docs = [(f"d{i}", t) for i, t in enumerate(texts * 4)]
    write_token_shards(docs, root / "shards", load_tokenizer(tok_dir), {"val_fraction": 0.1, "shard_tokens": 50_000})
    import shutil
    shutil.copytree(tok_dir, root / "shards" / "tokenizer")
    rows = warmup_conversations(600, seed=0)
    write_conversations([{**r, "split": "val" if i % 10 == 0 else "train"} for i, r in enumerate(rows)],
                        root / "sft")
    rng = random.Random(0)
    pairs = [{"id": f"p{i}", "prompt": json.dumps([{"role": "user", "content": f"Repeat {n}"}]),
              "chosen": f"Answer: {n}", "rejected": rng.choice(["No.", f"{n + 1}", "I cannot."]),
              "source": "gpu-check", "split": "heldout" if i % 5 == 0 else "train"}
             for i, n in enumerate(rng.randint(10, 99) for _ in range(80))]
    write_pairs(pairs, root / "pairs")
    return {"shards": root / "shards", "sft": root / "sft", "pairs": root / "pairs"}


def run_jobs(work: Path) -> dict:
    """Each job for a few steps: finite losses, an export the engine loads, seconds taken."""
    import torch

    from training.config import load_config
    from training.engine.engine import Engine
    data = small_data(work / "data")
    common = ["log.mlflow=false", "checkpoint.every=0", "eval.sample_every=0", "eval.prompts=[]"]
    results: dict = {}

    def job(name: str, fn) -> Path | None:
        t0 = time.perf_counter()
        try:
            summary = fn()
            losses = [h["train/loss"] for h in summary["history"] if h.get("train/loss") is not None]
            export = Path(summary["export"])
            Engine.load(export, tools={}) if (export / "config.json").exists() and name != "rm" else None
            ok = bool(losses) and all(math.isfinite(v) for v in losses)
            results[name] = {"ok": ok, "steps": summary["step"], "losses": [round(v, 4) for v in losses],
                             "device": summary.get("device"), "seconds": round(time.perf_counter() - t0, 1)}
            return export
        except Exception as e:   # reported, and the next job still runs: one run shows every failure
            results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:2000],
                             "seconds": round(time.perf_counter() - t0, 1)}
            return None

    from training import pretrain, sft
    from training.rl import job as rl_job, reward_model, rlhf
    base = job("pretrain", lambda: pretrain.train(load_config(None, common + [
        "model.n_layer=2", "model.n_embd=128", "model.n_head=4", "model.block_size=128", "train.steps=6",
        "train.micro_batch=8", "train.batch_tokens=2048", "train.warmup_steps=1", "eval.every=6",
        "eval.val_tokens=2048"]), data["shards"], work / "pretrain"))
    if base is None:
        return results
    chat = job("sft", lambda: sft.train(load_config(None, common + [
        f"model.init_from={base}", "train.steps=6", "train.micro_batch=8", "train.batch_tokens=2048",
        "train.warmup_steps=1", "eval.every=6", "eval.val_tokens=2048"], job="sft"), data["sft"], work / "sft"))
    if chat is None:
        return results
    small_rl = common + [f"model.init_from={chat}", "train.steps=3", "train.micro_batch=8", "rl.prompts_per_step=4",
                         "rl.group_size=4", "rl.max_tokens=16", "rl.tools=false", "rl.heldout_problems=4",
                         "rl.eval_samples=2", "eval.every=3"]
    job("rl", lambda: rl_job.train(load_config("training/configs/rl.yaml", small_rl, job="rl"), "toy", work / "rl"))
    rm = job("rm", lambda: reward_model.train(load_config("training/configs/rlhf.yaml", common + [
        f"reward_model.init_from={chat}", "reward_model.steps=4", "reward_model.micro_batch=8",
        "reward_model.batch_pairs=8", "reward_model.eval_every=4"], job="rm"), data["pairs"], work / "rm"))
    if rm is not None:
        job("rlhf", lambda: rlhf.train(load_config("training/configs/rlhf.yaml", small_rl + ["rl.kl_max=null"],
                                                   job="rlhf"), data["pairs"], rm, work / "rlhf"))
    if torch.cuda.is_available():
        results["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return results


def bench(script: str, *args: str, timeout: int = 400) -> dict:
    """A bench script's JSON (the last top-level object it prints), or its error."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, str(REPO / "bench" / script), *args], capture_output=True, text=True,
                       timeout=timeout, cwd=REPO)
    out = p.stdout
    start = out.rfind("\n{")
    try:
        result = json.loads(out[start + 1 if start >= 0 else 0:])
    except ValueError:
        result = {"error": f"exit {p.returncode}: " + (p.stderr or out)[-1500:]}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-speed", action="store_true", help="only the five jobs")
    ap.add_argument("--pretrain-steps", type=int, default=30)
    ap.add_argument("--cpu-smoke", action="store_true", help="run the five jobs on the CPU (checks this script)")
    args = ap.parse_args()
    import torch
    if not torch.cuda.is_available() and not args.cpu_smoke:
        print(json.dumps({"gpu_check": "skipped", "reason": "no CUDA device: run `make gpu-check` on a GPU machine"}))
        return 0
    os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///" + tempfile.mkdtemp() + "/mlflow.db")
    out: dict = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                 "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="crawl2chat-gpu-check-") as work:
        out["jobs"] = run_jobs(Path(work))
    if torch.cuda.is_available() and not args.skip_speed:
        out["pretrain_gpt2_124m"] = bench("train.py", "--stages", "0,1,2", "--compile", "1", "--steps",
                                          str(args.pretrain_steps), "--warmup", "5",
                                          "--set", "train.batch_tokens=65536")
        out["sft_packed_vs_pretrain"] = bench("sft.py", "--steps", "10", "--threads", "1")
        out["rollouts"] = bench("engine.py", "--only", "rollouts", "--device", "cuda")
    out["ok"] = all(j.get("ok") for k, j in out["jobs"].items() if isinstance(j, dict))
    print(json.dumps(out, indent=1))
    print(json.dumps({"gpu_check_ok": out["ok"], "jobs": {k: v.get("ok") for k, v in out["jobs"].items()
                                                          if isinstance(v, dict)}}))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
