"""Rollouts: the policy's current weights sample G replies per prompt through the inference engine
(KV cache, per-row seeds, tools executed inside with forced outputs marked), a reward function scores
them, and the replies become training micro-batches whose targets are the sampled tokens only.

The engine holds its own copy of the model; `sync_weights` copies the policy's parameters into it
in memory before each rollout batch (no disk round-trip), so what samples is exactly what trains.
Under ZeRO 0-2 every rank holds the full parameters and the copy is a plain state-dict load. ZeRO-3
shards them: it would need a `deepspeed.zero.GatheredParameters` around the copy (the exporter's
gather_state_dict), which the RL jobs do not do; they refuse train.zero_stage 3.
"""
from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from training.evals.core import reply_parts, reply_text, row_seed
from training.rl.grpo import group_advantages, zero_variance_fraction
from training.trainer import IGNORE


@torch.no_grad()
def sync_weights(dst: torch.nn.Module, src: torch.nn.Module) -> None:
    """Copy src's parameters into dst (cast to dst's dtype and device): the engine samples with the
    weights the optimizer just wrote."""
    dst.load_state_dict(src.state_dict())


@contextlib.contextmanager
def tempered(model: torch.nn.Module, temperature: float, on_logits: Callable | None = None):
    """Within the block, the model's head returns logits / temperature: its loss and log-probs are
    those of the distribution the rollouts sampled from (softmax(logits / T)), so the policy gradient
    and the KL are unbiased at any T. on_logits(tempered logits) sees each chunk the loss computes
    (GPT.chunked_loss runs the head a few rows at a time), e.g. for the entropy."""
    head = model.lm_head

    def hook(module, args, out):
        out = out / temperature if temperature != 1.0 else out
        if on_logits is not None:
            on_logits(out)
        return out
    handle = head.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def token_logprobs(model, x: torch.Tensor, y: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log pi(y_t | x_<=t) per position (B, T) under softmax(logits / temperature), 0 at IGNORE
    targets: the training forward's own loss."""
    with tempered(model, temperature):
        return -model(x, y, reduction="none").float()


def rollout_params(rl: dict):
    """The sampling of training rollouts: the policy's own distribution at rl.temperature, no
    truncation (the loss scores log-probs under softmax(logits / T); top-k / top-p would sample from
    another distribution than the one whose gradient is taken, and are refused in grpo_setup)."""
    from training.engine.engine import SamplingParams
    return SamplingParams(max_tokens=int(rl["max_tokens"]), temperature=float(rl["temperature"]))


def verifiable_reward(items, completions, tokenizer) -> tuple[list[float], list[str]]:
    """1 for a reply that ends its turn (<|im_end|>) and that the task's checker accepts, else 0; and
    each reply's words (tool calls and outputs left out: the answer must be said)."""
    texts = [reply_text(reply_parts(tokenizer, c)) for c in completions]
    return [float(c.finish_reason == "stop" and it.check(t)[0]) for it, c, t in zip(items, completions, texts)], texts


def render_prompts(tokenizer, items) -> list[list[int]]:
    from training.conversations.render import render_for_completion
    return [render_for_completion(tokenizer, it.messages, where=f"task item {it.id}") for it in items]


def sequences(prompts: list[list[int]], completions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, targets, last) of prompt + reply rows, right-padded to the longest: targets are the
    next token where the model sampled it (the reply's text, tool calls and closing <|im_end|>) and
    IGNORE at prompt, forced tool-output and padding positions; last = index of each row's last real
    input position. Right padding keeps causal attention exact: no real token sees a pad."""
    rows = [p + c.tokens for p, c in zip(prompts, completions)]
    width = max(len(r) for r in rows) - 1
    x = torch.zeros((len(rows), width), dtype=torch.long)
    y = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        seq = torch.tensor(rows[i])
        x[i, :len(seq) - 1] = seq[:-1]
        targets = seq[1:].clone()
        trained = torch.zeros(len(seq) - 1, dtype=torch.bool)
        trained[len(p) - 1:] = torch.tensor(c.sampled, dtype=torch.bool)
        y[i, :len(seq) - 1] = targets.masked_fill(~trained, IGNORE)
    last = torch.tensor([len(r) - 2 for r in rows])
    return x, y, last


@dataclass
class RolloutBatch:
    """One rank's rollouts of one optimizer step, already cut into micro-batches."""
    micro: list[dict]
    stats: dict                          # sums over this rank's rows (all-reduced by the job)
    examples: list[dict] = field(default_factory=list)


class RolloutSource:
    """The trainer's batch source for GRPO (trainer.BatchSource): each optimizer step's micro-batches
    are rollouts of `prompts_per_step / world` prompts on this rank, G replies each.

    Prompts: the train items in a per-epoch permutation (seed, epoch), dealt round-robin to ranks.
    Seeds: reply j of item k at rollout batch b samples with row_seed(seed, b, k, j), distinct per row
    and independent of batching, so a resumed run (weights from the checkpoint, cursor from
    state_dict) samples the same replies as an uninterrupted one. With updates_per_batch > 1 the same
    rollouts serve that many optimizer steps (the PPO ratio and clip then matter); the batch is kept
    in the state, so a checkpoint between those steps resumes on it."""

    def __init__(self, engine, policy: torch.nn.Module, reference: torch.nn.Module | None, items: list, rl: dict,
                 micro_batch: int, grad_accum: int, rank: int, world: int, seed: int,
                 reward_fn: Callable | None = None, device: torch.device | str = "cpu"):
        self.engine, self.policy, self.reference, self.items, self.rl = engine, policy, reference, items, rl
        self.micro_batch, self.grad_accum, self.rank, self.world, self.seed = micro_batch, grad_accum, rank, world, seed
        self.reward_fn = reward_fn or verifiable_reward
        self.device = torch.device(device)
        # The reference's forward over every rollout row costs 2N FLOPs per position (a third of the
        # training step's 6N) and is needed per step only for the KL penalty (rl.kl_coef) or the
        # leash (rl.kl_max); otherwise the KL is measured at evaluation only (heldout/kl).
        self.kl_per_step = reference is not None and (float(rl["kl_coef"]) > 0 or rl.get("kl_max") is not None)
        self.prompts_per_rank = rl["prompts_per_step"] // world
        self.epoch, self.pos, self.batch_index = 0, 0, 0
        self.current: RolloutBatch | None = None
        self.served = 0          # micro-batches of `current` handed out (grad_accum per optimizer step)
        self.last: RolloutBatch | None = None   # the batch the latest step trained on (for the job's logs)
        self.rolled = False      # a fresh rollout happened since the job last looked (its time counts)

    # ---- trainer.BatchSource ----
    def next_batch(self) -> dict:
        total = self.grad_accum * int(self.rl["updates_per_batch"])
        if self.current is None or self.served >= total:
            self.current, self.served = self._rollout(), 0
        mb = self.current.micro[self.served % self.grad_accum]
        self.served += 1
        self.last = self.current
        return mb

    def state_dict(self) -> dict:
        mid = self.current is not None and self.served < self.grad_accum * int(self.rl["updates_per_batch"])
        return {"epoch": self.epoch, "pos": self.pos, "batch_index": self.batch_index, "served": self.served,
                "current": (self.current.micro, self.current.stats) if mid else None}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos, self.batch_index = state["epoch"], state["pos"], state["batch_index"]
        self.served = state["served"]
        self.current = RolloutBatch(*state["current"]) if state["current"] is not None else None

    # ---- rollouts ----
    def _next_items(self) -> list[tuple[int, object]]:
        """This rank's prompts of the next rollout batch: (index into items, item)."""
        out = []
        per_step = self.prompts_per_rank * self.world
        while len(out) < self.prompts_per_rank:
            order = list(range(len(self.items)))
            random.Random(f"rl-prompts:{self.seed}:{self.epoch}").shuffle(order)
            take = order[self.pos:self.pos + per_step]
            mine = take[self.rank::self.world][:self.prompts_per_rank - len(out)]
            out += [(k, self.items[k]) for k in mine]
            self.pos += per_step
            if self.pos >= len(order):
                self.epoch, self.pos = self.epoch + 1, 0
        return out

    def _rollout(self) -> RolloutBatch:
        rl, G = self.rl, int(self.rl["group_size"])
        t0 = time.perf_counter()
        self.rolled = True
        sync_weights(self.engine.model, self.policy)
        chosen = self._next_items()
        b = self.batch_index
        self.batch_index += 1
        items = [it for _, it in chosen for _ in range(G)]
        prompts = render_prompts(self.engine.tokenizer, items)
        seeds = [row_seed(self.seed, b, k, j) for k, _ in chosen for j in range(G)]
        completions = self.engine.generate(prompts, rollout_params(rl), seeds=seeds)
        t1 = time.perf_counter()
        rewards, texts = self.reward_fn(items, completions, self.engine.tokenizer)
        r = torch.tensor(rewards, dtype=torch.float32).view(len(chosen), G)
        adv = group_advantages(r, scale_std=bool(rl["scale_std"])).view(-1)
        t2 = time.perf_counter()
        micro, scored = [], 0
        T = float(rl["temperature"])
        for s in range(0, len(items), self.micro_batch):
            rows = slice(s, s + self.micro_batch)
            x, y, _ = sequences(prompts[rows], completions[rows])
            mb = {"x": x, "y": y, "adv": adv[rows].clone()}
            xd, yd = x.to(self.device), y.to(self.device)
            if int(rl["updates_per_batch"]) > 1:     # the policy that sampled, for the ratio
                mb["old_logp"] = token_logprobs(self.policy, xd, yd, T).cpu()
                scored += x.numel()
            if self.kl_per_step:
                mb["ref_logp"] = token_logprobs(self.reference, xd, yd, T).cpu()
                scored += x.numel()
            micro.append(mb)
        t3 = time.perf_counter()
        generated = sum(len(c.tokens) for c in completions)
        stats = {"rows": len(items), "groups": len(chosen), "reward_sum": float(r.sum()),
                 "zero_variance_groups": zero_variance_fraction(r) * len(chosen),
                 "completion_tokens": generated, "prompt_tokens": sum(map(len, prompts)), "scored_positions": scored,
                 "sampled_tokens": sum(sum(c.sampled) for c in completions),
                 "stopped": sum(c.finish_reason == "stop" for c in completions),
                 "tool_calls": sum(c.tokens.count(self.engine.tokenizer.special("tool_start")) for c in completions),
                 "rollout_s": t1 - t0, "reward_s": t2 - t1, "logprob_s": t3 - t2}
        examples = [{"prompt": it.messages[-1]["content"], "answer": it.answer, "reply": c.text, "words": t,
                     "reward": rw, "group": i // G} for i, (it, c, t, rw) in
                    enumerate(zip(items, completions, texts, rewards))][:G * int(rl["log_rollouts"])]
        return RolloutBatch(micro, stats, examples)
