"""The reward model: the chat model with a scalar head, trained on preference pairs to stand in for
the person who ranked them (RLHF's first stage).

    deepspeed --module training.rl.reward_model --config training/configs/rlhf.yaml \
        --data lake/post_training/preference_pairs --init-from crawl2chat-chat@candidate --out lake/models/rm/run1

RewardModel(GPT) reads the hidden state (after the final norm) at a sequence's last real token and
maps it to one number. Loss per pair: -log σ(r_chosen - r_rejected) (Bradley-Terry), summed and
divided by the step's global pair count by the shared trainer (training/trainer.py: same DeepSpeed
engine, checkpoints, resume, MLflow, Pipes); the `reward_model:` section replaces train.steps, lr,
micro_batch (pairs), warmup and eval.every. Evaluated on the held-out pairs: pairwise accuracy (share
of pairs where the chosen reply scores higher; 0.5 is chance), loss, mean margin. Exported like every
model (model.safetensors with the head's value_head.* tensors, config.json marked reward_model).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipelines.errors import ConfigError, InputError
from training.config import load_config
from training.model import GPT, GPTConfig
from training.job_cli import cli_main, job_arg_parser, job_overrides
from training.trainer import Job, all_reduce_sum, build_model, resolve_export, run, start


class RewardModel(GPT):
    """A GPT whose output is one score per sequence: value_head(hidden state at index `last`)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__(cfg)
        self.value_head = nn.Linear(cfg.n_embd, 1)
        nn.init.normal_(self.value_head.weight, std=0.02)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, idx: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """idx (B, T) right-padded rows, last (B,) index of each row's last real token -> scores (B,)."""
        hidden = []   # the final norm's output, taken from GPT's own forward (no second copy of it)
        hook = self.ln_f.register_forward_hook(lambda m, i, o: hidden.append(o))
        try:
            super().forward(idx)
        finally:
            hook.remove()
        h = hidden[-1][torch.arange(idx.shape[0], device=idx.device), last]
        return self.value_head(h).squeeze(-1).float()

    @classmethod
    def from_gpt(cls, gpt: GPT) -> "RewardModel":
        rm = cls(gpt.config)
        missing, unexpected = rm.load_state_dict(gpt.state_dict(), strict=False)
        if unexpected or set(missing) - {"value_head.weight", "value_head.bias"}:
            raise ValueError(f"cannot turn the GPT into a reward model: missing {missing}, unexpected {unexpected}")
        p = next(gpt.parameters())
        return rm.to(device=p.device, dtype=p.dtype)   # where build_model put the GPT


def load_reward_model(export_dir: str | Path, device="cpu", dtype: torch.dtype | None = None) -> RewardModel:
    from safetensors.torch import load_file
    export_dir = Path(export_dir)
    meta = json.loads((export_dir / "config.json").read_text())
    if not meta.get("reward_model"):
        raise InputError(f"{export_dir}: not a reward model export (config.json has no reward_model: true)")
    cfg = GPTConfig.from_dict(meta["model"])
    state = load_file(str(export_dir / "model.safetensors"))
    rm = RewardModel(cfg)
    missing, unexpected = rm.load_state_dict(state, strict=False)
    if set(missing) - ({"lm_head.weight"} if cfg.tie_embeddings else set()) or unexpected:
        raise InputError(f"{export_dir}: missing {missing}, unexpected {unexpected}")
    return rm.to(device=device, dtype=dtype or next(iter(state.values())).dtype).eval()


# ---- sequences -------------------------------------------------------------------------------------

def reply_ids(tokenizer, messages: list[dict], reply: str, max_len: int) -> list[int]:
    """What the policy's rollout looks like: the prompt, the reply's tokens, <|im_end|>; cut at max_len."""
    from training.conversations.render import render_for_completion
    prompt = render_for_completion(tokenizer, messages)
    return (prompt + tokenizer.encode(reply) + [tokenizer.special("im_end")])[:max_len]


def pad_rows(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(idx right-padded with 0, last real index) of token rows."""
    width = max(len(r) for r in rows)
    idx = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        idx[i, :len(r)] = torch.tensor(r)
    return idx, torch.tensor([len(r) - 1 for r in rows])


def encode_pairs(tokenizer, pairs: list[dict], max_len: int) -> list[tuple[list[int], list[int]]]:
    return [(reply_ids(tokenizer, p["prompt"], p["chosen"], max_len),
             reply_ids(tokenizer, p["prompt"], p["rejected"], max_len)) for p in pairs]


def pair_batch(encoded: list[tuple[list[int], list[int]]]) -> dict:
    """A micro-batch: the B chosen rows, then the B rejected rows."""
    idx, last = pad_rows([c for c, _ in encoded] + [r for _, r in encoded])
    return {"x": idx, "last": last}


def pair_loss(engine, mb: dict) -> tuple[torch.Tensor, torch.Tensor]:
    r = engine(mb["x"], mb["last"])
    b = r.shape[0] // 2
    return -F.logsigmoid(r[:b] - r[b:]).sum(), torch.tensor(b, device=r.device)   # read with the loss


class PairThroughput:
    """pair_loss, counting the positions each micro-batch puts through the model, and an after_step
    that turns them into the step's true train/tokens_per_s and train/mfu (tracking.processed_throughput):
    pairs are padded to their micro-batch's longest row, not to reward_model.max_len. The FLOPs per
    position are the GPT's without its vocabulary head, which runs on one position per row only."""

    def __init__(self, model: "RewardModel", device, world: int):
        from training.tracking import device_name, peak_flops
        c = model.config
        self.head = 6.0 * c.padded_vocab * c.n_embd
        self.fpt, self.device, self.world = model.flops_per_token, torch.device(device), world
        self.peak = peak_flops(device_name()) if self.device.type == "cuda" else None
        self.positions = self.flops = 0.0

    def loss(self, engine, mb: dict) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = mb["x"].shape
        self.positions += B * T
        self.flops += B * T * (self.fpt(T) - self.head)
        return pair_loss(engine, mb)

    def after_step(self, rec: dict) -> tuple[dict, dict]:
        """Collective (sums over ranks); the trainer then reads figures every step, a small cost here."""
        from training.tracking import processed_throughput
        positions, flops = all_reduce_sum([self.positions, self.flops], self.device)
        self.positions = self.flops = 0.0
        figures = processed_throughput(positions, flops, rec["train/step_ms"] / 1000, self.world, self.peak)
        return {k: v for k, v in figures.items() if v is not None}, {}


class PairLoader:
    """Micro-batches of `micro_batch` pairs: a per-epoch permutation (seed, epoch) dealt round-robin
    to the ranks; (epoch, pos) is the state, so a resumed run sees the same pairs."""

    def __init__(self, encoded: list, micro_batch: int, rank: int, world: int, seed: int):
        if len(encoded) // world < micro_batch:
            raise InputError(f"{len(encoded)} training pairs are fewer than one micro-batch of {micro_batch} per "
                             f"rank (world {world}): add pairs or lower reward_model.micro_batch")
        self.encoded, self.micro_batch, self.rank, self.world, self.seed = encoded, micro_batch, rank, world, seed
        self.epoch, self.pos = 0, 0

    def next_batch(self) -> dict:
        per_step = self.micro_batch * self.world
        if self.pos + per_step > len(self.encoded):
            self.epoch, self.pos = self.epoch + 1, 0
        order = list(range(len(self.encoded)))
        random.Random(f"rm-pairs:{self.seed}:{self.epoch}").shuffle(order)
        mine = order[self.pos:self.pos + per_step][self.rank::self.world]
        self.pos += per_step
        return pair_batch([self.encoded[i] for i in mine])

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = state["epoch"], state["pos"]


@torch.no_grad()
def score(rm, rows: list[list[int]], device, batch: int = 32) -> list[float]:
    """Reward-model scores of token rows (no gradient)."""
    out = []
    for s in range(0, len(rows), batch):
        idx, last = pad_rows(rows[s:s + batch])
        out += rm(idx.to(device), last.to(device)).tolist()
    return out


@torch.no_grad()
def pairwise_accuracy(rm, encoded: list, device, batch: int = 32) -> dict:
    """Held-out pairs: accuracy (chosen scored above rejected), mean loss, mean margin."""
    if not encoded:
        return {}
    rc = torch.tensor(score(rm, [c for c, _ in encoded], device, batch))
    rr = torch.tensor(score(rm, [r for _, r in encoded], device, batch))
    margin = rc - rr
    return {"val/loss": float(-F.logsigmoid(margin).mean()), "rm/accuracy": float((margin > 0).float().mean()),
            "rm/margin": float(margin.mean()), "rm/heldout_pairs": len(encoded)}


# ---- the job ---------------------------------------------------------------------------------------

def rm_train_config(cfg: dict) -> dict:
    """The trainer config of the reward-model stage: `reward_model:` in place of the policy's values."""
    r, t = cfg["reward_model"], cfg["train"]
    if int(r["batch_pairs"]) % int(r["micro_batch"]):
        raise ConfigError(f"reward_model.batch_pairs {r['batch_pairs']} must be a multiple of "
                          f"reward_model.micro_batch {r['micro_batch']}")
    cfg["train"] = {**t, "steps": r["steps"], "lr": r["lr"], "micro_batch": r["micro_batch"],
                    "warmup_steps": r["warmup_steps"], "min_lr_ratio": 0.1, "batch_tokens": None}
    cfg["eval"] = {**cfg["eval"], "every": r["eval_every"], "sample_every": 0}
    if r["init_from"]:
        cfg["model"] = {**cfg["model"], "init_from": r["init_from"]}
    return cfg


def train(cfg: dict, data, out, resume: bool = False) -> dict:
    from pipelines.tokenizer import load_tokenizer
    from training.rl.preferences import read_pairs
    d = start()
    cfg = rm_train_config(cfg)
    if not cfg["model"].get("init_from"):
        raise ConfigError("model.init_from: the reward model starts from a chat model (export dir or NAME@ALIAS)")
    export = resolve_export(cfg["model"]["init_from"])
    tokenizer = load_tokenizer(export)
    model = RewardModel.from_gpt(build_model(cfg, init_dir=export, device=d.device))
    max_len = int(cfg["reward_model"]["max_len"] or model.config.block_size)
    train_pairs, held = encode_pairs(tokenizer, read_pairs(data, "train"), max_len), \
        encode_pairs(tokenizer, read_pairs(data, "heldout"), max_len)
    if not train_pairs:
        raise InputError(f"{data}: no train pairs")
    r = cfg["reward_model"]
    cfg["train"]["batch_tokens"] = int(r["batch_pairs"]) * max_len   # DeepSpeed's batch derivation (pairs x len)
    loader = PairLoader(train_pairs, int(r["micro_batch"]), d.rank, d.world, seed=int(cfg["train"]["seed"]))
    start_figures = pairwise_accuracy(model, held, d.device)
    throughput = PairThroughput(model, d.device, d.world)
    job = Job(stage="rm", seq_len=max_len, batches=loader, loss=throughput.loss, count=lambda mb: mb["x"].shape[0] // 2,
              after_step=throughput.after_step,
              evaluate=lambda engine: pairwise_accuracy(engine.module, held, d.device),
              tokenizer_dir=export, params={"data": str(data)},
              report={"reward_model": True, "train_pairs": len(train_pairs), "heldout_pairs": len(held),
                      "init_export": str(export),
                      **{f"start_{k.replace('/', '_')}": v for k, v in start_figures.items()}})
    if d.rank == 0:
        print(f"[rm] {len(train_pairs)} train / {len(held)} held-out pairs; start {start_figures}")
    return run(cfg, job, model, out, resume=resume)


def main(argv: list[str] | None = None) -> dict:
    ap = job_arg_parser(__doc__, data_help="preference pairs dataset (pairs.parquet: prompt, chosen, rejected, split)")
    ap.add_argument("--init-from", help="shorthand for --set reward_model.init_from=SOURCE")
    args = ap.parse_args(argv)
    overrides = job_overrides(args) + ([f"reward_model.init_from={args.init_from}"] if args.init_from else []) \
        + ([f"reward_model.steps={args.steps}"] if args.steps is not None else [])
    cfg = load_config(args.config, overrides, job="rm")
    return train(cfg, args.data, args.out, resume=args.resume)


if __name__ == "__main__":
    cli_main(main)
