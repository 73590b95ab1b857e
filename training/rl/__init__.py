"""RL on verifiable tasks (GRPO) and RLHF (reward model + KL-leashed policy optimisation); see job.py."""
