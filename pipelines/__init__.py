"""crawl2chat data library: WARC -> documents -> filters -> dedup -> PII -> token shards.

Plain Python (and PySpark in `pipelines.spark`); it never imports dagster, so the same functions
run in the CLI, in a Spark executor and in tests.
"""
