"""The RL stages' asset checks, as functions of a run's figures (assets/rl.py reports them): each one
fails a run that did not do its job, a run at learning rate 0 included (tests/test_rl_gates.py).

- GRPO: held-out pass@1 after RL must beat the starting model's beyond chance: the lower end of the
  95% Wilson interval of the final pass@1 (over heldout_problems x eval_samples replies) must lie
  above the start's pass@1 on the same problems and seeds. "after >= before" passed a run whose
  reward was 0 at every step and whose weights never moved (0.0 >= 0.0).
- RLHF: the exported policy's held-out per-token KL to the chat model within rl.kl_max AND its held-out
  reward-model score above the start's (same prompts, same seeds: an unmoved policy scores exactly
  the same and fails).
"""
from __future__ import annotations

from training.evals.intervals import wilson


def last(history: list[dict], key: str):
    vals = [h[key] for h in history if h.get(key) is not None]
    return vals[-1] if vals else None


def rl_gate(history: list[dict], summary: dict, eval_samples: int) -> tuple[bool, dict]:
    before, after = summary.get("start_heldout_pass_at_1"), last(history, "heldout/pass_at_1")
    replies = int(summary.get("heldout_problems") or 0) * int(eval_samples)
    low = high = None
    if after is not None and replies:
        low, high = wilson(round(after * replies), replies)
    ok = before is not None and low is not None and low > before
    return ok, {"pass_at_1_before": before, "pass_at_1_after": after, "after_ci_low": low, "after_ci_high": high,
                "heldout_replies": replies, "heldout_problems": summary.get("heldout_problems"),
                "final_reward": last(history, "rl/reward")}


def rlhf_gate(history: list[dict], summary: dict, kl_max: float | None) -> tuple[bool, dict]:
    # The exported policy's figures: the last evaluation's, or the last one within rl.kl_max when the run
    # passed it and rolled back (training/rl/job.py GRPO.export_weights).
    kl = summary.get("exported_heldout_kl", last(history, "heldout/kl"))
    before = summary.get("start_heldout_reward")
    after = summary.get("exported_heldout_reward", last(history, "heldout/reward"))
    within = kl is not None and (kl_max is None or kl <= float(kl_max))
    rose = before is not None and after is not None and after > before
    return within and rose, {
        "heldout_kl": kl, "kl_max": kl_max, "reward_before": before, "reward_after": after,
        "stopped_early": summary.get("stopped_early"), "exported_step": summary.get("exported_step"),
        "rolled_back": summary.get("exported_rolled_back"),
        "max_step_kl": max((h["rl/kl"] for h in history if h.get("rl/kl") is not None), default=None)}
