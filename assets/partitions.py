"""WARC batches as dynamic partitions: `<crawl>/<first>-<last>` (a segment or N files, never one
file per partition: a crawl has ~100k files and the UI degrades past ~100k partitions)."""
import dagster as dg

warc_batches = dg.DynamicPartitionsDefinition(name="warc_batches")
