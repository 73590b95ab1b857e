"""Pretrain the GPT on token shards with DeepSpeed (ZeRO 0-3), checkpointing, MLflow and Dagster Pipes.

    deepspeed --num_gpus 8 -m training.pretrain --config training/configs/gpt2-124m.yaml \
        --data lake/tokens/v1 --out lake/models/base/run1 [--resume] [--set train.zero_stage=2]
    python -m training.pretrain --config training/configs/tiny.yaml --data <shards> --out <dir>   # 1 process

A job of the shared trainer (training/trainer.py: engine, schedule, checkpoints, resume, export, MLflow,
Pipes); this module only supplies the data: windows of seq_len + 1 tokens from the shards, each rank
a disjoint slice (training/data.py), every target trained, validation loss and bits per byte.
Single-process runs get MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK defaults and gloo on CPU.
"""
from __future__ import annotations

from pathlib import Path

from training.config import load_config
from training.data import WindowLoader, find_tokenizer_dir, open_shards, val_batches
from training.job_cli import cli_main, job_arg_parser, job_overrides
from training.lm_job import evaluate_lm
from training.trainer import Job, build_model, lr_lambda, run, start  # noqa: F401 - lr_lambda: for tests/test_model.py


def train(cfg: dict, data: str | Path, out: str | Path, resume: bool = False,
          tokenizer_dir: str | Path | None = None) -> dict:
    """Pretraining as a job of the shared trainer: windows of the token shards, every target trained."""
    d = start()
    t, ev = cfg["train"], cfg["eval"]
    train_shards, val_shards = open_shards(data, "train"), open_shards(data, "val")
    tok_dir = find_tokenizer_dir(data, tokenizer_dir)
    tokenizer = token_bytes = None
    if tok_dir is not None:
        from pipelines.tokenizer import load_tokenizer
        tokenizer = load_tokenizer(tok_dir)
        token_bytes = tokenizer.token_bytes
    model = build_model(cfg, vocab_size=train_shards.vocab_size, device=d.device)
    seq_len = int(t["seq_len"] or model.config.block_size)
    loader = WindowLoader(train_shards, seq_len, t["micro_batch"], d.rank, d.world, seed=t["seed"], shuffle=t["shuffle"])
    val = val_batches(val_shards, seq_len, ev["val_tokens"], d.rank, d.world, t["micro_batch"])
    prompts = [(p, [tokenizer.bos_id] + tokenizer.encode(p)) for p in ev["prompts"]] if tokenizer else []
    job = Job(stage="pretrain", seq_len=seq_len, batches=loader,
              evaluate=lambda engine: evaluate_lm(engine, val, d.device, token_bytes),
              tokenizer=tokenizer, tokenizer_dir=tok_dir, sample_prompts=prompts, params={"data": str(data)})
    return run(cfg, job, model, out, resume=resume)


def main(argv: list[str] | None = None) -> dict:
    ap = job_arg_parser(__doc__, data_help="token shards root (manifest.json, train/, val/)")
    ap.add_argument("--tokenizer", help="tokenizer directory (default: from the shards root)")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, job_overrides(args), job="pretrain")
    return train(cfg, args.data, args.out, resume=args.resume, tokenizer_dir=args.tokenizer)


if __name__ == "__main__":
    cli_main(main)  # a bad config or damaged shards: one line, not a traceback per rank
