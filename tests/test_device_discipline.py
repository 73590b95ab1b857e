"""Every training job is device-clean on CUDA, checked on a CPU-only machine: each of the five jobs
(pretrain, SFT, reward model, GRPO, RLHF) runs its start evaluation, one real optimizer step (DeepSpeed
engine, the trainer's loop, figures read back) and its export with the device a GPU machine would give
it (tests/fake_cuda.py: real data, CUDA's placement rules). A tensor left on the CPU where the GPU
expects it fails here as it would on the first GPU step: the reward model's CPU pair count and the RL
jobs' start evaluation of a policy DeepSpeed had not yet moved both did (issue 24, findings 1 and 2).
"""
from __future__ import annotations

import json

import pytest
import torch

from engine_fixtures import tiny_export, tiny_tokenizer_dir  # noqa: F401 (fixtures)
from fake_cuda import FakeCudaMismatch, fake_cuda
from test_pretrain import SMALL as PRETRAIN_SMALL, corpus  # noqa: F401 (fixture)
from test_sft import SMALL as SFT_SMALL, base_export, mixture  # noqa: F401 (fixtures)
from training.config import load_config

pytestmark = pytest.mark.usefixtures("one_torch_thread", "single_process_group")

ONE_STEP = ["train.steps=1", "train.precision=fp32", "train.zero_stage=0", "log.mlflow=false", "checkpoint.every=0",
            "eval.sample_every=0"]


@pytest.fixture
def single_process_group():
    """A world of one on gloo, made before the job's start(): a CUDA world would ask for NCCL."""
    import torch.distributed as dist
    from training.trainer import setup_distributed
    if not dist.is_initialized():
        setup_distributed()
    yield


def pairs_dir(tmp_path):
    from training.rl.preferences import write_pairs
    rows = []
    for i in range(24):
        rows.append({"id": f"p{i}", "prompt": json.dumps([{"role": "user", "content": f"Say {i} please"}]),
                     "chosen": f"Here it is: {i}.", "rejected": "No.", "source": "test",
                     "split": "heldout" if i % 4 == 0 else "train"})
    return write_pairs([{k: v for k, v in r.items()} for r in rows], tmp_path / "pairs")


def test_pretraining_job_is_device_clean(corpus, tmp_path):
    from training.pretrain import train
    cfg = load_config(None, PRETRAIN_SMALL + ONE_STEP + ["eval.every=1"])
    with fake_cuda():
        s = train(cfg, corpus, tmp_path / "run")
    assert s["step"] == 1 and s["final"]["val/loss"] > 0 and s["export"]


def test_sft_job_is_device_clean(mixture, base_export, tmp_path):
    from training.sft import train
    cfg = load_config(None, SFT_SMALL + ONE_STEP + [f"model.init_from={base_export}", "eval.every=1"], job="sft")
    with fake_cuda():
        s = train(cfg, mixture, tmp_path / "run")
    assert s["step"] == 1 and s["final"]["val/loss"] > 0 and s["export"]


RL_SMALL = ONE_STEP + ["train.micro_batch=4", "rl.prompts_per_step=2", "rl.group_size=2", "rl.max_tokens=6",
                       "rl.tools=false", "rl.heldout_problems=2", "rl.eval_samples=2", "eval.every=1",
                       "rl.kl_coef=0.1"]


def test_grpo_job_is_device_clean(tiny_export, tmp_path):
    from training.rl.job import train
    cfg = load_config("training/configs/rl.yaml", RL_SMALL + [f"model.init_from={tiny_export}"], job="rl")
    with fake_cuda():
        s = train(cfg, "toy", tmp_path / "run")
    assert s["step"] == 1 and "heldout/kl" in s["final"] and s["export"]


def test_rlhf_job_is_device_clean(tiny_export, tmp_path):
    from training.export import export_state, load_model
    from training.rl import rlhf
    from training.rl.reward_model import RewardModel
    rm = RewardModel.from_gpt(load_model(tiny_export))
    export_state(dict(rm.state_dict()), rm.config, tmp_path / "rm", tiny_export, extra={"reward_model": True})
    cfg = load_config("training/configs/rlhf.yaml", RL_SMALL + [f"model.init_from={tiny_export}"], job="rlhf")
    with fake_cuda():
        s = rlhf.train(cfg, pairs_dir(tmp_path), tmp_path / "rm", tmp_path / "run")
    assert s["step"] == 1 and "heldout/reward" in s["final"] and s["export"]


def test_reward_model_job_is_device_clean(tiny_export, tmp_path):
    from training.rl import reward_model
    cfg = load_config("training/configs/rlhf.yaml", ONE_STEP + [
        f"reward_model.init_from={tiny_export}", "reward_model.steps=1", "reward_model.micro_batch=4",
        "reward_model.batch_pairs=4", "reward_model.eval_every=1"], job="rm")
    with fake_cuda():
        s = reward_model.train(cfg, pairs_dir(tmp_path), tmp_path / "rm")
    assert s["step"] == 1 and s["final"]["train/loss"] > 0 and "rm/accuracy" in s["final"]


def test_the_harness_fails_a_cpu_tensor_where_the_gpu_expects_one():
    """The check itself can fail: a CPU count stacked with device figures, and a CPU model fed device
    inputs, raise as CUDA would."""
    with fake_cuda():
        figures = torch.zeros((), device="cuda")
        with pytest.raises(FakeCudaMismatch):
            torch.stack([figures, torch.tensor(3.0)])
        with pytest.raises(FakeCudaMismatch):
            torch.nn.Linear(4, 2)(torch.ones(1, 4, device="cuda"))
