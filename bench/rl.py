"""Where an RL step's time goes: rollout (sampling through the engine) vs training (forward + backward
+ optimizer), through the real GRPO job (training/rl/job.py on the shared trainer); prints JSON.

The model is a fresh init of --preset (or --export, a chat export dir / NAME@ALIAS) with a 4,096-token
tokenizer trained on a few KB of English; the task's prompts are real (rl.task), the replies run to
--max-tokens (a random model rarely stops), so every step samples prompts x group x max_tokens tokens.
Reported per step (median over the steps after --warmup): rollout tokens/s (generated tokens per
second of sampling, tools off), training tokens/s (sequence positions per second of the optimizer
step), step tokens/s and MFU as the job logs them (train/tokens_per_s, train/mfu: positions and FLOPs
the step processed, rollouts included; MFU on CUDA only), seconds of each and the rollout share.

    python bench/rl.py [--preset tiny] [--steps 6] [--warmup 1] [--prompts 8] [--group 8] [--max-tokens 64]
    python bench/rl.py --preset gpt2-124m --prompts 16 --group 16 --max-tokens 256 --micro-batch 64   # GPU
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--export", help="start from this chat export / NAME@ALIAS instead of a fresh init")
    ap.add_argument("--task", default="arithmetic")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from engine_fixtures import build_tokenizer
    from training.config import load_config
    from training.export import export_state
    from training.model import GPT, preset
    from training.rl.job import train
    with tempfile.TemporaryDirectory() as tmp:
        export = args.export
        if export is None:
            from pipelines.tokenizer import load_tokenizer
            tok_dir = build_tokenizer(Path(tmp) / "tok", vocab_size=4096)
            torch.manual_seed(0)
            model = GPT(preset(args.preset, vocab_size=load_tokenizer(tok_dir).vocab_size))
            export = export_state(model.state_dict(), model.config, Path(tmp) / "export", tok_dir)
        cfg = load_config(None, [f"model.init_from={export}", f"train.steps={args.steps}", "log.mlflow=false",
                                 "checkpoint.every=0", "eval.every=0", f"train.micro_batch={args.micro_batch}",
                                 f"rl.task={args.task}", f"rl.prompts_per_step={args.prompts}",
                                 f"rl.group_size={args.group}", f"rl.max_tokens={args.max_tokens}", "rl.tools=false",
                                 "rl.heldout_problems=1", "rl.eval_samples=1", "rl.reference=false"], job="rl")
        s = train(cfg, args.task, Path(tmp) / "run")
    steps = s["history"][args.warmup:] or s["history"]

    def med(key):
        return statistics.median(h[key] for h in steps)
    rollout_s, train_s = med("rl/rollout_s"), med("rl/train_s")
    print(json.dumps({
        "device": s["device"], "preset": args.preset if not args.export else str(args.export), "threads": args.threads,
        "replies_per_step": args.prompts * args.group, "max_tokens": args.max_tokens,
        "completion_tokens_per_reply": round(med("rl/completion_tokens"), 1),
        "rollout_tokens_per_s": round(med("rl/rollout_tokens_per_s"), 1),
        "train_tokens_per_s": round(med("rl/train_tokens_per_s"), 1),
        "step_tokens_per_s": round(med("train/tokens_per_s"), 1),
        "step_mfu": round(med("train/mfu"), 4) if all(h.get("train/mfu") is not None for h in steps) else None,
        "rollout_s": round(rollout_s, 3), "train_s": round(train_s, 3),
        "rollout_share": round(rollout_s / (rollout_s + train_s), 3), "steps_measured": len(steps)}, indent=1))


if __name__ == "__main__":
    main()
