"""The whole chain on a tiny setup, materialized by Dagster: crawl -> clean_text -> tokens -> base_model
(pretraining through Pipes under the real `deepspeed` launcher, registered as crawl2chat-base) -> the
post-training data -> chat_model (SFT of crawl2chat-base@candidate, pinned to its version, through the
same launcher and Pipes), registered as crawl2chat-chat with its lineage, and its blocking protocol check
sampled through the inference engine."""
import json
from pathlib import Path

import dagster as dg
import mlflow
import pytest

from assets.data import data_assets
from assets.lineage import MLflowTracker
from assets.partitions import warc_batches
from assets.post_training import PostTrainingConfig, post_training_assets
from assets.post_training_model import CHAT_MODEL_NAME, PROTOCOL, post_training_model_assets
from assets.resources import CrawlSource, DataConfigResource, LakeResource, SparkResource
from assets.tokens import token_assets
from assets.training import TrainingLauncher, training_assets
from pipelines.samplecrawl import generate_crawl

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BASE = ["model.n_layer=2", "model.n_embd=64", "model.n_head=2", "model.block_size=128",
        "train.steps=4", "train.batch_tokens=1024", "train.micro_batch=8", "train.warmup_steps=1",
        "eval.every=2", "eval.val_tokens=512", "eval.sample_every=0", "checkpoint.every=2"]
SFT = ["train.steps=6", "train.batch_tokens=1024", "train.micro_batch=4", "train.lr=3e-3",
       "eval.every=3", "eval.sample_every=6", "eval.sample_tokens=8", "checkpoint.every=3",
       "checks.protocol_prompts=8", "checks.protocol_max_tokens=16",
       "checks.protocol_adherence_min=0.0"]   # 6 tiny steps do not learn the protocol; the rate is reported


def test_base_model_to_chat_model_through_pipes_and_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("CRAWL2CHAT_MODEL_CACHE", str(tmp_path / "model_cache"))  # the trainer's registry download
    generate_crawl(tmp_path / "source", pages=120, seed=4, files=1)
    # the project's sft.yaml with a small data: section (the trainer's sections as shipped, SFT overrides)
    sft_config = tmp_path / "sft.yaml"
    text = (ROOT / "training/configs/sft.yaml").read_text()
    head, _, rest = text.partition("\ndata:\n")
    trainer_sections = rest[rest.index("\nmodel:"):]
    sft_config.write_text(head + """
data:
  identity: {name: Ada, conversations: 40}
  reasoning: {conversations: 40, heldout: 4, words: builtin}
  probes: {max_probes: 6, samples: 2, max_tokens: 6, search: false}
  mixture: {val_fraction: 0.15}
""" + trainer_sections)
    (tmp_path / "dagster_home").mkdir()
    instance = dg.DagsterInstance.local_temp(str(tmp_path / "dagster_home"))
    tracker = MLflowTracker(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                            artifact_root=str(tmp_path / "mlartifacts"))
    resources = {"lake": LakeResource(root=str(tmp_path / "lake")),
                 "source": CrawlSource(base_url=str(tmp_path / "source")),
                 "spark": SparkResource(master="local[2]"),
                 "data_config": DataConfigResource(config_file=str(ROOT / "pipelines/configs/demo.yaml")),
                 "mlflow_tracker": tracker,
                 "launcher": TrainingLauncher(overrides=BASE, sft_config_file=str(sft_config), sft_overrides=SFT),
                 "post_training": PostTrainingConfig(config_file=str(sft_config)),
                 "pipes_subprocess_client": dg.PipesSubprocessClient()}
    everything = [*data_assets, *token_assets, *training_assets, *post_training_assets, *post_training_model_assets]
    assert dg.materialize(everything, selection=["crawl_manifest"], instance=instance, resources=resources).success
    for key in instance.get_dynamic_partitions(warc_batches.name):
        dg.materialize(everything, selection=["warc_files", "extracted_text", "filtered_text"],
                       partition_key=key, instance=instance, resources=resources)
    upstream = ["deduped_text", "clean_text", "tokenizer", "token_shards", "base_model"]
    assert dg.materialize(everything, selection=upstream, instance=instance, resources=resources).success
    post = [a.key.to_user_string() for a in post_training_assets] + ["chat_model"]
    result = dg.materialize(everything, selection=post, instance=instance, resources=resources)
    assert result.success

    meta = instance.get_latest_materialization_event(dg.AssetKey("chat_model")).asset_materialization.metadata
    # reported by the SFT trainer through Pipes, completed by the asset
    assert meta["step"].value == 6 and meta["train_windows"].value > 0
    assert 0 <= meta["train_padding_fraction"].value < 0.5
    assert meta["base_model"].value == "crawl2chat-base/1"
    export = Path(meta["export"].value)
    cfg = json.loads((export / "config.json").read_text())
    assert cfg["stage"] == "sft" and cfg["model"]["block_size"] == 128   # the base model's architecture
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == PROTOCOL]
    rate = check.metadata["rate"].value
    assert check.passed and 0.0 <= rate <= 1.0 and check.metadata["prompts"].value > 0
    # the gate's 8 prompts: none trained on, taken in turn from every source that has some
    sources = check.metadata["prompt_sources"].value
    assert sum(s["used"] for s in sources.values()) == 8 and len([s for s in sources.values() if s["used"]]) >= 3
    assert {"heldout:identity", "heldout:reasoning"} <= set(sources)
    assert meta["identity"].value["name"] == "Ada" and meta["identity"].value["replies"] == 24

    client = mlflow.MlflowClient(tracker.tracking_uri)
    chat = client.get_model_version_by_alias(CHAT_MODEL_NAME, "candidate")
    base = client.get_model_version_by_alias("crawl2chat-base", "candidate")
    assert chat.tags["base_model"] == f"crawl2chat-base/{base.version}" and chat.tags["base_model_run_id"] == base.run_id
    run = client.get_run(chat.run_id)
    assert run.data.tags["dagster.asset_key"] == "chat_model" and run.data.tags["crawl2chat.stage"] == "sft"
    assert run.data.params["sft.model.init_from"] == f"crawl2chat-base/{base.version}"   # logged by the trainer
    assert "train/loss" in run.data.metrics and "val/loss" in run.data.metrics and "protocol_adherence" in run.data.metrics
    [mix] = [d for d in run.inputs.dataset_inputs if d.dataset.name == "sft_mixture"]
    assert mix.dataset.digest == chat.tags["sft_mixture_digest"][:36]
    # the registered chat model loads in the engine by its alias, as `make chat` loads it
    from training.engine.engine import Engine
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracker.tracking_uri)
    engine = Engine.load(f"{CHAT_MODEL_NAME}@candidate", tools={})
    assert engine.model.config.n_layer == 2
