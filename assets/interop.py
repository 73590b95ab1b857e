"""Models leave crawl2chat: the transformers export of each registered chat version.

    crawl2chat-chat / -rl / -rlhf versions -> hf_exports   lake/exports/hf/<name>-v<version>/
                                                            artifacts hf/ of the version's MLflow run

Each version is exported once (the version gets the tag hf_export); the library is
training/interop/registered.py, and `crawl2chat export` does the same by hand (also GGUF).
"""
from pathlib import Path

import dagster as dg

from assets.evaluation import registry_client
from assets.lineage import MLflowTracker
from assets.post_training_model import chat_model
from assets.resources import LakeResource
from assets.rl import rl_model, rlhf_model

GROUP = "export"


@dg.asset(group_name=GROUP, code_version="1", kinds={"transformers", "mlflow"},
          deps=[chat_model, rl_model, rlhf_model])
def hf_exports(context: dg.AssetExecutionContext, lake: LakeResource,
               mlflow_tracker: MLflowTracker) -> dg.MaterializeResult:
    """Every registered chat/RL/RLHF version not exported yet, as a transformers directory
    (GPT2LMHeadModel / LlamaForCausalLM / Qwen3ForCausalLM, chat template, model card), logged as
    artifacts `hf/` to the version's own MLflow run."""
    from training.interop.registered import export_registered
    client = registry_client(mlflow_tracker)
    if client is None:
        raise dg.Failure(f"no MLflow registry at {mlflow_tracker.tracking_uri}: materialize `chat_model` first")
    out = Path(lake.root) / "exports" / "hf"
    done, notes = export_registered(client, out)
    for note in notes:
        context.log.warning(note)
    return dg.MaterializeResult(metadata={"exported": dg.MetadataValue.json(done),
                                          "notes": dg.MetadataValue.json(notes),
                                          "path": dg.MetadataValue.path(str(out))})


interop_assets = [hf_exports]
export_models = dg.define_asset_job("export_models", selection=dg.AssetSelection.assets(*interop_assets),
                                    executor_def=dg.in_process_executor,
                                    description="Export the registered chat versions for transformers and log "
                                                "each to its MLflow run.")
