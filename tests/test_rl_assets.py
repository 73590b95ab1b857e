"""The RL assets on a tiny setup, materialized by Dagster: a toy chat model registered as
crawl2chat-chat@candidate -> rl_model (GRPO through the deepspeed launcher and Pipes), preference_pairs
(generated from the chat model's samples), reward_model and rlhf_model; each registered in MLflow with
its lineage, each blocking check evaluated."""
import dagster as dg
import mlflow
import pytest

from assets.lineage import MLflowTracker
from assets.post_training_model import CHAT_MODEL_NAME
from assets.resources import LakeResource
from assets.rl import KL_CHECK, RL_CHECK, RLHF_NAME, RL_NAME, RM_CHECK, RM_NAME, rl_assets
from assets.training import TrainingLauncher, register
from rl_fixtures import tiny_tokenizer_dir, toy_chat_export  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow
RL = ["train.steps=6", "train.micro_batch=32", "train.lr=3e-3", "rl.max_tokens=12", "rl.tools=false",
      "eval.every=3", "checkpoint.every=0", "rl.heldout_problems=16", "rl.eval_samples=4"]
RLHF = ["pairs.problems=60", "pairs.samples=2", "pairs.max_tokens=12", "reward_model.steps=20",
        "reward_model.lr=1e-3", "reward_model.eval_every=10", "train.steps=4", "train.micro_batch=32",
        "train.lr=1e-3", "rl.kl_coef=0.1", "rl.kl_max=2.0", "rl.max_tokens=12", "rl.tools=false", "eval.every=2",
        "rl.heldout_problems=8", "rl.eval_samples=2", "checkpoint.every=0"]


def test_rl_assets_train_register_and_check(toy_chat_export, tmp_path):
    tracker = MLflowTracker(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                            artifact_root=str(tmp_path / "mlartifacts"))
    mlflow.set_tracking_uri(tracker.tracking_uri)
    exp = mlflow.create_experiment("chat", artifact_location=(tmp_path / "mlartifacts" / "chat").as_uri())
    with mlflow.start_run(experiment_id=exp) as run:
        chat_version = register(tracker, run, toy_chat_export, CHAT_MODEL_NAME, "the toy chat model")
    instance = dg.DagsterInstance.ephemeral()
    resources = {"lake": LakeResource(root=str(tmp_path / "lake")), "mlflow_tracker": tracker,
                 "launcher": TrainingLauncher(rl_overrides=RL, rlhf_overrides=RLHF),
                 "pipes_subprocess_client": dg.PipesSubprocessClient()}
    result = dg.materialize(rl_assets, instance=instance, resources=resources)
    assert result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert set(checks) == {RL_CHECK, RM_CHECK, KL_CHECK} and all(c.passed for c in checks.values())
    rl = checks[RL_CHECK].metadata
    assert rl["pass_at_1_after"].value >= rl["pass_at_1_before"].value
    assert checks[RM_CHECK].metadata["accuracy"].value >= 0.6
    assert checks[KL_CHECK].metadata["heldout_kl"].value <= 2.0

    client = mlflow.MlflowClient(tracker.tracking_uri)
    chat_ref = f"{CHAT_MODEL_NAME}/{chat_version}"
    rl_v, rm_v, rlhf_v = (client.get_model_version_by_alias(n, "candidate") for n in (RL_NAME, RM_NAME, RLHF_NAME))
    assert rl_v.tags["chat_model"] == chat_ref and rl_v.tags["task"] == "toy"
    assert rm_v.tags["chat_model"] == chat_ref and rm_v.tags["preference_pairs_digest"]
    assert rlhf_v.tags["reward_model"] == f"{RM_NAME}/{rm_v.version}"
    assert rlhf_v.tags["preference_pairs_digest"] == rm_v.tags["preference_pairs_digest"]
    run = client.get_run(rl_v.run_id)
    assert run.data.tags["dagster.asset_key"] == "rl_model" and run.data.tags["crawl2chat.stage"] == "rl"
    assert "rl/reward" in run.data.metrics and "heldout/pass_at_1" in run.data.metrics
    rlhf_run = client.get_run(rlhf_v.run_id)
    assert "rl/kl" in rlhf_run.data.metrics and "heldout/reward" in rlhf_run.data.metrics
    [pairs_input] = [d for d in rlhf_run.inputs.dataset_inputs if d.dataset.name == "preference_pairs"]
    assert rm_v.tags["preference_pairs_digest"].startswith(pairs_input.dataset.digest)
    meta = instance.get_latest_materialization_event(dg.AssetKey("preference_pairs")).asset_materialization.metadata
    assert meta["heldout_pairs"].value > 0 and meta["chat_model"].value == chat_ref
