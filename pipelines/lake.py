"""Where everything lives in the lake (architecture.md, "Data flow and storage") and how a crawl's
WARC files are grouped into batches.

    <root>/crawls/<crawl>/listing.json                 the crawl's WARC paths (from warc.paths.gz)
    <root>/crawls/<crawl>/warc/<path in the bucket>    downloaded or generated WARC files
    <root>/crawls/<crawl>/extracted/<batch>/           per batch, Parquet
    <root>/crawls/<crawl>/filtered/<batch>/
    <root>/crawls/<crawl>/removed/<asset>/<batch>/<stage>/   every dropped document with its reason
                                                       (per batch one folder, so it swaps atomically)
    <root>/crawls/<crawl>/deduped/  ->  clean/         per crawl

A batch is a run of consecutive files of the listing, never crossing a segment, named by the
listing positions of its first and last file: `<crawl>/<first>-<last>` (a Dagster partition key).
Positions are stable because a crawl's listing never changes once published.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipelines.io import atomic_write_text, tmp_sibling
from pipelines.listing import check_crawl_name, check_listing_entry, checked_listing, safe_join

_BATCH_KEY = re.compile(r"^(?P<crawl>[^/]+)/(?P<first>\d+)-(?P<last>\d+)$")
_SEGMENT = re.compile(r"/segments/([^/]+)/")


@dataclass(frozen=True)
class Batch:
    crawl: str
    first: int
    last: int

    @property
    def key(self) -> str:
        return f"{self.crawl}/{self.first:05d}-{self.last:05d}"

    @property
    def dirname(self) -> str:
        return f"{self.first:05d}-{self.last:05d}"

    @classmethod
    def parse(cls, key: str) -> "Batch":
        m = _BATCH_KEY.match(key)
        if not m:
            raise ValueError(f"not a batch key (<crawl>/<first>-<last>): {key!r}")
        return cls(m["crawl"], int(m["first"]), int(m["last"]))


def plan_batches(crawl: str, listing: list[str], files_per_batch: int, start: int = 0,
                 limit: int | None = None) -> list[Batch]:
    """Group listing[start:start+limit] into batches of at most `files_per_batch` consecutive
    files of one segment (files_per_batch <= 0: one batch per segment)."""
    end = len(listing) if limit is None else min(len(listing), start + limit)
    batches, first = [], start
    for i in range(start, end):
        seg_changes = i + 1 < end and _segment(listing[i + 1]) != _segment(listing[first])
        full = files_per_batch > 0 and i + 1 - first >= files_per_batch
        if i + 1 == end or seg_changes or full:
            batches.append(Batch(crawl, first, i))
            first = i + 1
    return batches


def _segment(path: str) -> str:
    m = _SEGMENT.search(path)
    return m.group(1) if m else ""


@dataclass(frozen=True)
class CrawlLake:
    root: Path
    crawl: str

    def __post_init__(self):  # the name becomes a folder: a partition key like "../0-1" must not
        check_crawl_name(self.crawl)

    @property
    def base(self) -> Path:
        return Path(self.root) / "crawls" / self.crawl

    @property
    def listing_file(self) -> Path:
        return self.base / "listing.json"

    @property
    def warc_dir(self) -> Path:
        return self.base / "warc"

    def extracted(self, batch: Batch) -> Path:
        return self.base / "extracted" / batch.dirname

    def filtered(self, batch: Batch) -> Path:
        return self.base / "filtered" / batch.dirname

    @property
    def filtered_root(self) -> Path:
        return self.base / "filtered"

    def removed(self, stage_group: str, batch: Batch | None = None) -> Path:
        """Removed docs of one asset's stages (each stage writes its own subfolder below)."""
        return self.base / "removed" / stage_group / (batch.dirname if batch else "all")

    @property
    def deduped(self) -> Path:
        return self.base / "deduped"

    @property
    def clean(self) -> Path:
        return self.base / "clean"

    def read_listing(self) -> list[str]:
        return json.loads(self.listing_file.read_text())["paths"]

    def write_listing(self, paths: list[str], source: str) -> None:
        atomic_write_text(self.listing_file, json.dumps({"crawl": self.crawl, "source": source,
                                                         "paths": paths}, indent=1))

    def batch_files(self, batch: Batch) -> list[str]:
        return self.read_listing()[batch.first:batch.last + 1]

    def local_warc(self, rel: str) -> Path:
        """Where listing entry `rel` lives in the lake; UnsafePathError if the entry is unsafe or
        the path leaves warc_dir (the stored listing.json is read back, so it is checked again)."""
        return safe_join(self.warc_dir, check_listing_entry(rel, self.crawl))


def fetch_warcs(rel_paths: list[str], source: str, dest_dir: Path, workers: int = 4,
                crawl: str | None = None) -> list[Path]:
    """Bring WARC files into the lake: over HTTP(S) with the resumable Common Crawl client, or from
    a local folder laid out like the bucket (a generated crawl) by hard link or copy, atomically.
    Every path must be a safe listing entry (of `crawl` when given) and land under dest_dir, or
    nothing is fetched (UnsafePathError)."""
    rel_paths = checked_listing(rel_paths, crawl)
    if re.match(r"^https?://", source):
        from pipelines.commoncrawl import download_warcs
        return download_warcs(rel_paths, dest_dir, source, workers=workers, crawl=crawl)
    src_root = Path(source.removeprefix("file://"))
    dests = [safe_join(dest_dir, rel) for rel in rel_paths]  # all checked before the first link
    out = []
    for rel, dest in zip(rel_paths, dests):
        src = src_root / rel  # a safe entry stays under src_root; symlinks there are the user's own
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = tmp_sibling(dest)
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        out.append(dest)
    return out


def uncovered_batches(crawl: str, listing: list[str], registered_keys, files_per_batch: int,
                      available=None, limit: int | None = None) -> list[Batch]:
    """New batches for listing positions no registered batch covers, in listing order.

    available: positions that may be batched (e.g. files already present in the lake); None means
    every position. limit: at most this many files (the nightly schedule's N)."""
    covered = set()
    for key in registered_keys:
        try:
            b = Batch.parse(key)
        except ValueError:
            continue
        if b.crawl == crawl:
            covered.update(range(b.first, b.last + 1))
    todo = [i for i in range(len(listing)) if i not in covered and (available is None or i in available)]
    if limit is not None:
        todo = todo[:limit]
    batches, run = [], []
    for i in todo + [None]:  # split into runs of consecutive positions, then plan each run
        if run and (i is None or i != run[-1] + 1):
            batches += plan_batches(crawl, listing, files_per_batch, start=run[0], limit=len(run))
            run = []
        if i is not None:
            run.append(i)
    return batches
