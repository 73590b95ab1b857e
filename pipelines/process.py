"""The whole data pipeline on one machine: `crawl2chat process WARC... --out DIR`.

    WARC files --(per file, N worker processes)--> reader, URL filter, extraction, LID, quality
              --(one process, whole crawl)-------> MinHash dedup, PII  --> clean/part-00000.parquet

The per-batch part is the same stage list the Spark job runs (`batch_stages`), so the CLI and the
Dagster assets can never drift apart. Outputs are staged and swapped into place at the end: a killed
run leaves the previous output (or nothing), never a half one.
"""
from __future__ import annotations

import argparse
import builtins
import json
import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

from pipelines.config import load_config
from pipelines.errors import ConfigError, InputError
from pipelines.io import ParquetSink, RemovedWriter, read_documents, staged
from pipelines.lifecycle import die_with_parent
from pipelines.runner import RunStats, Stage, run_stages

log = logging.getLogger(__name__)

def extract_stages(cfg: dict, warc_paths=(), dump: str | None = None) -> list[Stage]:
    """WARC records -> extracted text of HTML pages whose URL passed the filter."""
    from pipelines.extraction import Extraction
    from pipelines.url_filter import URLFilter
    from pipelines.warc_reader import WarcReader
    return [WarcReader(warc_paths, dump=dump, **cfg["warc_reader"]), URLFilter(**cfg["url_filter"]),
            Extraction(**cfg["extraction"])]


def filter_stages(cfg: dict) -> list[Stage]:
    """Extracted text -> documents in the wanted language that pass every quality heuristic."""
    from pipelines.lid import LanguageFilter
    from pipelines.quality import build_quality_stages
    return [LanguageFilter(**cfg["language"])] + build_quality_stages(cfg)


def build_batch_stages(cfg: dict, warc_paths=(), dump: str | None = None) -> list[Stage]:
    """Everything that runs per batch of WARC files: reader .. fineweb_quality."""
    return extract_stages(cfg, warc_paths, dump) + filter_stages(cfg)


def crawl_stages(cfg: dict) -> list[Stage]:
    """Per crawl, after all batches: near-dedup, then PII on the final text."""
    from pipelines.minhash import MinhashDedup
    from pipelines.pii import PIIScrubber
    return [MinhashDedup(**cfg["minhash"]), PIIScrubber(**cfg["pii"])]


def stage_configs(stages: list[Stage]) -> dict:
    return {s.name: s.config() for s in stages}


def run_to_parquet(source, stages: list[Stage], out_file: Path, removed_root: Path,
                   part: str) -> RunStats:
    """Stream `source` through `stages`; kept docs to `out_file`, dropped ones under `removed_root`."""
    removed = RemovedWriter(removed_root, part=part)
    sink = ParquetSink(out_file)
    docs, stats = run_stages(source, stages, removed)
    try:
        for doc in docs:
            sink.write(doc)
    except BaseException:
        sink.abort()
        raise
    sink.close()
    removed.close()
    return stats


def process_warc_file(args: tuple) -> dict:
    """One WARC file through the per-batch stages (a worker-process task)."""
    index, path, out_root, cfg, dump = args
    part = f"part-{index:05d}"
    stats = run_to_parquet(iter(()), build_batch_stages(cfg, [path], dump),
                           Path(out_root) / "filtered" / f"{part}.parquet", Path(out_root) / "removed", part)
    return stats.as_dict()


# Reader counters that mean a whole input file was lost (not a record skipped inside it).
FILE_LOST = ("unreadable_file",)


def file_accounting(stats: dict) -> dict:
    """One file's funnel from its per-batch stats. Every record read is a response or another
    type (records == responses + other_records); every response is kept or dropped by a named
    stage and reason (responses == kept + sum(dropped)); `problems` are the reader's damage
    counters (corrupt gzip members, oversize bodies, an empty file, ...)."""
    reader = stats.get("warc_reader", {"docs_in": 0, "counters": {}})
    last = list(stats.values())[-1] if stats else {"docs_out": 0}
    dropped = {f"{name}.{reason}": n for name, s in stats.items() for reason, n in s["dropped"].items()}
    from pipelines.warc_reader import RECORD_COUNTS
    counters = reader["counters"]
    return {"records": counters.get("records", 0), "other_records": counters.get("other_records", 0),
            "responses": reader["docs_in"], "kept": last["docs_out"], "dropped": dropped,
            "problems": {k: n for k, n in counters.items() if k not in RECORD_COUNTS}}


def sanity_warnings(stats: RunStats) -> list[str]:
    """Lines worth a user's attention even when the run succeeded: a stage that dropped every
    document it saw usually means a mistaken threshold, not bad data."""
    out = []
    for name, s in stats.items():
        if s.docs_in and not s.docs_out:
            reasons = ", ".join(f"{r}={n}" for r, n in s.dropped.most_common(3)) or "no reason recorded"
            out.append(f"stage {name} dropped all {s.docs_in} documents ({reasons}): "
                       f"check the '{name}' section of the config")
    if stats and not next(iter(stats.values())).docs_in:
        out.append("no response records were read from the input files")
    return out


def process_warcs(warc_paths: list, out_dir, cfg: dict | None = None, workers: int = 1,
                  dump: str | None = None, progress: bool = False, force: bool = False) -> RunStats:
    """The full single-machine pipeline. Writes out_dir/{filtered,removed,clean}/ and stats.json.
    An out_dir that crawl2chat did not write is refused before any work unless `force`."""
    cfg = cfg or load_config()
    out_dir = Path(out_dir)
    with staged(out_dir, kind="process", force=force) as stage_dir:  # swapped in at the end of the block
        total = RunStats()
        tasks = [(i, str(p), str(stage_dir), cfg, dump) for i, p in enumerate(warc_paths)]
        bar = _progress(len(tasks), "WARC files", progress)
        t0 = time.perf_counter()
        files = {}
        with ProcessPoolExecutor(workers, initializer=die_with_parent, initargs=(os.getpid(),)) \
                if workers > 1 else nullcontext() as pool:
            for t, stats in zip(tasks, (pool or builtins).map(process_warc_file, tasks)):
                total.merge(RunStats.from_dict(stats))
                files[t[1]] = file_accounting(stats)
                bar.update(1)
        bar.close()
        # Per-file stats were merged in completion order; keep pipeline order for reports.
        order = [s.name for s in build_batch_stages(cfg)]
        total = RunStats({name: total[name] for name in order if name in total})
        crawl = run_to_parquet(read_documents([stage_dir / "filtered"]), crawl_stages(cfg),
                               stage_dir / "clean" / "part-00000.parquet", stage_dir / "removed", "part-00000")
        total.update(crawl)
        total.files = files
        total.write_json(stage_dir / "stats.json")
        (stage_dir / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
        log.info("processed %d WARC files in %.1fs", len(tasks), time.perf_counter() - t0)
    return total


def _progress(total: int, unit: str, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, unit=" " + unit, disable=not enabled, dynamic_ncols=True)


def funnel_summary(stats: RunStats, top: int = 3) -> str:
    """Plain-text funnel: documents left after each stage and the top drop reasons."""
    lines = [f"{'stage':<18} {'in':>8} {'out':>8}  top drop reasons"]
    for name, s in stats.items():
        reasons = ", ".join(f"{r}={n}" for r, n in s.dropped.most_common(top))
        lines.append(f"{name:<18} {s.docs_in:>8} {s.docs_out:>8}  {reasons}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("warcs", nargs="+", type=Path, help="WARC files (.warc.gz), or directories of them")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--config", type=Path, help="data config YAML (default: fineweb_v1)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes for the per-file stages")
    parser.add_argument("--backend", choices=["trafilatura", "resiliparse"], help="extraction backend")
    parser.add_argument("--dump", help="crawl name stored as `dump` (default: from the path)")
    parser.add_argument("--keep-going", action="store_true",
                        help="process what can be read: missing or unreadable inputs are reported, not fatal")
    parser.add_argument("--force", action="store_true",
                        help="replace --out even if it holds something crawl2chat did not write")


def input_files(paths, keep_going: bool = False) -> tuple[list[Path], list[str]]:
    """The WARC files to read: files as given, directories expanded to the *.warc.gz / *.warc files
    under them in name order. A missing or unreadable input is an InputError before any work
    starts, unless keep_going: then it is skipped and returned among the lines to report."""
    files, bad = [], []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.name.endswith((".warc.gz", ".warc")) and not f.is_dir())
            if not found:
                bad.append(f"{p}: no *.warc.gz or *.warc files in this directory")
            for f in found:  # a dangling link or a FIFO named like a WARC is reported, not ignored
                (files.append(f) if f.is_file() and os.access(f, os.R_OK)
                 else bad.append(f"{f}: not a readable regular file"))
        elif not p.exists():
            bad.append(f"{p}: not found")
        elif not p.is_file():
            bad.append(f"{p}: not a regular file")
        elif not os.access(p, os.R_OK):
            bad.append(f"{p}: not readable (permissions)")
        else:
            files.append(p)
    if bad and not keep_going:
        raise InputError(f"{len(bad)} input(s) cannot be read: " + "; ".join(bad)
                         + " (fix them, or pass --keep-going to process the rest)")
    if not files:
        raise InputError("no WARC files to process" + (": " + "; ".join(bad) if bad else ""))
    return files, [f"skipped {b}" for b in bad]


def file_problems(files: dict[str, dict], limit: int = 20) -> list[str]:
    """One line per (file, kind of damage), e.g. `a.warc.gz: 2 x corrupt_gzip`, at most `limit`."""
    lines = [f"{path}: {n} x {kind}" for path, f in files.items() for kind, n in sorted(f["problems"].items())]
    extra = len(lines) - limit
    return lines[:limit] + ([f"... and {extra} more (per file in stats.json)"] if extra > 0 else [])


def main(args: argparse.Namespace) -> int:
    overrides = {"extraction": {"backend": args.backend}} if args.backend else None
    cfg = load_config(args.config, overrides)
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    warcs, skipped = input_files(args.warcs, args.keep_going)
    stats = process_warcs(warcs, args.out, cfg, workers=args.workers, dump=args.dump, progress=True,
                          force=args.force)
    print(funnel_summary(stats))
    print(f"\nkept documents: {args.out / 'clean'}   removed: {args.out / 'removed'}   "
          f"stats: {args.out / 'stats.json'}")
    for line in skipped + file_problems(stats.files) + sanity_warnings(stats):
        print(f"crawl2chat: warning: {line}", file=sys.stderr)
    lost = [p for p, f in stats.files.items() if any(f["problems"].get(k) for k in FILE_LOST)]
    if lost and not args.keep_going:
        raise InputError(f"{len(lost)} of {len(warcs)} input files could not be read ({lost[0]}"
                         f"{', ...' if len(lost) > 1 else ''}); {args.out} holds the others; "
                         f"pass --keep-going to accept a partial run")
    return 0
