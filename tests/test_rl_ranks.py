"""Two RL ranks agree by construction (issue 24, point 3): the held-out evaluation is split over the
ranks and summed, and early stopping is decided by rank 0 and broadcast. Run under the deepspeed
launcher on two CPU ranks (gloo) with rewards that differ by rank (tests/rl_rank_skew.py): the job
must finish (no rank left waiting in a collective the other never joins), both ranks stopping early
at the same step and exporting together."""
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rl_fixtures import tiny_tokenizer_dir, toy_chat_export  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_ranks_with_different_rewards_stop_at_the_same_step(toy_chat_export, tmp_path):
    out = tmp_path / "run"
    over = ["train.steps=6", "train.micro_batch=2", "eval.every=1", "checkpoint.every=0", "log.mlflow=false",
            "rl.tools=false", "rl.max_tokens=8", "rl.prompts_per_step=2", "rl.group_size=2", "rl.heldout_problems=4",
            "rl.eval_samples=2", "rl.patience=2", "rl.log_rollouts_every=0"]
    cmd = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2", "--master_port",
           str(29400 + os.getpid() % 90), str(REPO / "tests" / "rl_rank_skew.py"), "--data", "toy",
           "--init-from", str(toy_chat_export), "--out", str(out), *[a for o in over for a in ("--set", o)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "LOCAL_SIZE": "2"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "MLFLOW_RUN_ID"):
        env.pop(k, None)
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    try:
        log, _ = p.communicate(timeout=420)
    except subprocess.TimeoutExpired:   # a hang: take the launcher and both ranks down
        os.killpg(p.pid, signal.SIGKILL)
        log, _ = p.communicate()
        pytest.fail("the two ranks hung (a collective one rank never joined):\n" + log[-3000:])
    assert p.returncode == 0, log[-3000:]
    stops = dict(re.findall(r"RANK (\d) STOPPED AT (STEP \d+ EARLY \w+)", log))
    assert stops.keys() == {"0", "1"} and stops["0"] == stops["1"], log[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["stopped_early"] and summary["step"] == 3
    assert stops["0"] == "STEP 3 EARLY True" and (out / "export" / "model.safetensors").exists()
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # the held-out figures are over all 4 problems x 2 samples, half sampled on each rank
    assert all(h["heldout/problems"] == 4 for h in history)
    # the logged throughput counts the positions processed, not rows x context (4 rows x 64 per step)
    assert all(h["train/tokens_per_s"] * h["train/step_ms"] / 1000 < 4 * 64 for h in history)
