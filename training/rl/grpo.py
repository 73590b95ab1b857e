"""GRPO's math, free of models and engines (tests/test_grpo.py checks it by hand).

For one prompt, G sampled replies get rewards r_1..r_G. The group is its own baseline:
    A_i = r_i - mean(r)                    (÷ (std(r) + eps) when scale_std: DeepSeekMath's GRPO;
                                            without it, Dr. GRPO's unbiased variant)
so a group whose replies all score the same has A = 0 and teaches nothing (logged as the fraction of
groups with zero reward variance: when it nears 1 the task is too hard or already solved).

Every sampled token t of reply i gets the reply's advantage. With the probability ratio
rho = pi(t) / pi_old(t) of the current policy to the one that sampled:
    per-token loss = -min(rho·A, clip(rho, 1-eps, 1+eps)·A) + beta · k3
    k3 = exp(ref - logp) - (ref - logp) - 1       (Schulman's unbiased, always >= 0 KL(pi || ref) estimate)
With one update per rollout batch pi_old is pi itself (rho = 1, gradient A·∇logp): the clip only
matters from the second update on the same rollouts. The loss is summed over sampled tokens only
(mask: prompts, forced tool outputs and padding are 0) and the trainer divides by the step's global
count of sampled tokens: token-level averaging, so long replies are not down-weighted (Dr. GRPO /
DAPO) as per-sequence means would.
"""
from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, scale_std: bool = False, eps: float = 1e-4) -> torch.Tensor:
    """rewards (P, G) -> advantages (P, G): centred per group (row), optionally ÷ the group's std
    (unbiased=False: the G replies are the whole group)."""
    adv = rewards - rewards.mean(dim=1, keepdim=True)
    if scale_std:
        adv = adv / (rewards.std(dim=1, keepdim=True, unbiased=False) + eps)
    return adv


def zero_variance_fraction(rewards: torch.Tensor) -> float:
    """Share of groups (rows) whose replies all got the same reward."""
    return float((rewards.max(dim=1).values == rewards.min(dim=1).values).float().mean())


def k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || ref) from the sampled token's log-probs under both."""
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1


def grpo_loss(logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              old_logp: torch.Tensor | None = None, ref_logp: torch.Tensor | None = None,
              clip_eps: float = 0.2, kl_coef: float = 0.0) -> tuple[torch.Tensor, dict]:
    """Summed per-token GRPO loss over the masked tokens, and figures of it.

    logp, old_logp, ref_logp, mask: (B, T); advantages: (B,) one per reply, or (B, T) per token.
    old_logp None means one update per batch (rho = 1 with the gradient of logp). The loss is a sum:
    divide by the global count of sampled tokens (the trainer does)."""
    mask = mask.to(logp.dtype)
    adv = advantages[:, None] if advantages.dim() == 1 else advantages
    old = logp.detach() if old_logp is None else old_logp
    ratio = torch.exp(logp - old)
    pg = -torch.minimum(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv)
    per_token = pg
    stats = {"clipped": float((((ratio - 1).abs() > clip_eps).to(mask.dtype) * mask).sum())}
    if ref_logp is not None:
        kl = k3(logp, ref_logp)
        stats["kl_sum"] = float((kl.detach() * mask).sum())
        if kl_coef:
            per_token = per_token + kl_coef * kl
    # where(), not a product alone: a masked position with inf/nan log-prob must not poison the sum
    return torch.where(mask > 0, per_token * mask, torch.zeros_like(per_token)).sum(), stats
