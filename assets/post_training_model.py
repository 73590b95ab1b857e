"""The chat model: SFT of the registered base model on the SFT mixture, launched like pretraining.

    base_model (crawl2chat-base@candidate) + sft_mixture -> chat_model   lake/models/chat/<run>/
                                                                         MLflow model crawl2chat-chat

The same TrainingLauncher and Pipes launch as base_model (assets/training.py), with the `sft` job
(training/sft.py on training/trainer.py). The base version is pinned when the run starts (the alias
could move meanwhile) and recorded with the mixture's digest: the MLflow run lists the mixture as a
dataset input and carries the base version as tags, and so does the registered chat version.
The blocking check samples held-out prompts (the val split's opening user turns and the generators'
held-out prompts, none in any training conversation, stratified by source) through the inference engine; the alias `candidate` moves to the new version only when it passes, so `make chat`
never switches to a model that breaks the protocol.
"""
import math
from pathlib import Path

import dagster as dg

from assets.lineage import MLflowTracker
from assets.post_training import sft_mixture
from assets.resources import LakeResource
from assets.training import BASE_MODEL_NAME, GPU_JOB_TAGS, TrainingLauncher, base_model, launch, register
from pipelines.io import dir_digest

GROUP = "post_training"
CHAT_MODEL_NAME = "crawl2chat-chat"
PROTOCOL = "chat_protocol_adherence"


def _mixture_path(context: dg.AssetExecutionContext) -> Path:
    event = context.instance.get_latest_materialization_event(sft_mixture.key)
    if event is None or event.asset_materialization is None:
        raise dg.Failure("materialize `sft_mixture` first (job post_training_data)")
    return Path(event.asset_materialization.metadata["path"].value)


def _pin_base(tracker: MLflowTracker):
    """The base model version the alias points at now."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    try:
        return MlflowClient(tracker.tracking_uri).get_model_version_by_alias(BASE_MODEL_NAME, "candidate")
    except MlflowException as e:
        raise dg.Failure(f"no {BASE_MODEL_NAME}@candidate in the registry at {tracker.tracking_uri}: "
                         "materialize `base_model` first") from e


def _evaluate(export: Path, mixture: Path, cfg: dict, config_file: str, lake_root: str) -> tuple[dict, dict]:
    """Protocol adherence on held-out prompts and the identity-name rate, sampled through the engine
    with the tools a served model has (the sandboxed python, and search where the lake has an index:
    a model trained to search that meets "unknown tool" never ends its turn)."""
    from training.conversations.config import load_data_config
    from training.conversations.identity import identity_questions
    from training.engine.engine import Engine
    from training.engine.search import latest_index
    from training.engine.tools import default_tools
    from training.conversations.heldout import gate_prompts, generator_heldout_prompts
    from training.sft import load_conversations, name_rate, protocol_adherence
    c = cfg["checks"]
    engine = Engine.load(export, tools=default_tools(latest_index(lake_root)))
    # The gate's prompts: opening turns of the val split and the generators' held-out prompts, minus
    # every prompt any training conversation holds (normalized-text hash), stratified by source so
    # user-supplied conversations are always among them (training/conversations/heldout.py).
    # Sample size for the decision "adherence >= 0.99": 64 prompts x 10 samples = 640 replies, pass
    # at <= 6 failures. Binomial (replies independent): a model at 0.98 passes 2.8% of the time, at
    # 0.97 0.04%; a model at 0.995 fails 4.4% of the time, one at exactly 0.99 46%. Samples of one
    # prompt are correlated, so the effective n lies between 640 and 64; at 64 (a prompt's samples all
    # alike) a pass needs all 64: a model at 0.95 still passes only 3.8%, at 0.98 27%, and one at
    # 0.995 fails 27%. Either way the strong side is a bad model not passing, as a gate on
    # `candidate` should be; more prompts (checks.protocol_prompts) buy the rest.
    gate, sources = gate_prompts(load_conversations(mixture, "train"), load_conversations(mixture, "val"),
                                 c["protocol_prompts"], extra=generator_heldout_prompts())
    prompts = gate * c["protocol_samples"]   # the engine seeds row i with seed + i: distinct samples
    protocol = protocol_adherence(engine, prompts, c["protocol_max_tokens"], c["protocol_temperature"])
    protocol["sources"] = sources
    heldout = identity_questions("heldout")
    name = load_data_config(config_file, overrides=cfg.get("data")).identity.name
    identity = name_rate(engine, heldout["name"] + heldout["who"], name, c["protocol_max_tokens"],
                         temperature=c["protocol_temperature"])
    return protocol, {**identity, "name": name}


@dg.asset(group_name=GROUP, code_version="1", kinds={"deepspeed", "pytorch", "mlflow"},
          deps=[base_model, sft_mixture],
          check_specs=[dg.AssetCheckSpec(PROTOCOL, asset="chat_model", blocking=True,
                                         description="on held-out prompts sampled through the engine, the model "
                                                     "ends its turn with <|im_end|> within the token limit and never "
                                                     "writes a user/system header (rate >= checks.protocol_adherence_min)")])
def chat_model(context: dg.AssetExecutionContext, lake: LakeResource, launcher: TrainingLauncher,
               pipes_subprocess_client: dg.PipesSubprocessClient,
               mlflow_tracker: MLflowTracker) -> dg.MaterializeResult:
    """The assistant: the base model fine-tuned on the SFT mixture with DeepSpeed (loss on assistant
    tokens), exported as safetensors and registered in MLflow as `crawl2chat-chat` (alias `candidate`
    when the protocol check passes)."""
    import mlflow

    cfg = launcher.load_config("sft")
    config_file, overrides = launcher.job_config("sft")
    mixture = _mixture_path(context)
    base = _pin_base(mlflow_tracker)
    base_ref = f"{BASE_MODEL_NAME}/{base.version}"
    mixture_digest = dir_digest(mixture)
    lineage = {"base_model": base_ref, "base_model_run_id": base.run_id, "sft_mixture_digest": mixture_digest}
    out = Path(lake.root) / "models" / "chat" / context.run_id[:8]
    params = {"launcher": launcher.mode, "processes": launcher.processes, "config_file": config_file,
              "overrides": " ".join(overrides), "init_from": base_ref}
    with mlflow_tracker.start_run(context, params, [("sft_mixture", str(mixture), mixture_digest)]) as run:
        mlflow.set_tags(lineage)
        result, history = launch(context, launcher, pipes_subprocess_client, mlflow_tracker.tracking_uri, run,
                                 "sft", ["--data", str(mixture), "--init-from", base_ref], out)
        vals = [h["val/loss"] for h in history if h.get("val/loss") is not None]
        if not vals or not all(math.isfinite(v) for v in vals):
            raise dg.Failure(f"SFT validation loss missing or not finite: {vals} (is the val split empty?)")
        export = out / "export"
        protocol, identity = _evaluate(export, mixture, cfg, config_file, lake.root)
        threshold = float(cfg["checks"]["protocol_adherence_min"])
        passed = protocol["rate"] is not None and protocol["rate"] >= threshold
        mlflow.log_metrics({k: v for k, v in {"protocol_adherence": protocol["rate"],
                                              "identity_name_rate": identity["rate"]}.items() if v is not None})
        version = register(mlflow_tracker, run, export, CHAT_MODEL_NAME, "crawl2chat chat models (SFT)",
                           tags={**lineage, "protocol_adherence": protocol["rate"], "check_passed": passed},
                           alias="candidate" if passed else None)
    check = dg.AssetCheckResult(check_name=PROTOCOL, passed=passed, metadata={
        "rate": protocol["rate"], "threshold": threshold, "prompts": protocol["prompts"],
        "adherent": protocol["adherent"], "opened_a_turn": protocol.get("opened_a_turn"),
        "no_im_end": protocol.get("no_im_end"), "skipped_long": protocol["skipped_long"],
        "max_tokens": cfg["checks"]["protocol_max_tokens"], "prompt_sources": dg.MetadataValue.json(protocol["sources"]),
        "failures": dg.MetadataValue.json(protocol.get("examples", []))})
    metadata = dict(result.metadata or {})
    metadata.update({"path": dg.MetadataValue.path(str(out)), "export": dg.MetadataValue.path(str(export)),
                     "model_version": f"{CHAT_MODEL_NAME}/{version}",
                     "candidate": passed, "base_model": base_ref, "sft_mixture": dg.MetadataValue.path(str(mixture)),
                     "sft_mixture_digest": mixture_digest, "first_val_loss": vals[0],
                     "protocol_adherence": protocol["rate"], "identity_name_rate": identity["rate"],
                     "identity": dg.MetadataValue.json(identity),
                     "talk_to_it": dg.MetadataValue.md(f"`make chat MODEL={CHAT_MODEL_NAME}@candidate` in a terminal, "
                                                       f"`make serve MODEL={CHAT_MODEL_NAME}@candidate` for the "
                                                       "OpenAI-compatible API"),
                     "mlflow_run": dg.MetadataValue.url(mlflow_tracker.run_url(run))})
    return dg.MaterializeResult(metadata=metadata, check_results=[check],
                                data_version=dg.DataVersion(dir_digest(export / "model.safetensors")[:32]))


post_training_model_assets = [chat_model]
post_train = dg.define_asset_job(
    "post_train", executor_def=dg.in_process_executor, tags=GPU_JOB_TAGS,
    # RL / RLHF share the group but have their own job (`rl`, assets/rl.py): the demo stops at SFT
    selection=dg.AssetSelection.groups(GROUP) - dg.AssetSelection.assets(
        "rl_model", "preference_pairs", "reward_model", "rlhf_model"),
    description="The SFT data (user files, identity, reasoning, knowledge probes, the mixture), then SFT of "
                "crawl2chat-base@candidate into crawl2chat-chat.")
