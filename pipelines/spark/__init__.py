"""The data stages on Spark: per-batch processing, per-crawl MinHash dedup and PII scrubbing.

    spark = build_spark_session()                        # local[*], a master URL, or Spark Connect
    process_batch(spark, warc_paths, out_dir, removed_dir, cfg, dump)   -> RunStats
    dedup_crawl(spark, batch_dirs, deduped_dir, removed_dir, cfg)       -> RunStats ("minhash")
    scrub_pii(spark, deduped_dir, clean_dir, cfg)                       -> RunStats ("pii")
"""
from pipelines.spark.batch import process_batch, run_file_tasks
from pipelines.spark.components import connected_components
from pipelines.spark.dedup import dedup_crawl, scrub_pii
from pipelines.spark.session import build_spark_session

__all__ = ["build_spark_session", "process_batch", "run_file_tasks", "dedup_crawl", "scrub_pii",
           "connected_components"]
