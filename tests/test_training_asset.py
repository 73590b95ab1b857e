"""tokenizer -> token_shards -> base_model materialized in-process: the trainer really runs under
the `deepspeed` launcher through Dagster Pipes (a tiny model, a few steps), continues the asset's
MLflow run, and its export is registered as `crawl2chat-base`."""
import json
import math
from pathlib import Path

import dagster as dg
import mlflow
import pytest

from assets.data import data_assets
from assets.lineage import MLflowTracker
from assets.partitions import warc_batches
from assets.resources import CrawlSource, DataConfigResource, LakeResource, SparkResource
from assets.tokens import token_assets
from assets.training import TrainingLauncher, training_assets
from pipelines.samplecrawl import generate_crawl

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.n_layer=2", "model.n_embd=64", "model.n_head=2", "model.block_size=64",
        "train.steps=6", "train.batch_tokens=1024", "train.micro_batch=8", "train.warmup_steps=1",
        "eval.every=3", "eval.val_tokens=512", "eval.sample_every=6", "eval.sample_tokens=8",
        "checkpoint.every=3"]


def test_pretraining_through_pipes_and_registry(tmp_path):
    generate_crawl(tmp_path / "source", pages=120, seed=4, files=1)
    (tmp_path / "dagster_home").mkdir()
    instance = dg.DagsterInstance.local_temp(str(tmp_path / "dagster_home"))
    tracker = MLflowTracker(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                            artifact_root=str(tmp_path / "mlartifacts"))
    resources = {"lake": LakeResource(root=str(tmp_path / "lake")),
                 "source": CrawlSource(base_url=str(tmp_path / "source")),
                 "spark": SparkResource(master="local[2]"),
                 "data_config": DataConfigResource(config_file=str(ROOT / "pipelines/configs/demo.yaml")),
                 "mlflow_tracker": tracker, "launcher": TrainingLauncher(overrides=TINY),
                 "pipes_subprocess_client": dg.PipesSubprocessClient()}
    everything = [*data_assets, *token_assets, *training_assets]
    assert dg.materialize(everything, selection=["crawl_manifest"], instance=instance, resources=resources).success
    for key in instance.get_dynamic_partitions(warc_batches.name):
        dg.materialize(everything, selection=["warc_files", "extracted_text", "filtered_text"],
                       partition_key=key, instance=instance, resources=resources)
    result = dg.materialize(everything, selection=["deduped_text", "clean_text", "tokenizer", "token_shards",
                                                   "base_model"], instance=instance, resources=resources)
    assert result.success
    meta = instance.get_latest_materialization_event(dg.AssetKey("base_model")).asset_materialization.metadata
    # reported by the trainer itself through Pipes, then completed by the asset
    assert meta["step"].value == 6 and math.isfinite(meta["val_loss"].value)
    export = Path(meta["export"].value)
    assert (export / "model.safetensors").exists() and (export / "config.json").exists()
    assert json.loads((export / "config.json").read_text())
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["val_loss_finite_and_falling"]

    client = mlflow.MlflowClient(tracker.tracking_uri)
    version = client.get_model_version_by_alias("crawl2chat-base", "candidate")
    run = client.get_run(version.run_id)
    assert run.data.tags["dagster.asset_key"] == "base_model"
    assert "train/loss" in run.data.metrics and "val/loss" in run.data.metrics  # logged by the trainer
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["token_shards"]
    from training.export import load_model
    model = load_model(export)
    assert sum(p.numel() for p in model.parameters()) > 0
