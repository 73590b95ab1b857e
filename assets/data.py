"""The data group, top to bottom:

    crawl_manifest -> warc_files -> extracted_text -> filtered_text -> deduped_text -> clean_text
    (per crawl)       (per batch)   (per batch)       (per batch)       (per crawl)     (per crawl)

Per-batch assets are partitioned by WARC batch; dedup and PII run over all batches of a crawl.
Each asset calls one `pipelines` function and reports through `data_result` (counts, digest,
funnel, samples, MLflow run). The crawl of an unpartitioned run is the CrawlSource's crawl, or
the crawl of the batch that the same run processed.
"""


import dagster as dg

from assets import checks
from assets.lineage import MLflowTracker
from assets.partitions import warc_batches
from assets.reporting import data_result
from assets.resources import CrawlSource, DataConfigResource, LakeResource, SparkResource
from pipelines.io import count_rows, dir_digest
from pipelines.lake import Batch, fetch_warcs, plan_batches

GROUP = "data"
KINDS = {"spark", "parquet"}


def _crawl_of_run(context: dg.AssetExecutionContext, source: CrawlSource) -> str:
    key = context.run.tags.get("dagster/partition")
    return Batch.parse(key).crawl if key else source.crawl


@dg.asset(group_name=GROUP, code_version="1", kinds={"python", "commoncrawl"})
def crawl_manifest(context: dg.AssetExecutionContext, source: CrawlSource, lake: LakeResource,
                   mlflow_tracker: MLflowTracker) -> dg.MaterializeResult:
    """The WARC files of the crawl (from its warc.paths.gz), grouped into batch partitions.
    Fails, registering nothing, if any entry is unsafe (a genuine listing has none)."""
    from pipelines.commoncrawl import describe_rejected, fetch_listing, split_listing
    crawl = lake.crawl(source.crawl)
    entries = fetch_listing(source.crawl, source.base_url)
    paths, rejected = split_listing(entries, source.crawl)
    if rejected:
        raise dg.Failure("\n".join(describe_rejected(rejected, len(entries))), allow_retries=False,
                         metadata={"crawl": source.crawl, "source": source.base_url,
                                   "listed_entries": len(entries), "rejected_entries": len(rejected),
                                   "rejected": dg.MetadataValue.json(
                                       [{"entry": e, "reason": r} for e, r in rejected[:50]])})
    crawl.write_listing(paths, source.base_url)
    batches = plan_batches(source.crawl, paths, source.files_per_batch, limit=source.register_files)
    known = set(context.instance.get_dynamic_partitions(warc_batches.name))
    new = [b.key for b in batches if b.key not in known]
    if new:
        context.instance.add_dynamic_partitions(warc_batches.name, new)
    with mlflow_tracker.start_run(context, params={"crawl": source.crawl, "base_url": source.base_url,
                                                   "files_per_batch": source.files_per_batch}) as run:
        import mlflow
        mlflow.log_metrics({"warc_files": len(paths), "batches": len(batches), "new_batches": len(new)})
    digest = dir_digest(crawl.listing_file)
    return dg.MaterializeResult(
        metadata={"crawl": source.crawl, "source": source.base_url, "warc_files": len(paths),
                  "rejected_entries": 0, "batches": len(batches), "new_batches": dg.MetadataValue.json(new[:50]),
                  "listing": dg.MetadataValue.path(str(crawl.listing_file)),
                  "mlflow_run": dg.MetadataValue.url(mlflow_tracker.run_url(run))},
        data_version=dg.DataVersion(digest[:32]))


@dg.asset(group_name=GROUP, code_version="1", kinds={"python", "warc"}, partitions_def=warc_batches,
          deps=[crawl_manifest])
def warc_files(context: dg.AssetExecutionContext, source: CrawlSource, lake: LakeResource,
               mlflow_tracker: MLflowTracker) -> dg.MaterializeResult:
    """The batch's WARC files in the lake: downloaded (resumable, verified) or linked."""
    batch = Batch.parse(context.partition_key)
    crawl = lake.crawl(batch.crawl)
    rel = crawl.batch_files(batch)
    source_url = _listing_source(crawl, source)
    files = fetch_warcs(rel, source_url, crawl.warc_dir, workers=source.download_workers, crawl=batch.crawl)
    size = sum(f.stat().st_size for f in files)
    with mlflow_tracker.start_run(context, params={"source": source_url, "files": len(files)}) as run:
        import mlflow
        mlflow.log_metrics({"warc_files": len(files), "bytes": size})
    return dg.MaterializeResult(
        metadata={"file_count": len(files), "bytes": dg.MetadataValue.int(size),
                  "files": dg.MetadataValue.json([str(f) for f in files]),
                  "mlflow_run": dg.MetadataValue.url(mlflow_tracker.run_url(run))},
        data_version=dg.DataVersion(f"{batch.key}:{size}"))


def _listing_source(crawl, source: CrawlSource) -> str:
    import json
    return json.loads(crawl.listing_file.read_text()).get("source") or source.base_url


@dg.asset(group_name=GROUP, code_version="1", kinds=KINDS, partitions_def=warc_batches, deps=[warc_files],
          check_specs=checks.specs("extracted_text"))
def extracted_text(context: dg.AssetExecutionContext, lake: LakeResource, spark: SparkResource,
                   data_config: DataConfigResource, mlflow_tracker: MLflowTracker) -> dg.MaterializeResult:
    """WARC records -> HTML responses -> URL filter -> trafilatura text, one Spark task per file."""
    from pipelines.process import extract_stages, stage_configs
    from pipelines.spark.batch import extract_batch
    batch = Batch.parse(context.partition_key)
    crawl, cfg = lake.crawl(batch.crawl), data_config.load()
    warcs = [crawl.local_warc(r) for r in crawl.batch_files(batch)]
    out, removed = crawl.extracted(batch), crawl.removed("extracted", batch)
    inputs = [("warc_files", str(crawl.warc_dir), batch.key)]
    with mlflow_tracker.start_run(context, stage_configs(extract_stages(cfg)), inputs) as run:
        result = extract_batch(spark.session(), warcs, out, removed, cfg, dump=batch.crawl)
        stats = result.as_dict()
        # per WARC file: records, responses, kept, dropped by reason, problems (which file is damaged)
        return data_result(context, mlflow_tracker, run, stats, out, removed,
                           extra={"files": dg.MetadataValue.json(result.files)}, checks=checks.common(stats))


@dg.asset(group_name=GROUP, code_version="1", kinds=KINDS, partitions_def=warc_batches, deps=[extracted_text],
          check_specs=checks.specs("filtered_text", checks.LANGUAGE_SHARE))
def filtered_text(context: dg.AssetExecutionContext, lake: LakeResource, spark: SparkResource,
                  data_config: DataConfigResource, mlflow_tracker: MLflowTracker) -> dg.MaterializeResult:
    """fastText language ID, then the Gopher, C4 and FineWeb quality heuristics."""
    from pipelines.process import filter_stages, stage_configs
    from pipelines.spark.batch import filter_batch
    batch = Batch.parse(context.partition_key)
    crawl, cfg = lake.crawl(batch.crawl), data_config.load()
    src, out, removed = crawl.extracted(batch), crawl.filtered(batch), crawl.removed("filtered", batch)
    inputs = [("extracted_text", str(src), dir_digest(src))]
    with mlflow_tracker.start_run(context, stage_configs(filter_stages(cfg)), inputs) as run:
        stats = filter_batch(spark.session(), src, out, removed, cfg).as_dict()
        return data_result(context, mlflow_tracker, run, stats, out, removed,
                           checks=checks.common(stats) + [checks.language(out, cfg)])


@dg.asset(group_name=GROUP, code_version="1", kinds=KINDS,
          deps=[dg.AssetDep(filtered_text, partition_mapping=dg.AllPartitionMapping())],
          check_specs=checks.specs("deduped_text", checks.DEDUP_RATE))
def deduped_text(context: dg.AssetExecutionContext, source: CrawlSource, lake: LakeResource,
                 spark: SparkResource, data_config: DataConfigResource,
                 mlflow_tracker: MLflowTracker) -> dg.MaterializeResult:
    """MinHash near-dedup over every filtered batch of the crawl, clustered in Spark."""
    from pipelines.spark.dedup import dedup_crawl
    crawl, cfg = lake.crawl(_crawl_of_run(context, source)), data_config.load()
    batches = sorted(p for p in crawl.filtered_root.iterdir() if p.is_dir() and not p.name.startswith("."))
    removed = crawl.removed("deduped")
    inputs = [(f"filtered_text[{b.name}]", str(b), dir_digest(b)) for b in batches]
    with mlflow_tracker.start_run(context, {"minhash": cfg["minhash"], "crawl": crawl.crawl,
                                            "batches": len(batches)}, inputs) as run:
        stats = dedup_crawl(spark.session(), batches, crawl.deduped, removed, cfg).as_dict()
        return data_result(context, mlflow_tracker, run, stats, crawl.deduped, removed,
                           {"batches": len(batches), "crawl": crawl.crawl},
                           checks=checks.common(stats) + [checks.dedup_rate(stats, cfg)])


@dg.asset(group_name=GROUP, code_version="1", kinds=KINDS, deps=[deduped_text],
          check_specs=checks.specs("clean_text", checks.PII_RESIDUE))
def clean_text(context: dg.AssetExecutionContext, source: CrawlSource, lake: LakeResource,
               spark: SparkResource, data_config: DataConfigResource,
               mlflow_tracker: MLflowTracker) -> dg.MaterializeResult:
    """PII scrubbed with presidio (emails, phones, public IPs, cards, IBANs) on the final text."""
    from pipelines.spark.dedup import scrub_pii
    crawl, cfg = lake.crawl(_crawl_of_run(context, source)), data_config.load()
    inputs = [("deduped_text", str(crawl.deduped), dir_digest(crawl.deduped))]
    with mlflow_tracker.start_run(context, {"pii": cfg["pii"], "crawl": crawl.crawl}, inputs) as run:
        stats = scrub_pii(spark.session(), crawl.deduped, crawl.clean, cfg).as_dict()
        return data_result(context, mlflow_tracker, run, stats, crawl.clean, None,
                           {"crawl": crawl.crawl, "rows": count_rows(crawl.clean)},
                           checks=checks.common(stats) + [checks.pii(crawl.clean, cfg)])


data_assets = [crawl_manifest, warc_files, extracted_text, filtered_text, deduped_text, clean_text]
