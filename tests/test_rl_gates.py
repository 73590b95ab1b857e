"""The RL stages' checks fail runs that did not learn (training/rl/gates.py): GRPO and RLHF at learning
rate 0, run for real on the toy chat model, fail their gates; figures that did move pass them. The old
GRPO check passed 0.0 >= 0.0."""
import pytest
import torch

from rl_fixtures import tiny_tokenizer_dir, toy_chat_export  # noqa: F401 (fixtures)
from training.config import load_config
from training.rl.gates import rl_gate, rlhf_gate

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RL = ["train.micro_batch=32", "rl.max_tokens=12", "rl.tools=false", "rl.prompts_per_step=8", "rl.group_size=8",
      "log.mlflow=false", "checkpoint.every=0", "train.steps=2", "eval.every=2", "rl.heldout_problems=16",
      "rl.eval_samples=4"]


def test_rl_gate_needs_an_improvement_beyond_its_interval():
    summary = {"start_heldout_pass_at_1": 0.0, "heldout_problems": 16}
    assert not rl_gate([{"heldout/pass_at_1": 0.0}], summary, 4)[0]            # the 0.0 >= 0.0 run
    near = {**summary, "start_heldout_pass_at_1": 0.03}
    assert not rl_gate([{"heldout/pass_at_1": 0.05}], near, 4)[0]              # 3 of 64 vs 2 of 64: chance
    ok, meta = rl_gate([{"heldout/pass_at_1": 0.25}], summary, 4)
    assert ok and meta["heldout_replies"] == 64 and 0 < meta["after_ci_low"] < 0.25 < meta["after_ci_high"]
    assert not rl_gate([], summary, 4)[0] and not rl_gate([{"heldout/pass_at_1": 0.5}], {}, 4)[0]


def test_rlhf_gate_needs_a_higher_score_on_the_leash():
    summary = {"start_heldout_reward": 0.1}
    assert rlhf_gate([{"heldout/kl": 0.2, "heldout/reward": 0.4}], summary, 0.5)[0]
    assert not rlhf_gate([{"heldout/kl": 0.6, "heldout/reward": 0.4}], summary, 0.5)[0]    # off the leash
    assert not rlhf_gate([{"heldout/kl": 0.0, "heldout/reward": 0.1}], summary, 0.5)[0]    # did not move


def test_grpo_at_learning_rate_0_fails_its_gate(toy_chat_export, tmp_path):
    from training.rl.job import train
    cfg = load_config("training/configs/rl.yaml", RL + [f"model.init_from={toy_chat_export}", "train.lr=0"], job="rl")
    s = train(cfg, "toy", tmp_path / "run")
    ok, meta = rl_gate(s["history"], s, 4)
    assert meta["pass_at_1_after"] == pytest.approx(meta["pass_at_1_before"]) and not ok


def test_rlhf_at_learning_rate_0_fails_its_gate(toy_chat_export, tmp_path):
    from test_device_discipline import pairs_dir
    from training.export import export_state, load_model
    from training.rl import rlhf
    from training.rl.reward_model import RewardModel
    torch.manual_seed(0)
    rm = RewardModel.from_gpt(load_model(toy_chat_export))
    export_state(dict(rm.state_dict()), rm.config, tmp_path / "rm", toy_chat_export, extra={"reward_model": True})
    cfg = load_config("training/configs/rlhf.yaml", RL + [f"model.init_from={toy_chat_export}", "train.lr=0",
                                                          "rl.kl_coef=0.1", "rl.kl_max=1.0"], job="rlhf")
    s = rlhf.train(cfg, pairs_dir(tmp_path), tmp_path / "rm", tmp_path / "run")
    ok, meta = rlhf_gate(s["history"], s, 1.0)
    assert meta["reward_after"] == pytest.approx(meta["reward_before"]) and meta["heldout_kl"] == pytest.approx(0, abs=1e-6)
    assert not ok
