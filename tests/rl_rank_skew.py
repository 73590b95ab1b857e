"""The RL job with held-out rewards that differ by rank, for tests/test_rl_ranks.py (run under the
deepspeed launcher, two CPU ranks). Rank 0's rewards rise with every call of the reward function,
rank 1's fall (as a tool that starts timing out on one rank only would make them): a rank that
decided early stopping from its own numbers would stop at another step than the other rank, and
enter the export's collectives while the other trains on. Prints each rank's stop step."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import training.rl.job as job  # noqa: E402

RANK = int(os.environ["RANK"])
calls = [0]


def skewed_reward(items, completions, tokenizer):
    _, texts = job.verifiable_reward.__wrapped__(items, completions, tokenizer)
    calls[0] += 1
    r = 0.01 * calls[0] if RANK == 0 else max(0.0, 1.0 - 0.3 * calls[0])
    return [r] * len(completions), texts


skewed_reward.__wrapped__ = job.verifiable_reward
job.verifiable_reward = skewed_reward
summary = job.main(sys.argv[1:])
print(f"RANK {RANK} STOPPED AT STEP {summary['step']} EARLY {bool(summary['stopped_early'])}", flush=True)
