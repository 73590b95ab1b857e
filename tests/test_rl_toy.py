"""GRPO end to end on the toy task with the real trainer (DeepSpeed on CPU) and the real engine: RL
raises held-out pass@1 well above the starting model's, the curves land in MLflow, and a resumed run
reproduces the steps an uninterrupted one takes."""
import json

import pytest
import torch

from rl_fixtures import tiny_tokenizer_dir, toy_chat_export  # noqa: F401 (fixtures)
from training.config import load_config
from training.rl.job import train

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
SMALL = ["train.micro_batch=32", "train.lr=3e-3", "rl.max_tokens=12", "rl.tools=false", "rl.heldout_problems=100",
         "rl.prompts_per_step=8", "rl.group_size=8", "log.mlflow=false", "checkpoint.every=0"]


def test_rl_raises_heldout_pass_at_1_with_curves_in_mlflow(toy_chat_export, tmp_path, monkeypatch):
    from mlflow import MlflowClient
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    # artifacts under tmp_path (an experiment the tracker creates would default to ./mlruns)
    MlflowClient(uri).create_experiment("crawl2chat-rl", artifact_location=(tmp_path / "art").as_uri())
    cfg = load_config("training/configs/rl.yaml", SMALL + [
        f"model.init_from={toy_chat_export}", "train.steps=20", "eval.every=10", "log.mlflow=true",
        "rl.log_rollouts_every=10"], job="rl")
    s = train(cfg, "toy", tmp_path / "run")
    before, after = s["start_heldout_pass_at_1"], s["final"]["heldout/pass_at_1"]
    print(f"toy RL: held-out pass@1 {before:.3f} -> {after:.3f} on {s['heldout_problems']} held-out problems "
          f"x 8 samples ({s['train_problems']} train problems, 20 steps of 8 x 8 replies)")
    assert s["heldout_problems"] >= 20 and s["train_problems"] >= 50
    assert after >= before + 0.3 and after >= 0.6
    assert s["final"]["heldout/pass_at_8"] >= after
    rewards = [h["rl/reward"] for h in s["history"]]
    assert sum(rewards[-5:]) / 5 > sum(rewards[:5]) / 5 + 0.2
    # kl_coef 0 and no kl_max: the KL is measured at evaluation only (no reference forward per step)
    assert s["start_heldout_kl"] == pytest.approx(0.0, abs=1e-6)      # the starting policy is the reference
    assert s["final"]["heldout/kl"] > 0 and all("rl/kl" not in h for h in s["history"])
    assert all(0 <= h["rl/zero_variance_groups"] <= 1 for h in s["history"])
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("crawl2chat-rl").experiment_id])
    assert run.data.tags["crawl2chat.stage"] == "rl" and run.data.params["rl.rl.task"] == "toy"
    for key in ("rl/reward", "rl/entropy", "rl/zero_variance_groups", "rl/completion_tokens"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == list(range(1, 21)), key
    for key in ("heldout/pass_at_1", "heldout/kl"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [10, 20], key
    arts = [a.path for a in client.list_artifacts(run.info.run_id, "rollouts")]
    assert arts == ["rollouts/step_00000001.txt", "rollouts/step_00000010.txt", "rollouts/step_00000020.txt"]
    assert "## prompt: 'Repeat" in (tmp_path / "run" / arts[0]).read_text()
    from training.engine.engine import Engine
    assert json.loads((tmp_path / "run" / "export" / "config.json").read_text())["stage"] == "rl"
    Engine.load(tmp_path / "run" / "export", tools={})


@pytest.mark.parametrize("updates", [1, 2])
def test_resume_mid_rl_reproduces_the_next_steps(toy_chat_export, tmp_path, updates):
    """Six steps straight vs three, a checkpoint, and a resume: the same rewards, losses and KL.
    With two updates per rollout batch the checkpoint at step 3 falls inside a batch (its rollouts
    travel in the checkpoint)."""
    over = SMALL + [f"model.init_from={toy_chat_export}", "train.steps=6", "eval.every=0", "checkpoint.every=3",
                    f"rl.updates_per_batch={updates}", "rl.kl_coef=0.1", "rl.heldout_problems=4", "rl.eval_samples=2"]
    straight = train(load_config(None, over, job="rl"), "toy", tmp_path / "a")
    first = train(load_config(None, over + ["train.stop_after=3"], job="rl"), "toy", tmp_path / "b")
    assert first["step"] == 3 and first["export"] is None
    resumed = train(load_config(None, over, job="rl"), "toy", tmp_path / "b", resume=True)
    assert resumed["resumed_from"] and [h["step"] for h in resumed["history"]] == [4, 5, 6]
    for a, b in zip(straight["history"][3:], resumed["history"]):
        assert a["rl/reward"] == b["rl/reward"]
        assert a["rl/completion_tokens"] == b["rl/completion_tokens"]
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-5, abs=1e-7)
        assert a["rl/kl"] == pytest.approx(b["rl/kl"], rel=1e-5, abs=1e-7)
