"""`crawl2chat adopt DIR`: mark outputs written before markers existed as crawl2chat's, once.

Only the marker (`.crawl2chat-output.json`, pipelines/io.py) lets crawl2chat replace a directory.
Lakes and `process --out` directories written by versions before markers carry none, so a rerun
refuses them; adopting marks them after checking that they look like what those versions wrote:

- a lake root (it holds `crawls/`): every stage output found at the lake's paths
  (crawls/<crawl>/extracted|filtered/<batch>, removed/<group>/<batch>, deduped, clean;
  tokenizer/<v>, tokens/<v>, models/<kind>/<run>/export), each holding only the files its kind
  writes, Parquet parts with crawl2chat's document columns;
- one output directory, of the kind given with --kind or, for a `process --out` directory,
  recognised by its stats.json.

Anything else is refused with the reason, and nothing is marked unless every output passes: a
user's directory is never claimed by mistake.
"""
from __future__ import annotations

import argparse
import json
import os
from fnmatch import fnmatch
from pathlib import Path

from pipelines.document import FINEWEB_COLUMNS
from pipelines.errors import UserError
from pipelines.io import MARKER, _marker_kind, write_marker

_PARQUET = ("part-*.parquet",)  # the names crawl2chat's writers (and Spark's) give Parquet parts
# What each kind of output held before markers, and nothing else.
OLD_OUTPUT_FILES: dict[str, tuple[str, ...]] = {
    "extracted_text": _PARQUET, "filtered_text": _PARQUET, "removed": _PARQUET,
    "deduped_text": _PARQUET, "clean_text": _PARQUET,
    "process": (*_PARQUET, "stats.json", "config.json"),
    "tokenizer": ("tokenizer.json", "tokenizer_meta.json", "token_bytes.npy"),
    "token_shards": (*_PARQUET, "manifest.json", "shard_*.bin", "shard_*.idx"),
    "export": ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_meta.json", "token_bytes.npy"),
}
# Where a lake keeps each kind (glob patterns relative to the lake root).
LAKE_LAYOUT: tuple[tuple[str, str], ...] = (
    ("crawls/*/extracted/*", "extracted_text"), ("crawls/*/filtered/*", "filtered_text"),
    ("crawls/*/removed/*/*", "removed"), ("crawls/*/deduped", "deduped_text"), ("crawls/*/clean", "clean_text"),
    ("tokenizer/*", "tokenizer"), ("tokens/*", "token_shards"), ("models/*/*/export", "export"),
)


def _files(path: Path) -> list[Path]:
    """Every entry below `path` that is not a directory (symlinked directories included), hidden
    names (the project's temporary files, markers) excepted."""
    out = []
    for top, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out += [Path(top, n) for n in names if not n.startswith(".")]
        out += [Path(top, d) for d in dirs if os.path.islink(os.path.join(top, d))]
    return sorted(out)  # the first reason given is the same on every run


def _parquet_problem(path: Path) -> str | None:
    import pyarrow.parquet as pq
    try:
        names = set(pq.read_schema(path).names)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a reason to refuse
        return f"not a readable Parquet file ({type(e).__name__})"
    missing = [c for c in FINEWEB_COLUMNS if c not in names]
    return f"lacks crawl2chat's document columns {missing}" if missing else None


def old_output_problem(path: Path, kind: str) -> str | None:
    """Why `path` does not look like a `kind` output of a crawl2chat older than markers (None: it does)."""
    if path.is_symlink() or not path.is_dir():
        return "is not a directory (or is a symbolic link)"
    files = _files(path)
    if not files:
        return "is empty"
    patterns = OLD_OUTPUT_FILES[kind]
    for f in files:
        rel = f.relative_to(path)
        if f.is_symlink():
            return f"holds a symbolic link, {rel}"
        if not any(fnmatch(f.name, p) for p in patterns):
            return f"holds {rel}, which a {kind} output never held (only {', '.join(patterns)})"
        if f.suffix == ".parquet" and kind != "token_shards" and (why := _parquet_problem(f)):
            return f"holds {rel}, {why}"
    if kind == "process":
        try:
            stats = json.loads((path / "stats.json").read_text())
        except (OSError, ValueError):
            return "has no readable stats.json (every `process --out` directory has one)"
        if not isinstance(stats, dict) or not isinstance(stats.get("stages"), dict):
            return "has a stats.json without crawl2chat's per-stage counts"
        if not any(f.suffix == ".parquet" for f in files):
            return "holds no Parquet documents"
    return None


def _lake_outputs(root: Path) -> list[tuple[Path, str]]:
    return sorted({(p, kind) for pattern, kind in LAKE_LAYOUT for p in root.glob(pattern)
                   if p.is_dir() and not p.name.startswith(".")})


def adopt(directory, kind: str | None = None) -> list[tuple[Path, str]]:
    """Mark `directory` (a lake root, or one output of `kind`, inferred for `process` outputs) and
    return the (path, kind) outputs newly marked; UserError naming every reason to refuse, in
    which case nothing is marked."""
    root = Path(directory)
    if root.is_symlink() or not root.is_dir():
        raise UserError(f"{root}: not a directory")
    if kind is None and (root / "crawls").is_dir():
        candidates = _lake_outputs(root)
        if not candidates:
            raise UserError(f"{root}: holds crawls/ but no stage outputs at the lake's paths; nothing to adopt")
    else:
        if kind is None:
            if not (root / "stats.json").is_file():
                raise UserError(f"{root}: neither a lake (no crawls/) nor a `process --out` directory (no "
                                f"stats.json); if it is another crawl2chat output, name its kind: "
                                f"--kind {{{','.join(OLD_OUTPUT_FILES)}}}")
            kind = "process"
        candidates = [(root, kind)]
    todo, problems = [], []
    for path, k in candidates:
        if (path / MARKER).exists():
            marked = _marker_kind(path)
            if marked != k:
                problems.append(f"{path} already carries a {MARKER} of kind {marked!r}, not {k!r}")
            continue
        why = old_output_problem(path, k)
        if why:
            problems.append(f"{path} {why}")
        else:
            todo.append((path, k))
    if problems:
        raise UserError(f"refusing to adopt {root}: it does not look like what crawl2chat wrote before markers, "
                        f"and nothing was marked: " + "; ".join(problems[:10])
                        + (f"; ... and {len(problems) - 10} more" if len(problems) > 10 else ""))
    for path, k in todo:
        write_marker(path, k)
    return todo


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory", type=Path, help="a lake root, or one output directory (e.g. a `process --out`)")
    p.add_argument("--kind", choices=sorted(OLD_OUTPUT_FILES),
                   help="the kind of a single output directory (default: a lake, or a `process --out` directory)")


def main(args: argparse.Namespace) -> int:
    adopted = adopt(args.directory, args.kind)
    for path, kind in adopted:
        print(f"adopted {path} ({kind})")
    if not adopted:
        print(f"{args.directory}: already marked; nothing to do")
    return 0
