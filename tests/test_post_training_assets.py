"""The post_training group materialized by Dagster on a tiny setup: a small clean_text dataset in the
lake, the tiny exported model recorded as the base_model materialization (what `base_model` records
after pretraining), a real search_index, a user file; then every post-training data asset runs for
real (engine sampling, python sandbox, SQLite search, MLflow runs)."""
import json
from pathlib import Path

import dagster as dg
import mlflow
import pytest

from engine_fixtures import tiny_export, tiny_tokenizer_dir  # noqa: F401  (fixtures)
from assets.lineage import MLflowTracker
from assets.post_training import PostTrainingConfig, post_training_assets
from assets.resources import CrawlSource, DataConfigResource, LakeResource
from assets.serving import search_index
from pipelines.document import Document
from pipelines.io import ParquetSink
from training.conversations.dataset import check_trainable, read_conversations, read_table_dataset

pytestmark = pytest.mark.slow   # ~20-40 s on two shared cores: eight assets, MLflow, the sandbox
CRAWL = "CC-MAIN-2024-10"
DEMO_DATA_CONFIG = Path(__file__).resolve().parents[1] / "pipelines" / "configs" / "demo.yaml"
TEXTS = ["The old stone bridge over the river Wye was finished in 1850 after ten years of work. "
         "Its three arches span about 120 metres of water.",
         "The town library on the main square now holds 12,500 books and maps. The first mayor of the "
         "little harbour town was Margaret Ellison, a ship owner.",
         "The annual harvest festival in the valley draws 3,400 visitors each autumn. Farmers bring apples, "
         "pears and cheese, and the bakery sells bread and cakes."]


def _setup(root: Path, export: Path):
    clean = root / "lake" / "crawls" / CRAWL / "clean"
    sink = ParquetSink(clean / "part-00000.parquet")
    for i, text in enumerate(TEXTS * 2):
        sink.write(Document(text, f"doc-{i}", {"url": f"https://www.town{i}.example/page"}))
    sink.close()
    user = root / "user.jsonl"
    user.write_text("\n".join([
        json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}),
        json.dumps({"messages": [{"role": "user", "content": "no answer"}]}),
        json.dumps({"conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]})]) + "\n")
    config = root / "sft.yaml"
    config.write_text(f"""
train: {{steps: 1}}   # the trainer's sections are not ours: ignored here
data:
  user: {{paths: ["{user}"]}}
  identity: {{name: Ada, creator: the lake team, conversations: 30}}
  reasoning: {{conversations: 12, heldout: 4, tool_fraction: 0.3}}
  general: {{conversations: 20, heldout: 4}}
  probes: {{max_probes: 6, samples: 2, max_tokens: 6, per_doc: 3}}
  mixture: {{rows: 80, val_fraction: 0.1, pretrain_fraction: 0.2}}
""")
    (root / "dagster_home").mkdir()
    instance = dg.DagsterInstance.local_temp(str(root / "dagster_home"))
    # what `base_model` records: the export directory of the pretrained model
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "base_model", metadata={"export": dg.MetadataValue.path(str(export))}))
    tracker = MLflowTracker(tracking_uri=f"sqlite:///{root / 'mlflow.db'}", artifact_root=str(root / "mlartifacts"))
    resources = {"lake": LakeResource(root=str(root / "lake")), "source": CrawlSource(crawl=CRAWL),
                 "mlflow_tracker": tracker, "post_training": PostTrainingConfig(config_file=str(config)),
                 "data_config": DataConfigResource(config_file=str(DEMO_DATA_CONFIG))}
    return instance, tracker, resources


def _meta(instance, key):
    return instance.get_latest_materialization_event(dg.AssetKey(key)).asset_materialization.metadata


def test_post_training_assets_materialize(tmp_path, tiny_export):
    instance, tracker, resources = _setup(tmp_path, tiny_export)
    everything = [search_index, *post_training_assets]
    assert dg.materialize(everything, selection=["search_index"], instance=instance, resources=resources).success
    result = dg.materialize(everything, selection=[a.key.to_user_string() for a in post_training_assets],
                            instance=instance, resources=resources)
    assert result.success
    lake = tmp_path / "lake" / "post_training"
    assert sorted(p.name for p in lake.iterdir()) == sorted(a.key.to_user_string() for a in post_training_assets)

    user = _meta(instance, "user_conversations")
    assert (user["kept"].value, user["rejected"].value, user["rows_read"].value) == (2, 1, 3)
    [bad] = read_table_dataset(lake / "user_conversations" / "rejected")
    assert bad["line"] == 2 and "no assistant message" in bad["reason"]

    ident = _meta(instance, "identity_conversations")
    assert ident["name"].value == "Ada" and ident["knowledge_cutoff"].value == "March 2024"
    assert ident["rows"].value == 30 and ident["heldout"].value > 0
    assert (lake / "identity_conversations" / "heldout_questions.json").exists()

    reasoning = _meta(instance, "reasoning_conversations")
    assert reasoning["rows"].value == 12 and reasoning["word_source"].value == "corpus"

    general = _meta(instance, "general_conversations")
    assert general["rows"].value == 20 and general["heldout"].value == 4 and general["corpus_words"].value > 0

    probes = _meta(instance, "knowledge_probes")
    assert probes["probes"].value == 6 and probes["model"].value == str(tiny_export)
    assert probes["knows"].value + probes["does_not_know"].value + probes["mixed"].value == 6
    assert abs(probes["knows_rate"].value + probes["does_not_know_rate"].value + probes["mixed_rate"].value - 1) < 1e-9
    outcomes = read_table_dataset(lake / "knowledge_probes" / "probes")
    assert all(len(r["samples"]) == 2 == len(r["judgments"]) for r in outcomes)

    idk = _meta(instance, "idk_conversations")
    counts = idk["counts"].value
    assert counts["probe_idk"] == probes["does_not_know"].value >= 1
    assert counts["probe_idk_search"] == counts["probe_idk"]     # the search index was there
    assert "search variant" in idk["note"].value

    mixture = _meta(instance, "sft_mixture")
    train = list(read_conversations(mixture["train"].value))
    val = list(read_conversations(mixture["val"].value))
    assert len(train) == mixture["train_rows"].value == 80 and {r["split"] for r in train} == {"train"}
    assert {r["split"] for r in val} <= {"val"} and not {r["id"] for r in val} & {r["id"].split("#")[0] for r in train}
    assert set(mixture["sources"].value) == {"user_conversations", "identity_conversations",
                                             "reasoning_conversations", "idk_conversations", "general_conversations"}
    assert mixture["pretrain"].value["fraction"] == 0.2 and mixture["pretrain"].value["documents"] > 0
    assert {r["id"] for r in read_table_dataset(Path(mixture["path"].value) / "pretrain")} <= {f"doc-{i}" for i in range(6)}
    # the text mixed in is the token shards' train split, by the data config's split (demo: 5%), not 1%
    assert json.loads((Path(mixture["path"].value) / "pretrain.json").read_text())["val_fraction"] == 0.05
    for r in train + val:
        check_trainable(r["messages"])
    assert {r["source"] for r in train} >= {"user:user.jsonl", "identity", "reasoning", "probe_idk"}

    client = mlflow.MlflowClient(tracker.tracking_uri)
    run = client.get_run(mixture["mlflow_run_id"].value)
    assert run.data.tags["dagster.asset_key"] == "sft_mixture" and run.data.metrics["train_rows"] == 80
    assert sorted(d.dataset.name for d in run.inputs.dataset_inputs) == sorted([*mixture["sources"].value, "clean_text"])
    probe_run = client.get_run(probes["mlflow_run_id"].value)
    assert sorted(d.dataset.name for d in probe_run.inputs.dataset_inputs) == ["base_model", "clean_text"]

    # the same inputs again: the same mixture (stable ids, order and split)
    again = dg.materialize(everything, selection=["sft_mixture"], instance=instance, resources=resources)
    assert again.success and [r["id"] for r in read_conversations(mixture["train"].value)] == [r["id"] for r in train]


def test_without_user_files_the_user_dataset_is_empty_with_a_note(tmp_path, tiny_export):
    instance, _, resources = _setup(tmp_path, tiny_export)
    (tmp_path / "sft.yaml").write_text("data: {}\n")
    assert dg.materialize(post_training_assets, selection=["user_conversations"], instance=instance,
                          resources=resources).success
    meta = _meta(instance, "user_conversations")
    assert meta["rows"].value == 0 and "no user files configured" in meta["note"].value
