"""One batch of WARC files through the per-batch stages on Spark: one task per WARC file.

    driver:   spark.range(n, numPartitions=n)  ->  mapInArrow(task)  ->  collect the stats
    executor: WarcReader(file) -> url_filter -> extraction -> language -> quality stages
              kept docs    -> <out_dir>/part-<i>.parquet
              dropped docs -> <removed_dir>/<stage>/part-<i>.parquet (with stage and reason)

Each task returns its stage stats and, for a WARC file, that file's accounting (records,
responses, kept, dropped by reason, problems: pipelines.process.file_accounting, as the CLI writes
into stats.json), so the returned RunStats.files tells which file of a batch is damaged.

Only the DataFrame API is used (no SparkContext), so the same code runs on Spark Connect. The
executors write the Parquet files themselves (streaming, constant memory) into a staging
directory that the driver swaps into place when every task has succeeded: a rerun replaces the
batch's outputs and a killed run leaves none that look complete. A retried task rewrites the same
part file names, so retries never duplicate rows. Paths must be visible to every executor (local
disk in local mode, a shared filesystem on a cluster).

Models (fastText, presidio, the URL block lists) are never pickled into the task closure: the
closure holds only paths and the config dict, and each Python worker builds its stages once and
keeps them in `_STAGES` (Spark reuses Python workers), on top of the stage modules' own caches.
"""
from __future__ import annotations

import copy
import functools
import json
from contextlib import nullcontext
from pathlib import Path

import pyarrow as pa
from pyspark.sql import SparkSession

from pipelines.io import parquet_files, read_documents, staged
from pipelines.process import run_to_parquet  # the CLI's own writer: one mechanism for both
from pipelines.runner import RunStats, Stage
from pipelines.spark.ship import config_for_executors, resolve_shipped

# One killable extraction child per task keeps the per-document timeout (a stuck lxml call is
# killed, not the executor) and was no slower than inline in our local[1]/local[2] runs; it is
# also deterministic: inline, trafilatura's per-process dedup cache carries over between tasks of
# a reused Python worker, so kept counts depended on task placement. 0 runs inline, no timeout.
EXECUTOR_EXTRACTION_WORKERS = 1

_STAGES: dict[str, list[Stage]] = {}  # per Python worker: built stages by (step, config)

# A batch runs as one Spark job ("all"), or as two so that extraction, the expensive part, is kept
# when only the filters change: "extract" (the extracted_text asset), then "filter" (filtered_text).
STEPS = ("all", "extract", "filter")


def batch_stages(cfg: dict, step: str = "all") -> list[Stage]:
    """The per-batch stages of `step` after the WARC reader, taken from pipelines.process so the
    single-machine CLI and Spark can never run different pipelines."""
    from pipelines import process
    stages = {"all": process.build_batch_stages, "extract": process.extract_stages,
              "filter": process.filter_stages}[step](cfg)
    return [s for s in stages if not s.is_source]  # the reader is per file, built per task


def executor_config(cfg: dict, extraction_workers: int = EXECUTOR_EXTRACTION_WORKERS) -> dict:
    """The config as a task runs it: Spark already runs one task per core, so each task gets
    `extraction_workers` extraction children instead of the single-machine pool size."""
    cfg = copy.deepcopy(cfg)
    cfg.setdefault("extraction", {})["workers"] = extraction_workers
    return cfg


def _cached_stages(cfg: dict, step: str) -> list[Stage]:
    key = step + json.dumps(cfg, sort_keys=True, default=str)
    stages = _STAGES.get(key)
    if stages is None:
        # on a cluster the config names the model and block lists by their shipped copies (ship.py)
        stages = _STAGES[key] = batch_stages(resolve_shipped(cfg), step)
    return stages


def process_part(path, part: int, out_dir, removed_dir, cfg: dict, dump: str | None = None,
                 step: str = "all") -> dict:
    """Run one input file through the stages of `step`; returns its RunStats as a dict. The input
    is a WARC file ("all", "extract") or a Parquet part of extracted text ("filter")."""
    from pipelines.warc_reader import WarcReader
    from pipelines.process import file_accounting
    name = f"part-{part:05d}"
    if step == "filter":
        source, stages = read_documents([path]), _cached_stages(cfg, step)
    else:
        reader = WarcReader([path], dump=dump, **cfg.get("warc_reader", {}))
        source, stages = iter(()), [reader, *_cached_stages(cfg, step)]
    stats = run_to_parquet(source, stages, Path(out_dir) / f"{name}.parquet", Path(removed_dir), name)
    if step != "filter":
        stats.files = {str(path): file_accounting(stats.as_dict())}
    return task_result(stats)


def process_warc_file(path, part: int, out_dir, removed_dir, cfg: dict, dump: str | None = None) -> dict:
    """One WARC file through every per-batch stage."""
    return process_part(path, part, out_dir, removed_dir, cfg, dump, "all")


_TASK_SCHEMA = pa.schema([("part", pa.int64()), ("stats", pa.string())])


def task_result(stats: RunStats) -> dict:
    """What a task's `work` returns: its stage stats and its input files' accounting."""
    return {"stages": stats.as_dict(), "files": stats.files}


def _file_tasks(work, out_dir: str, removed_dir: str | None):
    """mapInArrow function: each input row is a task index; `work` does it, we return its stats."""
    def fn(batches):
        for batch in batches:
            for part in batch.column("id").to_pylist():
                stats = work(part, out_dir, removed_dir)
                yield pa.RecordBatch.from_pylist([{"part": part, "stats": json.dumps(stats)}],
                                                 schema=_TASK_SCHEMA)
    return fn


def run_file_tasks(spark: SparkSession, n_tasks: int, work, out_dir, removed_dir=None, *,
                   kind: str) -> RunStats:
    """Run `work(part, out_dir, removed_dir) -> task_result(stats)` for part in 0..n_tasks-1, one
    Spark task each, writing into staging directories that replace `out_dir` (a `kind` output) and
    `removed_dir` only when every task succeeded. `work` must pickle small (paths and config,
    never models). The stats are merged in part order; `.files` holds every task's files."""
    stats = RunStats()
    with staged(out_dir, kind=kind) as out_stage, \
            (staged(removed_dir, kind="removed") if removed_dir is not None else nullcontext()) as removed_stage:
        if n_tasks:
            # n rows in n partitions: spark.range splits evenly, so exactly one row per task.
            rows = (spark.range(0, n_tasks, 1, n_tasks)
                    .mapInArrow(_file_tasks(work, str(out_stage), removed_stage and str(removed_stage)),
                                "part long, stats string")
                    .collect())
            for row in sorted(rows, key=lambda r: r.part):
                task = json.loads(row.stats)
                stats.merge(RunStats.from_dict(task["stages"]))
                stats.files.update(task["files"])
    return stats


def _part_work(paths: list[str], cfg: dict, dump: str | None, step: str, part: int, out_dir: str,
               removed_dir: str) -> dict:
    return process_part(paths[part], part, out_dir, removed_dir, cfg, dump, step)


def process_batch(spark: SparkSession, warc_paths, out_dir, removed_dir, cfg: dict,
                  dump: str | None = None, extraction_workers: int = EXECUTOR_EXTRACTION_WORKERS,
                  step: str = "all") -> RunStats:
    """Process a batch of WARC files; kept docs to `out_dir`, dropped ones under `removed_dir`.

    Returns the merged RunStats of all tasks (pipeline order). `out_dir` and `removed_dir` are
    replaced as a whole when the batch succeeds.
    """
    paths = [str(Path(p).absolute()) for p in warc_paths]
    cfg = config_for_executors(spark, executor_config(cfg, extraction_workers))
    work = functools.partial(_part_work, paths, cfg, dump, step)
    return run_file_tasks(spark, len(paths), work, out_dir, removed_dir, kind=_STEP_KINDS[step])


# What a step's kept documents are (the output kind staged() marks them with).
_STEP_KINDS = {"all": "filtered_text", "extract": "extracted_text", "filter": "filtered_text"}


def extract_batch(spark: SparkSession, warc_paths, out_dir, removed_dir, cfg: dict,
                  dump: str | None = None) -> RunStats:
    """WARC reader, URL filter and extraction over a batch (the extracted_text asset)."""
    return process_batch(spark, warc_paths, out_dir, removed_dir, cfg, dump, step="extract")


def filter_batch(spark: SparkSession, input_dir, out_dir, removed_dir, cfg: dict) -> RunStats:
    """Language ID and quality filters over a batch's extracted Parquet parts (filtered_text)."""
    parts = [str(Path(p).absolute()) for p in parquet_files(input_dir)]
    work = functools.partial(_part_work, parts, config_for_executors(spark, executor_config(cfg)), None, "filter")
    return run_file_tasks(spark, len(parts), work, out_dir, removed_dir, kind="filtered_text")
