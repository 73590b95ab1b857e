"""Jobs, the WARC and model-version sensors and the nightly schedule (all ship STOPPED; see the README)."""

import dagster as dg

from assets.data import clean_text, crawl_manifest, deduped_text, extracted_text, filtered_text, warc_files
from assets.partitions import warc_batches
from assets.tokens import token_shards, tokenizer
from assets.training import GPU_JOB_TAGS, base_model
from assets.evaluation import EvalSettings, evaluate, registry_client
from assets.lineage import MLflowTracker
from assets.resources import CrawlSource, LakeResource
from pipelines.lake import uncovered_batches

# Spark parallelizes inside a step; one process per run lets the steps share one SparkSession.
discover_crawl = dg.define_asset_job("discover_crawl", selection=[crawl_manifest],
                                     executor_def=dg.in_process_executor)
_DATA = [warc_files, extracted_text, filtered_text, deduped_text, clean_text]
data_pipeline = dg.define_asset_job(
    "data_pipeline", selection=dg.AssetSelection.assets(*_DATA), executor_def=dg.in_process_executor,
    description="One WARC batch (tag dagster/partition=<crawl>/<first>-<last>) through extraction and "
                "filters, then dedup and PII over every batch of its crawl.")
pretrain = dg.define_asset_job("pretrain", selection=[base_model], executor_def=dg.in_process_executor,
                               tags=GPU_JOB_TAGS)
tokenize = dg.define_asset_job("tokenize", selection=dg.AssetSelection.assets(tokenizer, token_shards),
                               executor_def=dg.in_process_executor,
                               description="Train the BPE tokenizer on clean_text, then write token shards.")
# A batch from WARC files all the way to a pretrained base model.
end_to_end = dg.define_asset_job("end_to_end", selection=dg.AssetSelection.assets(*_DATA, tokenizer, token_shards, base_model),
                                 executor_def=dg.in_process_executor, tags=GPU_JOB_TAGS)


def _registered(instance) -> list[str]:
    return list(instance.get_dynamic_partitions(warc_batches.name))


def _requests(batches, reason: str):
    keys = [b.key for b in batches]
    return dict(run_requests=[dg.RunRequest(run_key=f"{reason}:{k}", partition_key=k, job_name="data_pipeline")
                              for k in keys],
                dynamic_partitions_requests=[warc_batches.build_add_request(keys)] if keys else [])


@dg.sensor(job=data_pipeline, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def new_warc_files(context: dg.SensorEvaluationContext, source: CrawlSource, lake: LakeResource):
    """Adds batches for WARC files that appeared in the lake (or in a local crawl's listing) and
    requests a data_pipeline run for each."""
    from pipelines.commoncrawl import list_warc_paths
    crawl = lake.crawl(source.crawl)
    listing = list_warc_paths(source.crawl, source.base_url)
    if not crawl.listing_file.exists() or crawl.read_listing() != listing:
        crawl.write_listing(listing, source.base_url)
    local_source = not source.base_url.startswith(("http://", "https://"))
    available = None if local_source else {i for i, rel in enumerate(listing) if crawl.local_warc(rel).exists()}
    batches = uncovered_batches(source.crawl, listing, _registered(context.instance),
                                source.files_per_batch, available)
    if not batches:
        return dg.SkipReason("no new WARC files")
    return dg.SensorResult(**_requests(batches, "sensor"))


@dg.schedule(cron_schedule="0 2 * * *", job=data_pipeline, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED)
def nightly_crawl(context: dg.ScheduleEvaluationContext, source: CrawlSource, lake: LakeResource):
    """Every night at 02:00 UTC: the next N (CrawlSource.nightly_files) unprocessed WARC files of
    the configured crawl, as new batches, each run through the data pipeline."""
    from pipelines.commoncrawl import list_warc_paths
    crawl = lake.crawl(source.crawl)
    listing = list_warc_paths(source.crawl, source.base_url)
    crawl.write_listing(listing, source.base_url)
    batches = uncovered_batches(source.crawl, listing, _registered(context.instance),
                                source.files_per_batch, limit=source.nightly_files)
    if not batches:
        return dg.SkipReason(f"every WARC file of {source.crawl} is processed")
    context.instance.add_dynamic_partitions(warc_batches.name, [b.key for b in batches])
    return [dg.RunRequest(run_key=f"nightly:{b.key}", partition_key=b.key) for b in batches]


@dg.sensor(job=evaluate, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.STOPPED)
def new_model_versions(context: dg.SensorEvaluationContext, mlflow_tracker: MLflowTracker, evaluation: EvalSettings):
    """Requests the `evaluate` job (model_evals, report_card) when a registered crawl2chat model
    version has no evaluation by the current suite yet."""
    from training.evals.registry import pending_versions
    client = registry_client(mlflow_tracker)
    pending = pending_versions(client, evaluation.load().digest()) if client is not None else []
    if not pending:
        return dg.SkipReason("every registered model version is evaluated")
    return dg.RunRequest(run_key="evals:" + ",".join(sorted(v.ref for v in pending)))
