"""The evaluation group: every registered model version scored by the same suite, and report cards.

    crawl2chat-base / -chat / -rl / -rlhf versions -> model_evals   one MLflow evaluation run per version
    model_evals                                     -> report_card  lake/reports/<lineage>/report.{md,html}

`model_evals` evaluates the versions this suite (SUITE_VERSION + config) has not scored yet (all of
them with EvalSettings.reevaluate): each gets a child run of the asset's MLflow run in experiment
crawl2chat/evaluation with every score as a metric ("<task>/score", "<task>/pass_at_1", ...), the
per-example results as evals/<task>.jsonl, and the version gets the tag eval_run_id. The sensor
`new_model_versions` (assets/automation.py, STOPPED by default) requests the `evaluate` job when a
version appears that has no evaluation. The suite itself is training/evals/ (no Dagster there).
"""

import json
import os
from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import Field

from assets.lineage import MLflowTracker, git_sha
from assets.post_training import PostTrainingConfig
from assets.post_training_model import chat_model
from assets.resources import LakeResource
from assets.training import GPU_JOB_TAGS, base_model

GROUP = "evaluation"


def _paths(env_var: str) -> list[str]:
    return [p for p in os.environ.get(env_var, "").split(os.pathsep) if p]


class EvalSettings(dg.ConfigurableResource):
    """The eval suite's config file (training/evals/suite.py SuiteConfig fields; None: defaults) and
    user task files: multiple-choice JSONL {context, choices, gold}, GSM8K JSONL {question, answer};
    benchmarks_dir (CRAWL2CHAT_BENCHMARKS): ARC, HellaSwag, MMLU, GSM8K, HumanEval files
    (training/evals/benchmarks.py)."""

    config_file: Optional[str] = Field(default_factory=lambda: os.environ.get("CRAWL2CHAT_EVAL_CONFIG"))
    mc_paths: list[str] = Field(default_factory=lambda: _paths("CRAWL2CHAT_EVAL_MC"))
    gsm8k_paths: list[str] = Field(default_factory=lambda: _paths("CRAWL2CHAT_EVAL_GSM8K"))
    benchmarks_dir: Optional[str] = Field(default_factory=lambda: os.environ.get("CRAWL2CHAT_BENCHMARKS"))
    reevaluate: bool = False      # True: score every version again, not only the new ones

    def load(self):
        from training.evals.suite import load_suite_config
        extra = {k: v for k, v in {"mc_paths": self.mc_paths, "gsm8k_paths": self.gsm8k_paths,
                                   "benchmarks_dir": self.benchmarks_dir}.items() if v}
        return load_suite_config(self.config_file, extra)


def registry_client(tracker: MLflowTracker):
    """An MlflowClient on the tracker's registry; None when a SQLite registry does not exist yet."""
    from mlflow import MlflowClient
    uri = tracker.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return None
    return MlflowClient(uri, registry_uri=uri)


def _latest_path(context, key: str) -> Path | None:
    event = context.instance.get_latest_materialization_event(dg.AssetKey(key))
    meta = event.asset_materialization.metadata if event and event.asset_materialization else {}
    return Path(meta["path"].value) if "path" in meta and Path(meta["path"].value).exists() else None


def _scores_table(rows: dict[str, list]) -> str:
    """Markdown: one row per task, one column per evaluated version."""
    refs = list(rows)
    tasks = list(dict.fromkeys(t["task"] for ts in rows.values() for t in ts))
    lines = ["| task | " + " | ".join(refs) + " |", "|---|" + "---:|" * len(refs)]
    for task in tasks:
        cells = []
        for ref in refs:
            t = next((t for t in rows[ref] if t["task"] == task), None)
            ci = f" [{t['interval'][0]:.3f}, {t['interval'][1]:.3f}]" if t and t.get("interval") else ""
            cells.append("-" if t is None else "none" if t["score"] is None else f"{t['score']:.4f}{ci} n={t['n']}")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dg.asset(group_name=GROUP, code_version="1", kinds={"pytorch", "mlflow"}, deps=[base_model, chat_model])
def model_evals(context: dg.AssetExecutionContext, lake: LakeResource, post_training: PostTrainingConfig,
                evaluation: EvalSettings, mlflow_tracker: MLflowTracker) -> dg.MaterializeResult:
    """Scores of every registered crawl2chat model version (base, chat, rl, rlhf) on the eval suite:
    bits per byte, multiple choice, protocol, identity, arithmetic / counting / spelling with and
    without tools, knowledge probes, user GSM8K files; one MLflow evaluation run per version."""
    from training.engine.engine import Engine
    from training.engine.search import latest_index
    from training.engine.tools import default_tools
    from training.evals.registry import (TAG_RUN, eval_summary, export_dir, lineage_data, lineage_of,
                                         lineage_sft_mixture, log_evaluation, pending_versions,
                                         registered_versions)
    from training.evals.suite import SuiteInputs, build_suite, run_suite
    cfg = evaluation.load()
    client = registry_client(mlflow_tracker)
    if client is None:
        raise dg.Failure(f"no MLflow registry at {mlflow_tracker.tracking_uri}: materialize `base_model` first")
    versions, notes = registered_versions(client)
    todo = versions if evaluation.reevaluate else pending_versions(client, cfg.digest())
    probes_dir = Path(lake.root) / "post_training" / "knowledge_probes" / "probes"
    name = post_training.load().identity.name
    fallback_shards = _latest_path(context, "token_shards")
    with mlflow_tracker.start_run(context, {"suite": cfg.model_dump(), "suite_digest": cfg.digest()}) as parent:
        evaluated = {}
        for v in todo:
            chain = lineage_of(client, v)
            shards, clean, val_fraction = lineage_data(client, chain)
            inputs = SuiteInputs(shards or fallback_shards, clean, val_fraction or 0.01,
                                 probes_dir if probes_dir.exists() else None, name,
                                 sft_mixture=lineage_sft_mixture(client, chain) if v.kind == "chat" else None)
            tasks, task_notes = build_suite(cfg, inputs, v.kind)
            notes += [f"{v.ref}: {n}" for n in task_notes]
            context.log.info(f"evaluating {v.ref} ({v.stage}) on {len(tasks)} tasks")
            engine = Engine.load(export_dir(client, v), tools=default_tools(latest_index(lake.root)))  # as served
            results = run_suite(engine, tasks, cfg.seed, context.log.info)
            tags = {"eval_suite": cfg.digest(), "git_sha": git_sha(), "dagster.run_id": context.run_id,
                    "dagster.asset_key": "model_evals"}
            evaluated[v.ref] = log_evaluation(client, parent.info.experiment_id, v, results, cfg.model_dump(), tags,
                                              parent.info.run_id)
        current = {v.ref: evaluated.get(v.ref) or client.get_model_version(v.name, v.mv.version).tags.get(TAG_RUN)
                   for v in versions}
        summaries = {ref: eval_summary(client, rid)["tasks"] for ref, rid in current.items() if rid}
        import mlflow
        mlflow.log_metrics({"versions": len(versions), "evaluated": len(evaluated)})
        mlflow.log_dict({"evaluated": evaluated, "eval_runs": current, "notes": notes}, "evaluation.json")
    run_url = f"{mlflow_tracker.ui}/#/experiments/{parent.info.experiment_id}/runs/"
    return dg.MaterializeResult(
        metadata={"scores": dg.MetadataValue.md(_scores_table(summaries) if summaries else "no evaluated versions"),
                  "evaluated": dg.MetadataValue.json(sorted(evaluated)),
                  "eval_runs": dg.MetadataValue.json({ref: run_url + rid for ref, rid in current.items() if rid}),
                  "notes": dg.MetadataValue.json(notes), "suite_digest": cfg.digest(),
                  "mlflow_run": dg.MetadataValue.url(mlflow_tracker.run_url(parent)),
                  "mlflow_run_id": parent.info.run_id},
        data_version=dg.DataVersion(cfg.digest() + ":" + ",".join(sorted(f"{k}={v}" for k, v in current.items() if v))))


@dg.asset(group_name=GROUP, code_version="1", kinds={"mlflow", "markdown"}, deps=[model_evals])
def report_card(context: dg.AssetExecutionContext, lake: LakeResource,
                mlflow_tracker: MLflowTracker) -> dg.MaterializeResult:
    """One report card per lineage tree (crawl, tokenizer, pretraining, every post-training version, the
    eval summary across BASE/SFT/RL/RLHF side by side with intervals, the reward model, compute,
    environment), as Markdown + HTML + PNGs + JSON, attached to the MLflow evaluation run of the tree's
    deepest version; every version is tagged and described with links to its lineage."""
    from training.evals.report import attach, build_cards, inline_images
    client = registry_client(mlflow_tracker)
    if client is None:
        raise dg.Failure(f"no MLflow registry at {mlflow_tracker.tracking_uri}: materialize `base_model` first")
    out = Path(lake.root) / "reports"
    cards = build_cards(client, out)
    if not cards:
        raise dg.Failure("no registered crawl2chat model versions: materialize `base_model` first")
    attached = {c.slug: attach(client, c) for c in cards}
    latest = max(cards, key=lambda c: int(c.lineage[-1].mv.creation_timestamp))
    return dg.MaterializeResult(metadata={
        "report": dg.MetadataValue.md(inline_images(latest)),
        "lineage": " -> ".join(v.ref for v in latest.lineage),
        "cards": dg.MetadataValue.json({c.slug: str(c.directory / "report.html") for c in cards}),
        "report_json": dg.MetadataValue.json(json.loads(json.dumps(latest.data, default=str))),
        "attached_to_eval_runs": dg.MetadataValue.json(attached),
        "path": dg.MetadataValue.path(str(out))})


evaluation_assets = [model_evals, report_card]
evaluate = dg.define_asset_job("evaluate", selection=dg.AssetSelection.assets(*evaluation_assets),
                               executor_def=dg.in_process_executor, tags=GPU_JOB_TAGS,   # Engine.load: the GPU
                               description="Score the registered model versions that have no evaluation yet, "
                                           "then rebuild the report cards.")
