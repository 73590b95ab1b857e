"""RLHF's policy stage: GRPO against the reward model, on a KL leash to the starting chat model.

    deepspeed --module training.rl.rlhf --config training/configs/rlhf.yaml \
        --data lake/post_training/preference_pairs --reward-model lake/models/rm/run1/export \
        --init-from crawl2chat-chat@candidate --out lake/models/rlhf/run1

The same loop as RL on verifiable tasks (training/rl/job.py): prompts are the preference pairs'
prompts (train split; the held-out split's for evaluation), the reward is the reward model's score
of prompt + reply, and every sampled token pays rl.kl_coef x k3 (its KL estimate to the frozen
starting model). A reward model is only a model of the raters: optimised long enough the policy
finds replies it overrates (Goodhart), so the run is short and stops early when the per-token KL
passes rl.kl_max or the held-out reward-model score has not improved for rl.patience evaluations.
The export is the last evaluated policy whose held-out KL is within rl.kl_max: the per-step KL lags
the weights and sees other prompts, so a run stopped on it could still end past the bound.
Curves in MLflow: rl/reward (train prompts), heldout/reward, rl/kl, heldout/kl (the KL of the
current weights on held-out prompts), entropy, reply length.
"""
from __future__ import annotations

import json

from pipelines.errors import ConfigError, InputError
from training.config import load_config
from training.rl.job import GRPO, grpo_setup
from training.job_cli import cli_main, job_arg_parser, job_overrides
from training.trainer import Job, build_model, resolve_export, run, start


def prompt_items(pairs: list[dict]) -> list:
    """One task item per distinct prompt (no checker: the reward model scores)."""
    from training.tasks import TaskItem
    seen, items = set(), []
    for p in pairs:
        key = json.dumps(p["prompt"], sort_keys=True)
        if key not in seen:
            seen.add(key)
            items.append(TaskItem(p["id"], p["prompt"], p["chosen"], lambda text: (False, None)))
    return items


def reward_model_reward(rm, device, max_len: int):
    """reward_fn for RolloutSource / GRPO.evaluate: the reward model's score of prompt + reply."""
    from training.evals.core import reply_parts, reply_text
    from training.rl.reward_model import score
    from training.rl.rollout import render_prompts

    def reward(items, completions, tokenizer):
        prompts = render_prompts(tokenizer, items)
        rows = [(p + c.tokens)[:max_len] for p, c in zip(prompts, completions)]
        return score(rm, rows, device), [reply_text(reply_parts(tokenizer, c)) for c in completions]
    return reward


def train(cfg: dict, data, reward_model_dir, out, resume: bool = False) -> dict:
    import torch

    from pipelines.tokenizer import load_tokenizer
    from training.rl.preferences import read_pairs
    from training.rl.reward_model import load_reward_model
    d = start()
    rl = cfg["rl"]
    if not cfg["model"].get("init_from"):
        raise ConfigError("model.init_from: RLHF starts from a chat model (export dir or NAME@ALIAS)")
    if not reward_model_dir:
        raise ConfigError("--reward-model: the reward model's export directory (or NAME@ALIAS) is required")
    export = resolve_export(cfg["model"]["init_from"])
    tokenizer = load_tokenizer(export)
    model = build_model(cfg, init_dir=export, device=d.device)
    rm = load_reward_model(resolve_export(reward_model_dir), device=d.device,
                           dtype=torch.bfloat16 if d.on_cuda else torch.float32).requires_grad_(False)
    if rm.config.vocab_size != model.config.vocab_size:
        raise InputError(f"{reward_model_dir}: the reward model's vocabulary differs from the policy's")
    items = prompt_items(read_pairs(data, "train"))[:rl["train_problems"] or None]
    heldout = prompt_items(read_pairs(data, "heldout"))[:rl["heldout_problems"] or None]
    reward_fn = reward_model_reward(rm, d.device, rm.config.block_size)
    source, gas = grpo_setup(cfg, d, model, export, tokenizer, items, reward_fn)
    grpo = GRPO(source, rl, heldout, int(cfg["train"]["seed"]), verifiable=False)
    start_figures = grpo.evaluate()
    report = grpo.report
    report |= {"train_prompts": len(items), "heldout_prompts": len(heldout), "init_export": str(export),
              "reward_model": str(reward_model_dir), "kl_max": rl["kl_max"],
              **{f"start_{k.replace('/', '_')}": v for k, v in start_figures.items()}}
    if d.rank == 0:
        print(f"[rlhf] {len(items)} train / {len(heldout)} held-out prompts; kl_coef {rl['kl_coef']}, "
              f"kl_max {rl['kl_max']}; start {json.dumps({k: round(v, 4) for k, v in start_figures.items()})}")
    job = Job(stage="rlhf", seq_len=model.config.block_size, batches=source, loss=grpo.loss, count=grpo.count,
              evaluate=grpo.evaluate, after_step=grpo.after_step, should_stop=grpo.should_stop,
              export_weights=grpo.export_weights, tokenizer=tokenizer, tokenizer_dir=export, params={"data": str(data), "reward_model": str(reward_model_dir)},
              report=report)
    return run(cfg, job, model, out, resume=resume)


def main(argv: list[str] | None = None) -> dict:
    ap = job_arg_parser(__doc__, data_help="preference pairs dataset (its prompts; pairs.parquet)")
    ap.add_argument("--reward-model", required=True, help="the reward model's export dir or NAME@ALIAS")
    ap.add_argument("--init-from", help="shorthand for --set model.init_from=SOURCE (export dir or NAME@ALIAS)")
    args = ap.parse_args(argv)
    overrides = job_overrides(args) + ([f"model.init_from={args.init_from}"] if args.init_from else [])
    cfg = load_config(args.config, overrides, job="rlhf")
    return train(cfg, args.data, args.reward_model, out=args.out, resume=args.resume)


if __name__ == "__main__":
    cli_main(main)
