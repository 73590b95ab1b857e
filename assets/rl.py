"""RL and RLHF (group post_training): the chat model practises verifiable problems, and learns from
preferences through a reward model.

    chat_model (crawl2chat-chat@candidate) + a task set         -> rl_model        MLflow model crawl2chat-rl
    chat_model + user pairs + generated pairs                  -> preference_pairs
    chat_model + preference_pairs                              -> reward_model    MLflow model crawl2chat-rm
    chat_model + reward_model + preference_pairs (prompts)     -> rlhf_model      MLflow model crawl2chat-rlhf

Every training asset launches its job (training/rl/) like chat_model launches SFT: the TrainingLauncher,
Dagster Pipes, the asset's MLflow run continued by the trainer. The chat version is pinned when the
run starts and recorded as a tag on the run and on the registered version (with the reward model's
version and the pairs' digest where they are inputs), so each model traces back to its parents.
Blocking checks move the alias `candidate` only when they pass: held-out pass@1 of rl_model not
below the starting chat model's (same problems and seeds); reward-model pairwise accuracy on
held-out pairs above chance by a margin; the RLHF policy's final KL to the chat model within rl.kl_max.
"""
import json
from pathlib import Path

import dagster as dg

from assets.lineage import MLflowTracker
from assets.post_training_model import CHAT_MODEL_NAME, chat_model
from assets.resources import LakeResource
from assets.training import GPU_JOB_TAGS, TrainingLauncher, launch, register
from pipelines.io import dir_digest
from training.rl.gates import last, rl_gate, rlhf_gate

GROUP = "post_training"
RL_NAME, RM_NAME, RLHF_NAME = "crawl2chat-rl", "crawl2chat-rm", "crawl2chat-rlhf"
RL_CHECK, RM_CHECK, KL_CHECK = "heldout_pass_at_1_not_below_chat", "rm_pairwise_accuracy_above_chance", \
    "rlhf_kl_within_bound"


def _pin_chat(tracker: MLflowTracker):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    try:
        return MlflowClient(tracker.tracking_uri).get_model_version_by_alias(CHAT_MODEL_NAME, "candidate")
    except MlflowException as e:
        raise dg.Failure(f"no {CHAT_MODEL_NAME}@candidate in the registry at {tracker.tracking_uri}: "
                         "materialize `chat_model` first") from e


def _download(tracker: MLflowTracker, version, cache: Path) -> Path:
    """A registered version's export (its run's `model` artifacts), downloaded once into `cache`."""
    import mlflow
    dest = cache / f"{version.name}-v{version.version}-{version.run_id[:12]}"
    if not (dest / "model" / "model.safetensors").exists():
        dest.mkdir(parents=True, exist_ok=True)
        mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path="model", dst_path=str(dest),
                                            tracking_uri=tracker.tracking_uri)
    return dest / "model"


def _latest(context: dg.AssetExecutionContext, key: str, field: str) -> Path:
    event = context.instance.get_latest_materialization_event(dg.AssetKey(key))
    if event is None or event.asset_materialization is None:
        raise dg.Failure(f"materialize `{key}` first")
    return Path(event.asset_materialization.metadata[field].value)


def _train(context, lake, launcher, client, tracker, job: str, args: list[str], lineage: dict,
           inputs: list, name: str, description: str, check) -> tuple:
    """Launch `job`, evaluate `check(history, summary) -> (passed, check metadata)`, register the export
    as `name` (alias candidate only when the check passed). Returns (metadata, history, summary, out,
    passed, check metadata)."""
    import mlflow
    config_file, overrides = launcher.job_config(job)
    out = Path(lake.root) / "models" / job / context.run_id[:8]
    params = {"launcher": launcher.mode, "processes": launcher.processes, "config_file": config_file,
              "overrides": " ".join(overrides), **lineage}
    with tracker.start_run(context, params, inputs) as run:
        mlflow.set_tags(lineage)
        result, history = launch(context, launcher, client, tracker.tracking_uri, run, job, args, out)
        summary = json.loads((out / "summary.json").read_text())
        passed, check_meta = check(history, summary)
        mlflow.log_metrics({k: float(v) for k, v in check_meta.items() if isinstance(v, (int, float)) and v is not None})
        version = register(tracker, run, out / "export", name, description, tags={**lineage, "check_passed": passed},
                           alias="candidate" if passed else None)
    metadata = dict(result.metadata or {})
    metadata.update({"path": dg.MetadataValue.path(str(out)), "export": dg.MetadataValue.path(str(out / "export")),
                     "model_version": f"{name}/{version}", "candidate": passed, **lineage,
                     "stopped_early": summary.get("stopped_early") or "",
                     "mlflow_run": dg.MetadataValue.url(tracker.run_url(run))})
    return metadata, history, summary, out, passed, check_meta


def _result(metadata: dict, out: Path, check_name: str, passed: bool, check_meta: dict) -> dg.MaterializeResult:
    check = dg.AssetCheckResult(check_name=check_name, passed=passed,
                                metadata={k: v for k, v in check_meta.items() if v is not None})
    return dg.MaterializeResult(metadata=metadata, check_results=[check],
                                data_version=dg.DataVersion(dir_digest(out / "export" / "model.safetensors")[:32]))


@dg.asset(group_name=GROUP, code_version="1", kinds={"deepspeed", "pytorch", "mlflow"}, deps=[chat_model],
          check_specs=[dg.AssetCheckSpec(RL_CHECK, asset="rl_model", blocking=True,
                                         description="held-out pass@1 after RL above the chat model's before it "
                                                     "beyond its 95% interval (same problems, same seeds)")])
def rl_model(context: dg.AssetExecutionContext, lake: LakeResource, launcher: TrainingLauncher,
             pipes_subprocess_client: dg.PipesSubprocessClient, mlflow_tracker: MLflowTracker) -> dg.MaterializeResult:
    """The chat model after GRPO on a verifiable task set (rl.task): rewards from exact checkers,
    registered as `crawl2chat-rl`."""
    cfg = launcher.load_config("rl")
    task = cfg["rl"]["task"]
    chat = _pin_chat(mlflow_tracker)
    chat_ref = f"{CHAT_MODEL_NAME}/{chat.version}"
    lineage = {"chat_model": chat_ref, "chat_model_run_id": chat.run_id, "task": str(task)}

    def check(history, summary):
        return rl_gate(history, summary, int(cfg["rl"]["eval_samples"]))
    meta, history, summary, out, passed, cm = _train(
        context, lake, launcher, pipes_subprocess_client, mlflow_tracker, "rl",
        ["--data", str(task), "--init-from", chat_ref], lineage, [], RL_NAME, "crawl2chat chat models after RL on verifiable tasks (GRPO)", check)
    meta.update({"pass_at_1_before": cm["pass_at_1_before"], "pass_at_1_after": cm["pass_at_1_after"],
                 "reward_curve": dg.MetadataValue.json([round(h["rl/reward"], 4) for h in history if "rl/reward" in h])})
    return _result(meta, out, RL_CHECK, passed, cm)


@dg.asset(group_name=GROUP, code_version="1", kinds={"pytorch", "parquet"}, deps=[chat_model])
def preference_pairs(context: dg.AssetExecutionContext, lake: LakeResource, launcher: TrainingLauncher,
                     mlflow_tracker: MLflowTracker) -> dg.MaterializeResult:
    """{prompt, chosen, rejected} pairs: the user's files (pairs.paths, validated, rejects aside in
    rejected.jsonl) and pairs generated from a verifiable task with the chat model's own samples."""
    import mlflow

    from training.engine.engine import Engine
    from training.rl.preferences import generated_pairs, user_pairs, write_pairs
    cfg = launcher.load_config("rlhf")
    p = cfg["pairs"]
    chat = _pin_chat(mlflow_tracker)
    chat_ref = f"{CHAT_MODEL_NAME}/{chat.version}"
    out = Path(lake.root) / "post_training" / "preference_pairs"
    with mlflow_tracker.start_run(context, {"pairs": p, "chat_model": chat_ref}) as run:
        kept, rejected, user_stats = user_pairs(list(p["paths"]), float(p["heldout_fraction"])) if p["paths"] \
            else ([], [], {"rows": 0, "kept": 0, "rejected": 0, "reasons": {}})
        gen_stats = {}
        if p["task"]:
            engine = Engine.load(_download(mlflow_tracker, chat, Path(lake.root) / "models" / "registry_cache"),
                                 tools={} if p["task"] == "toy" else None)
            generated, gen_stats = generated_pairs(engine, p["task"], int(p["problems"]), int(p["samples"]),
                                                   int(p["max_tokens"]), float(p["temperature"]), int(p["max_words"]),
                                                   int(p["seed"]))
            kept += generated
        if not kept:
            raise dg.Failure("no preference pairs: set pairs.paths (user files) or pairs.task (generated)")
        write_pairs(kept, out, rejected)
        splits = {s: sum(r["split"] == s for r in kept) for s in ("train", "heldout")}
        mlflow.log_metrics({"pairs": len(kept), "train_pairs": splits["train"], "heldout_pairs": splits["heldout"],
                            "user_rejected": len(rejected)})
    digest = dir_digest(out / "pairs.parquet")
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(out)), "pairs": len(kept), **{f"{s}_pairs": n for s, n in splits.items()},
        "user": dg.MetadataValue.json(user_stats), "generated": dg.MetadataValue.json(gen_stats),
        "chat_model": chat_ref, "digest": digest, "examples": dg.MetadataValue.json(kept[:3]),
        "mlflow_run": dg.MetadataValue.url(mlflow_tracker.run_url(run))}, data_version=dg.DataVersion(digest[:32]))


@dg.asset(group_name=GROUP, code_version="1", kinds={"deepspeed", "pytorch", "mlflow"},
          deps=[chat_model, preference_pairs],
          check_specs=[dg.AssetCheckSpec(RM_CHECK, asset="reward_model", blocking=True,
                                         description="held-out pairwise accuracy >= 0.5 + checks.rm_accuracy_margin")])
def reward_model(context: dg.AssetExecutionContext, lake: LakeResource, launcher: TrainingLauncher,
                 pipes_subprocess_client: dg.PipesSubprocessClient, mlflow_tracker: MLflowTracker) -> dg.MaterializeResult:
    """The chat model with a scalar head trained on the preference pairs (-log σ(r_chosen - r_rejected)),
    registered as `crawl2chat-rm`."""
    cfg = launcher.load_config("rm")
    margin = float(cfg["checks"]["rm_accuracy_margin"])
    pairs = _latest(context, "preference_pairs", "path")
    digest = dir_digest(pairs / "pairs.parquet")
    chat = _pin_chat(mlflow_tracker)
    chat_ref = f"{CHAT_MODEL_NAME}/{chat.version}"
    lineage = {"chat_model": chat_ref, "chat_model_run_id": chat.run_id, "preference_pairs_digest": digest}

    def check(history, summary):
        acc = last(history, "rm/accuracy")
        return acc is not None and acc >= 0.5 + margin, {
            "accuracy": acc, "threshold": 0.5 + margin, "accuracy_before": summary.get("start_rm_accuracy"),
            "heldout_pairs": summary.get("heldout_pairs")}
    meta, _, _, out, passed, cm = _train(
        context, lake, launcher, pipes_subprocess_client, mlflow_tracker, "rm",
        ["--data", str(pairs), "--init-from", chat_ref], lineage, [("preference_pairs", str(pairs), digest)], RM_NAME, "crawl2chat reward models", check)
    meta.update({"accuracy": cm["accuracy"], "accuracy_before": cm["accuracy_before"]})
    return _result(meta, out, RM_CHECK, passed, cm)


@dg.asset(group_name=GROUP, code_version="1", kinds={"deepspeed", "pytorch", "mlflow"},
          deps=[chat_model, reward_model, preference_pairs],
          check_specs=[dg.AssetCheckSpec(KL_CHECK, asset="rlhf_model", blocking=True,
                                         description="the final policy's per-token KL to the chat model on "
                                                     "held-out prompts <= rl.kl_max, and its held-out reward-"
                                                     "model score above the chat model's")])
def rlhf_model(context: dg.AssetExecutionContext, lake: LakeResource, launcher: TrainingLauncher,
               pipes_subprocess_client: dg.PipesSubprocessClient, mlflow_tracker: MLflowTracker) -> dg.MaterializeResult:
    """The chat model optimised against the reward model with a per-token KL penalty, stopped early
    on the KL bound or a stalled held-out score; registered as `crawl2chat-rlhf`."""
    cfg = launcher.load_config("rlhf")
    bound = cfg["rl"]["kl_max"]
    pairs = _latest(context, "preference_pairs", "path")
    rm_export = _latest(context, "reward_model", "export")
    rm_version = context.instance.get_latest_materialization_event(
        dg.AssetKey("reward_model")).asset_materialization.metadata["model_version"].value
    digest = dir_digest(pairs / "pairs.parquet")
    chat = _pin_chat(mlflow_tracker)
    chat_ref = f"{CHAT_MODEL_NAME}/{chat.version}"
    lineage = {"chat_model": chat_ref, "chat_model_run_id": chat.run_id, "reward_model": rm_version,
               "preference_pairs_digest": digest}

    def check(history, summary):
        return rlhf_gate(history, summary, bound)
    meta, _, _, out, passed, cm = _train(
        context, lake, launcher, pipes_subprocess_client, mlflow_tracker, "rlhf",
        ["--data", str(pairs), "--reward-model", str(rm_export), "--init-from", chat_ref], lineage,
        [("preference_pairs", str(pairs), digest)], RLHF_NAME, "crawl2chat chat models after RLHF", check)
    meta.update({k: cm[k] for k in ("heldout_kl", "reward_before", "reward_after") if cm[k] is not None})
    return _result(meta, out, KL_CHECK, passed, cm)


rl_assets = [rl_model, preference_pairs, reward_model, rlhf_model]
rl_job = dg.define_asset_job(
    "rl", selection=dg.AssetSelection.assets(*rl_assets), executor_def=dg.in_process_executor, tags=GPU_JOB_TAGS,
    description="RL of crawl2chat-chat@candidate on a verifiable task (crawl2chat-rl), and RLHF: preference "
                "pairs, the reward model (crawl2chat-rm), the policy against it on a KL leash (crawl2chat-rlhf).")
