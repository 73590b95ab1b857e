"""The crawl2chat code location (`dagster_home/workspace.yaml` pins its name)."""
import dagster as dg

from assets.automation import (data_pipeline, discover_crawl, end_to_end, new_model_versions, new_warc_files,
                               nightly_crawl, pretrain, tokenize)
from assets.data import data_assets
from assets.tokens import token_assets
from assets.training import TrainingLauncher, training_assets
from assets.lineage import MLflowTracker
from assets.resources import ChatModel, CrawlSource, DataConfigResource, LakeResource, SparkResource
from assets.serving import search_job, serving_assets
from assets.post_training import PostTrainingConfig, post_training_assets, post_training_data
from assets.post_training_model import post_train, post_training_model_assets
from assets.evaluation import EvalSettings, evaluate, evaluation_assets
from assets.rl import rl_assets, rl_job
from assets.interop import export_models, interop_assets

defs = dg.Definitions(
    assets=[*data_assets, *token_assets, *training_assets, *serving_assets, *post_training_assets,
            *post_training_model_assets, *evaluation_assets, *rl_assets, *interop_assets],
    jobs=[discover_crawl, data_pipeline, tokenize, pretrain, end_to_end, search_job, post_training_data,
          post_train, evaluate, rl_job, export_models],
    sensors=[new_warc_files, new_model_versions],
    schedules=[nightly_crawl],
    resources={
        "lake": LakeResource(),
        "source": CrawlSource(),
        "spark": SparkResource(),
        "data_config": DataConfigResource(),
        "mlflow_tracker": MLflowTracker(),
        "launcher": TrainingLauncher(),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
        "chat_model": ChatModel(),
        "post_training": PostTrainingConfig(),
        "evaluation": EvalSettings(),
    },
)
