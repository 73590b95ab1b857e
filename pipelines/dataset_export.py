"""`crawl2chat export-dataset CRAWL --out DIR`: a processed crawl as a Hugging Face dataset folder,
laid out and described the way FineWeb is shared.

    DIR/README.md                                  dataset card: YAML header (configs, license,
                                                   dataset_info) + crawl, stages, counts, lineage
    DIR/data/train-00000-of-0000N.parquet          config "default": the clean text, FineWeb columns
    DIR/removed/train-00000-of-0000M.parquet       config "removed": every dropped document, with
                                                   the stage and the reason that dropped it

CRAWL is a crawl name in the lake (`--lake`, default $CRAWL2CHAT_LAKE or ./lake: what the Dagster
data assets wrote under crawls/<crawl>/clean and removed/), or the folder of a `crawl2chat process`
run (clean/, removed/, stats.json, config.json). The folder is written through `staged()` like
every other output: a killed export leaves nothing that looks complete, and an --out that
crawl2chat did not write is refused before any work. Rows are streamed one Parquet batch at a time
(memory does not grow with the crawl), in the order the lake stores them, columns unchanged.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.document import FINEWEB_COLUMNS
from pipelines.errors import InputError, OutputError
from pipelines.io import (ParquetSink, _conform, _schema_for, check_output_target, dir_digest, parquet_files,
                          staged)
from pipelines.lake import CrawlLake
from pipelines.listing import check_crawl_name

KIND = "dataset_export"  # the output marker's kind: only an earlier export is ever replaced
# FineWeb's columns (https://huggingface.co/datasets/HuggingFaceFW/fineweb, "Data Fields"), in its
# order; ours carry all but token_count (FineWeb counts GPT-2 tokens, a tokenizer we do not run).
FINEWEB_SCHEMA = [*FINEWEB_COLUMNS, "token_count"]
CONFIGS = {"default": "data", "removed": "removed"}  # config name -> folder
BATCH_ROWS = 1000  # rows read (and written as one row group) at a time


@dataclass
class ProcessedCrawl:
    """Where a processed crawl keeps its clean text and its removed documents."""
    label: str          # what the user named: the crawl, or the process output folder
    base: Path
    layout: str         # "lake" (Dagster data assets) or "process" (`crawl2chat process`)

    @property
    def clean(self) -> Path:
        return self.base / "clean"

    @property
    def removed(self) -> Path:
        return self.base / "removed"


def find_crawl(crawl: str, lake_root: Path) -> ProcessedCrawl:
    """The processed crawl `crawl` names; InputError (one line, what to do) when there is none."""
    path = Path(crawl)
    if os.sep in crawl or path.is_dir():
        if (path / "stats.json").is_file() and (path / "config.json").is_file():
            found = ProcessedCrawl(str(path), path, "process")
        elif path.parent.name == "crawls" and (path / "clean").is_dir():  # <lake>/crawls/<crawl>
            found = ProcessedCrawl(path.name, path, "lake")
        else:
            raise InputError(f"{path} is neither a crawl in the lake nor a `crawl2chat process` output "
                             f"(no stats.json and config.json beside clean/): name a crawl, or such a folder")
    else:
        check_crawl_name(crawl)
        crawls = Path(lake_root) / "crawls"
        if not crawls.is_dir():
            raise InputError(f"{lake_root} is not a crawl2chat lake (it has no crawls/ folder): pass "
                             f"--lake or set CRAWL2CHAT_LAKE to the lake the data assets wrote")
        base = CrawlLake(Path(lake_root), crawl).base
        if not base.is_dir():
            known = sorted(p.name for p in crawls.iterdir() if p.is_dir() and not p.name.startswith("."))
            raise InputError(f"crawl {crawl!r} is not in the lake at {lake_root} (crawls there: "
                             f"{', '.join(known) or 'none'})")
        found = ProcessedCrawl(crawl, base, "lake")
    if not parquet_files(found.clean):
        raise InputError(f"{found.label} has no clean text ({found.clean} holds no Parquet files): "
                         f"materialize clean_text (or run `crawl2chat process`) first")
    return found


# ------------------------------------------------------------------------------------------------
# Writing one config

@dataclass
class ConfigSummary:
    schema: pa.Schema
    rows: int = 0
    num_bytes: int = 0  # Arrow (uncompressed) bytes: what datasets calls a split's num_bytes
    shards: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)  # (stage, reason) -> rows, for "removed"
    dumps: Counter = field(default_factory=Counter)
    languages: Counter = field(default_factory=Counter)


def _schema(files: list[Path], first: list[str], required: tuple[str, ...] = ()) -> pa.Schema:
    """One schema for every shard: the union of the input files' columns, FineWeb's first (its
    order), the rest as found; the known column types where a file had only nulls."""
    try:
        found = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"cannot read the Parquet files of {files[0].parent}: {e}") from e
    missing = [c for c in ("text", "id", *required) if c not in found.names]
    if missing:
        raise InputError(f"{files[0]}: not crawl2chat documents (no column {', '.join(missing)})")
    order = [c for c in first if c in found.names] + [c for c in found.names if c not in first]
    return _schema_for(pa.schema([found.field(c) for c in order]).empty_table())


def _batches(files: list[Path]):
    """The record batches of `files` in order; a file that cannot be read is an InputError naming
    it (the export then stops and leaves nothing behind)."""
    for f in files:
        try:
            yield from pq.ParquetFile(f).iter_batches(batch_size=BATCH_ROWS)
        except (OSError, pa.ArrowException) as e:
            raise InputError(f"{f}: cannot read this Parquet file of the crawl ({e})") from e


def write_config(files: list[Path], out_dir: Path, schema: pa.Schema, shard_rows: int,
                 count_reasons: bool = False) -> ConfigSummary:
    """Stream the rows of `files` into `out_dir/train-<i>-of-<n>.parquet`, at most `shard_rows`
    each, one row group per read batch. n comes from the files' footers (exact row counts), so
    each name is final when written; at least one shard, so an empty config still loads."""
    summary = ConfigSummary(schema)
    out_dir.mkdir(parents=True, exist_ok=True)
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    n = max(1, math.ceil(total / shard_rows))
    names = [f"train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    sink = None

    def next_sink() -> ParquetSink:
        if sink is not None:
            sink.close()
        summary.shards.append(names[len(summary.shards)])
        return ParquetSink(out_dir / summary.shards[-1])

    sink = next_sink()
    for batch in _batches(files):
        table = _conform(pa.Table.from_batches([batch]), schema)
        while table.num_rows:
            room = shard_rows - sink.count
            if not room:
                sink = next_sink()
                continue
            part, table = table.slice(0, room), table.slice(room)
            sink.write_table(part)
            summary.rows += part.num_rows
            summary.num_bytes += part.nbytes
            for column, counter in (("dump", summary.dumps), ("language", summary.languages)):
                if column in schema.names:
                    counter.update(v for v in part.column(column).to_pylist() if v)
            if count_reasons:
                summary.counts.update(zip(part.column("stage").to_pylist(), part.column("reason").to_pylist()))
    if not sink.count:  # no rows at all: an empty shard that still carries the schema
        pq.write_table(schema.empty_table(), out_dir / summary.shards[-1])
    else:
        sink.close()
    return summary


# ------------------------------------------------------------------------------------------------
# What the card says about where the data came from

def _default_tracking_uri() -> str | None:
    """The MLflow store the data assets logged to: $MLFLOW_TRACKING_URI, else the embedded default
    (assets.lineage.default_tracking_uri: mlflow.db in DAGSTER_HOME) when that file exists."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    db = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / "dagster_home") / "mlflow.db"
    return f"sqlite:///{db}" if db.is_file() else None


def lineage_runs(client, clean_digest: str) -> list:
    """The MLflow runs that produced this clean text and its upstream datasets: the clean_text run
    tagged with its digest, then, through each run's logged inputs, the runs that wrote them (the
    walk of the report cards, training/evals/card_data.py)."""
    from training.evals.card_data import _experiments, _latest, producer
    exps = _experiments(client)
    clean = _latest(client, exps, f"tags.`dataset.digest` = '{clean_digest}'") if exps else None
    runs, todo = [], [clean] if clean else []
    while todo:
        run = todo.pop(0)
        if run.info.run_id in {r.info.run_id for r in runs}:
            continue
        runs.append(run)
        todo += [p for d in run.inputs.dataset_inputs if (p := producer(client, exps, run, d.dataset.name))]
    return runs


def _funnel(client, runs: list) -> dict:
    """The stage stats the lineage runs logged (report/stats.json), summed over batches, in
    pipeline order: the same funnel `crawl2chat process` writes into its stats.json."""
    from training.evals.card_data import merge_stats, run_stats
    order = ["extracted_text", "filtered_text", "deduped_text", "clean_text"]
    ranked = sorted(runs, key=lambda r: (order + [r.data.tags.get("dagster.asset_key")]).index(
        r.data.tags.get("dagster.asset_key")))
    return merge_stats([run_stats(client, r) for r in ranked])


def _config_digest(runs: list) -> str:
    """sha256 of the stage parameters the lineage runs logged, one entry per distinct (asset,
    parameters): the same config over every batch gives one entry per asset."""
    entries = {json.dumps([r.data.tags.get("dagster.asset_key", ""),
                           sorted((k, v) for k, v in r.data.params.items() if k not in ("crawl", "batches"))])
               for r in runs}
    return hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()


def provenance(src: ProcessedCrawl, tracking_uri: str | None) -> dict:
    """Stages, config digest and lineage, from what the source recorded (nothing assumed)."""
    if src.layout == "process":
        try:
            cfg = json.loads((src.base / "config.json").read_text())
            stats = json.loads((src.base / "stats.json").read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"{src.base}: cannot read its config.json and stats.json ({e})") from e
        digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()
        return {"stats": stats.get("stages", {}), "config_digest": digest,
                "config_note": "sha256 of config.json (keys sorted) of the `crawl2chat process` run",
                "runs": [], "lineage_note": "None: a `crawl2chat process` run logs no MLflow runs"}
    out = {"stats": {}, "config_digest": None, "runs": [],
           "config_note": "the lake records no config; its MLflow runs do",
           "lineage_note": "Not recorded: no MLflow tracking store found (set MLFLOW_TRACKING_URI or --mlflow-uri)"}
    if tracking_uri:  # the clean_text asset tagged its run with this digest of the folder
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
        db = tracking_uri.removeprefix("sqlite:///")
        if db != tracking_uri and not Path(db).is_file():  # MLflow would create an empty store
            raise InputError(f"no MLflow store at {db} (--mlflow-uri): name the one the data assets logged to")
        client = MlflowClient(tracking_uri)
        try:
            runs = lineage_runs(client, dir_digest(src.clean))
            out["stats"] = _funnel(client, runs) if runs else {}
        except MlflowException as e:
            raise InputError(f"cannot read the lineage from the MLflow store {tracking_uri}: "
                             f"{str(e).splitlines()[0]}") from e
        out["lineage_note"] = f"MLflow runs in {tracking_uri}" if runs else \
            f"Not recorded: no run in {tracking_uri} is tagged with this clean text's digest"
        if runs:
            out["runs"] = [{"asset": r.data.tags.get("dagster.asset_key", "?"),
                            "partition": r.data.tags.get("dagster.partition", ""), "run_id": r.info.run_id,
                            "git_sha": r.data.tags.get("git_sha", "")} for r in runs]
            out["config_digest"] = _config_digest(runs)
            out["config_note"] = "sha256 of the stage parameters that the lineage runs logged"
    return out


# ------------------------------------------------------------------------------------------------
# The export

def export_dataset(src: ProcessedCrawl, out, *, shard_rows: int = 100_000, license: str = "odc-by",
                   tracking_uri: str | None = None, force: bool = False) -> dict:
    """Write the dataset folder `out`; returns {config: ConfigSummary} plus the card's facts."""
    from pipelines.dataset_card import render_card
    if Path(os.path.abspath(out)).is_relative_to(os.path.abspath(src.base)):
        # the shards would become part of the crawl they were read from (read again next time)
        raise OutputError(f"{out} is inside the crawl {src.base}: choose an output outside it")
    clean_files, removed_files = parquet_files(src.clean), parquet_files(src.removed)
    clean_schema = _schema(clean_files, FINEWEB_SCHEMA)
    removed_schema = (_schema(removed_files, [*FINEWEB_SCHEMA, "stage", "reason"], ("stage", "reason"))
                      if removed_files else pa.schema([(c, pa.string()) for c in ("text", "id", "stage", "reason")]))
    check_output_target(out, KIND, force)  # before the lineage look-up, which reads the clean text
    facts = provenance(src, tracking_uri)
    with staged(out, kind=KIND, force=force) as stage:
        summaries = {"default": write_config(clean_files, stage / CONFIGS["default"], clean_schema, shard_rows),
                     "removed": write_config(removed_files, stage / CONFIGS["removed"], removed_schema,
                                             shard_rows, count_reasons=True)}
        (stage / "README.md").write_text(render_card(src, summaries, facts, license))
    return {"configs": summaries, **facts}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("crawl", help="a crawl name in the lake (e.g. CC-MAIN-2024-10), or the "
                                      "output folder of `crawl2chat process`")
    parser.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    parser.add_argument("--lake", type=Path, default=Path(os.environ.get("CRAWL2CHAT_LAKE") or "lake"),
                        help="lake root (default: $CRAWL2CHAT_LAKE, else ./lake)")
    parser.add_argument("--shard-rows", type=int, default=100_000, help="rows per Parquet shard")
    parser.add_argument("--license", default="odc-by",
                        help="license field of the card (default odc-by, as FineWeb; Common Crawl's "
                             "terms of use apply to the text)")
    parser.add_argument("--mlflow-uri", help="MLflow tracking URI for the lineage (default: "
                                             "$MLFLOW_TRACKING_URI, else dagster_home/mlflow.db if present)")
    parser.add_argument("--force", action="store_true",
                        help="replace --out even if it holds something crawl2chat did not write")


def main(args: argparse.Namespace) -> int:
    from pipelines.errors import ConfigError
    if args.shard_rows < 1:
        raise ConfigError(f"--shard-rows must be at least 1, got {args.shard_rows}")
    src = find_crawl(args.crawl, args.lake)
    result = export_dataset(src, args.out, shard_rows=args.shard_rows, license=args.license,
                            tracking_uri=args.mlflow_uri or _default_tracking_uri(), force=args.force)
    kept, removed = result["configs"]["default"], result["configs"]["removed"]
    print(f"{args.out}: {kept.rows} documents in {len(kept.shards)} shard(s) (config default), "
          f"{removed.rows} removed with reasons (config removed); "
          f"load with datasets.load_dataset({str(args.out)!r})")
    return 0
