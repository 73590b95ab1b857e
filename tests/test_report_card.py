"""End to end with real Dagster, Spark, DeepSpeed and MLflow: a generated crawl through the data
pipeline, tokenizer, token shards and a tiny pretraining (crawl2chat-base/1), a few SFT steps through
the chat_model asset (crawl2chat-chat/1); then the new_model_versions sensor asks for an evaluation,
model_evals scores both versions (one MLflow evaluation run each, found from the version) and
report_card writes a card whose every section comes from those runs."""
import json
import random
import re
from pathlib import Path

import dagster as dg
import mlflow
import pytest

from assets.automation import new_model_versions
from assets.data import data_assets
from assets.evaluation import EvalSettings, evaluation_assets
from assets.lineage import MLflowTracker
from assets.partitions import warc_batches
from assets.post_training import PostTrainingConfig
from assets.post_training_model import post_training_model_assets
from assets.resources import CrawlSource, DataConfigResource, LakeResource, SparkResource
from assets.tokens import token_assets
from assets.training import TrainingLauncher, training_assets
from pipelines.samplecrawl import generate_crawl

pytestmark = pytest.mark.slow   # a few minutes on two shared cores: the whole chain, twice DeepSpeed
ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = ["model.n_layer=2", "model.n_embd=64", "model.n_head=2", "model.block_size=128", "train.steps=6",
            "train.batch_tokens=1024", "train.micro_batch=8", "train.warmup_steps=1", "eval.every=3",
            "eval.val_tokens=512", "eval.sample_every=0", "checkpoint.every=0"]
SFT = ["train.steps=4", "train.batch_tokens=1024", "train.micro_batch=4", "train.warmup_steps=1", "eval.every=2",
       "eval.val_tokens=512", "eval.sample_every=0", "checkpoint.every=0", "checks.protocol_prompts=4",
       "checks.protocol_max_tokens=16"]
SUITE = """samples: 2
max_tokens: 16
reasoning_items: 2
protocol_prompts: 4
protocol_max_tokens: 16
probes: 3
probe_max_tokens: 6
mc_items: 4
bpb_tokens: 1024
"""


def _mixture(root: Path) -> Path:
    """A small SFT mixture (identity and step-by-step arithmetic, train and val), as sft_mixture writes it."""
    from training.conversations.dataset import write_conversations
    from training.conversations.identity import Identity, identity_conversations
    from training.conversations.reasoning import SOURCE, draw_problems, to_conversation
    from training.conversations.dataset import content_id
    rng = random.Random(0)
    rows = identity_conversations(Identity("crawl2chat", "the team", "web pages", "January 2099"), 40)
    for p in draw_problems(40, seed=0, tool_fraction=0.0):
        messages = to_conversation(p, rng, tool_output=str(p.answer))   # what the sandbox prints for a tool answer
        rows.append({"id": content_id(SOURCE, messages), "source": SOURCE, "messages": messages})
    write_conversations([{**r, "split": "train"} for r in rows[4:]], root / "train")
    write_conversations([{**r, "split": "val"} for r in rows[:4]], root / "val")
    return root


def _meta(instance, key: str):
    return instance.get_latest_materialization_event(dg.AssetKey(key)).asset_materialization.metadata


def test_models_evaluated_and_report_card_from_real_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("CRAWL2CHAT_MODEL_CACHE", str(tmp_path / "cache"))
    generate_crawl(tmp_path / "source", pages=120, seed=4, files=1)
    (tmp_path / "dagster_home").mkdir()
    instance = dg.DagsterInstance.local_temp(str(tmp_path / "dagster_home"))
    tracker = MLflowTracker(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                            artifact_root=str(tmp_path / "mlartifacts"))
    (tmp_path / "suite.yaml").write_text(SUITE)
    resources = {"lake": LakeResource(root=str(tmp_path / "lake")),
                 "source": CrawlSource(base_url=str(tmp_path / "source")),
                 "spark": SparkResource(master="local[2]"),
                 "data_config": DataConfigResource(config_file=str(ROOT / "pipelines/configs/demo.yaml")),
                 "mlflow_tracker": tracker, "launcher": TrainingLauncher(overrides=PRETRAIN, sft_overrides=SFT),
                 "pipes_subprocess_client": dg.PipesSubprocessClient(), "post_training": PostTrainingConfig(),
                 "evaluation": EvalSettings(config_file=str(tmp_path / "suite.yaml"))}
    everything = [*data_assets, *token_assets, *training_assets, *post_training_model_assets, *evaluation_assets]
    assert dg.materialize(everything, selection=["crawl_manifest"], instance=instance, resources=resources).success
    for key in instance.get_dynamic_partitions(warc_batches.name):
        assert dg.materialize(everything, selection=["warc_files", "extracted_text", "filtered_text"],
                              partition_key=key, instance=instance, resources=resources).success
    assert dg.materialize(everything, selection=["deduped_text", "clean_text", "tokenizer", "token_shards",
                                                 "base_model"], instance=instance, resources=resources).success
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "sft_mixture", metadata={"path": dg.MetadataValue.path(str(_mixture(tmp_path / "mixture")))}))
    # four SFT steps do not teach the protocol: the blocking check fails (no `candidate` alias), the
    # version is registered all the same, and it is what the evaluation must score
    dg.materialize(everything, selection=["chat_model"], instance=instance, resources=resources, raise_on_error=False)
    assert mlflow.MlflowClient(tracker.tracking_uri).get_model_version("crawl2chat-chat", "1").tags["base_model"] \
        == "crawl2chat-base/1"

    # the sensor sees two versions without an evaluation
    sensor_resources = {"mlflow_tracker": tracker, "evaluation": resources["evaluation"]}
    with dg.build_sensor_context(instance=instance, resources=sensor_resources) as ctx:
        request = new_model_versions(ctx)
    assert request.run_key == "evals:crawl2chat-base/1,crawl2chat-chat/1"

    result = dg.materialize(everything, selection=["model_evals", "report_card"], instance=instance,
                            resources=resources)
    assert result.success
    evals = _meta(instance, "model_evals")
    assert evals["evaluated"].value == ["crawl2chat-base/1", "crawl2chat-chat/1"]
    client = mlflow.MlflowClient(tracker.tracking_uri)
    for name, tasks in (("crawl2chat-base", {"bpb", "mc_clean_text"}),
                        ("crawl2chat-chat", {"bpb", "mc_clean_text", "protocol", "identity", "arithmetic",
                                             "arithmetic_no_tools", "counting", "spelling", "knowledge"})):
        version = client.get_model_version(name, "1")
        run = client.get_run(version.tags["eval_run_id"])                       # found from the version
        assert run.data.tags["model_version"] == f"{name}/1" and run.data.tags["model_run_id"] == version.run_id
        assert client.get_experiment(run.info.experiment_id).name == "crawl2chat/evaluation"
        [found] = client.search_runs([run.info.experiment_id], f"tags.model_version = '{name}/1'")
        assert found.info.run_id == run.info.run_id
        assert {k.split("/")[0] for k in run.data.metrics} >= tasks and all(f"{t}/score" in run.data.metrics
                                                                          for t in tasks)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evals")}
        assert {f"evals/{t}.jsonl" for t in tasks} <= artifacts
        path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="evals/bpb.jsonl",
                                                   tracking_uri=tracker.tracking_uri, dst_path=str(tmp_path / name))
        lines = [json.loads(line) for line in Path(path).read_text().splitlines()]
        assert len(lines) == run.data.metrics["bpb/n"] and all(r["bytes"] > 0 for r in lines)

    with dg.build_sensor_context(instance=instance, resources=sensor_resources) as ctx:
        assert isinstance(new_model_versions(ctx), dg.SkipReason)                  # nothing new to evaluate

    # the card: every section from the runs above
    card_meta = _meta(instance, "report_card")
    assert card_meta["lineage"].value == "crawl2chat-base/1 -> crawl2chat-chat/1"
    html = Path(card_meta["cards"].value["crawl2chat-base-v1_crawl2chat-chat-v1"])
    card = html.with_name("report.md").read_text()
    assert html.read_text().count("<table>") >= 5
    for section in ("## Summary", "## Crawl", "## Tokenizer", "## Pretraining (`crawl2chat-base/1`)",
                    "## SFT (`crawl2chat-chat/1`)", "## Environment"):
        assert section in card, section
    assert "## RL\n\nHas not run" in card and "## RLHF\n\nHas not run" in card
    assert "not logged" not in card and "not evaluated" not in card, card
    assert {p.name for p in html.parent.glob("*.png")} == {"funnel.png", "base_loss.png", "sft_loss.png"}
    assert "data:image/png;base64," in card_meta["report"].value

    base_run = client.get_run(client.get_model_version("crawl2chat-base", "1").run_id)
    tok_runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  "tags.`dagster.asset_key` = 'tokenizer'")
    n_params = int(base_run.data.params["pretrain.n_params"])
    assert f"| parameters | {n_params:,} |" in card
    assert f"vocabulary: {int(tok_runs[0].data.metrics['vocab_size']):,} tokens" in card
    clean = client.search_runs([e.experiment_id for e in client.search_experiments()],
                               "tags.`dagster.asset_key` = 'clean_text'")[0]
    assert f"documents out (clean_text): {int(clean.data.metrics['pii.docs_out']):,}" in card
    assert re.search(r"WARC files: 1 \([\d,]+ bytes\)", card)
    assert "| bpb | bits per byte (lower is better) |" in card
    bpb = client.get_run(client.get_model_version("crawl2chat-chat", "1").tags["eval_run_id"]).data.metrics["bpb/score"]
    assert f"{bpb:.4g}" in card.split("## Crawl")[0]
    assert "MFU | n/a (CPU run" in card

    # attached to the MLflow model versions
    for name in ("crawl2chat-base", "crawl2chat-chat"):
        assert client.get_model_version(name, "1").tags["report_card"].endswith("/report_card/report.md")
    chat = client.get_model_version("crawl2chat-chat", "1")
    assert chat.description.startswith("Report card: runs:/" + chat.tags["eval_run_id"])
    assert "report_card/report.html" in {a.path for a in client.list_artifacts(chat.tags["eval_run_id"], "report_card")}

    # the CLI writes the same card
    from pipelines.cli import main
    assert main(["report", "--out", str(tmp_path / "cli"), "--tracking-uri", tracker.tracking_uri]) == 0
    again = (tmp_path / "cli" / html.parent.name / "report.md").read_text()
    assert again.split("Generated")[0] == card.split("Generated")[0] and "## Crawl" in again
