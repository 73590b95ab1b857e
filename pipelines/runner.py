"""One shape for every stage, in the spirit of datatrove.

A stage is a generator over documents. A *filter* is the common case and is only a few lines:

    class ShortDocs(Filter):
        name = "short_docs"
        def filter(self, doc):
            return len(doc.text) > 100 or (False, "too_short")

The runner, not the filter, counts documents in and out, counts drops per reason, times each
stage (time spent inside it, upstream excluded) and hands every dropped document to a sink with
its stage and reason, so every decision can be audited. Stages that are not plain filters (the
WARC reader, the extraction pool, dedup) subclass `Stage` and call `ctx.drop(doc, reason)`.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from pipelines.document import Document

RemovedSink = Callable[[Document, str, str], None]


@dataclass
class StageStats:
    name: str
    docs_in: int = 0
    docs_out: int = 0
    dropped: Counter = field(default_factory=Counter)
    counters: Counter = field(default_factory=Counter)  # anything else worth counting (lines removed, broken records)
    seconds: float = 0.0

    @property
    def docs_removed(self) -> int:
        return sum(self.dropped.values())

    def as_dict(self) -> dict:
        return {"docs_in": self.docs_in, "docs_out": self.docs_out, "docs_removed": self.docs_removed,
                "dropped": dict(self.dropped.most_common()), "counters": dict(self.counters),
                "seconds": round(self.seconds, 4)}

    def merge(self, other: "StageStats") -> None:
        self.docs_in += other.docs_in
        self.docs_out += other.docs_out
        self.dropped.update(other.dropped)
        self.counters.update(other.counters)
        self.seconds += other.seconds


class StageContext:
    """What a running stage may touch: its stats and the removed-documents sink."""

    def __init__(self, stats: StageStats, sink: RemovedSink | None):
        self.stats = stats
        self._sink = sink

    def drop(self, doc: Document, reason: str) -> None:
        self.stats.dropped[reason] += 1
        if self._sink is not None:
            self._sink(doc, self.stats.name, reason)

    def count(self, key: str, n: int = 1) -> None:
        self.stats.counters[key] += n


class Stage:
    name: str = "stage"
    # A source stage (the WARC reader) counts its own input (records), so the runner does not.
    is_source: bool = False

    def process(self, docs: Iterator[Document], ctx: StageContext) -> Iterator[Document]:
        raise NotImplementedError

    def config(self) -> dict:
        """Parameters worth logging (MLflow params); override where a stage has settings."""
        return {}


class Filter(Stage):
    def filter(self, doc: Document):  # -> True | (False, reason)
        raise NotImplementedError

    def process(self, docs, ctx):
        for doc in docs:
            verdict = self.filter(doc)
            if verdict is True or (isinstance(verdict, tuple) and verdict[0]):
                yield doc
            else:
                reason = verdict[1] if isinstance(verdict, tuple) else self.name
                ctx.drop(doc, reason)


class RunStats(dict):
    """stage name -> StageStats, in pipeline order; `files` holds per-input-file accounting when the
    run read files (input path -> its own funnel), so a user can see which file is damaged."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.files: dict[str, dict] = {}

    def as_dict(self) -> dict:
        return {name: s.as_dict() for name, s in self.items()}

    def write_json(self, path) -> None:
        """stats.json: {"stages": {name: stats}, "files": {path: accounting}}."""
        from pipelines.io import atomic_write_text
        atomic_write_text(path, json.dumps({"stages": self.as_dict(), "files": self.files}, indent=2))

    def merge(self, other: "RunStats") -> None:
        for name, s in other.items():
            self.setdefault(name, StageStats(name)).merge(s)

    @classmethod
    def from_dict(cls, data: dict) -> "RunStats":
        out = cls()
        for name, d in data.items():
            out[name] = StageStats(name, d["docs_in"], d["docs_out"], Counter(d["dropped"]),
                                   Counter(d.get("counters", {})), d.get("seconds", 0.0))
        return out


class _Timed:
    """Iterator wrapper that counts items and the seconds spent producing them."""

    def __init__(self, it: Iterable[Document]):
        self._it = iter(it)
        self.count = 0
        self.seconds = 0.0

    def __iter__(self):
        return self

    def __next__(self):
        t0 = time.perf_counter()
        try:
            item = next(self._it)
        finally:
            self.seconds += time.perf_counter() - t0
        self.count += 1
        return item


def run_stages(source: Iterable[Document], stages: list[Stage], sink: RemovedSink | None = None,
               stats: RunStats | None = None) -> tuple[Iterator[Document], RunStats]:
    """Chain `stages` over `source` lazily; stats fill in as the returned iterator is consumed."""
    stats = RunStats() if stats is None else stats
    stream: Iterable[Document] = source
    for stage in stages:
        stream = _run_one(stage, stream, sink, stats.setdefault(stage.name, StageStats(stage.name)))
    return iter(stream), stats


# Documents a stage takes from upstream at a time, and a cap on their characters. Run one document
# through all stages and each stage's code and data (the fastText model, the tokenizer's regexes
# and caches, lxml) are evicted from the CPU caches by the others before the next document; run
# each stage over a batch and they stay warm: ~1.4-1.8x fewer CPU seconds per document on the
# resiliparse path (bench/stages.py, `batch_sizes`). The character cap bounds what a batch of big
# pages holds in memory per stage. Order of documents and every decision are unchanged.
BATCH_DOCS = 64
BATCH_CHARS = 4 << 20


def _batches(upstream: Iterable[Document], max_docs: int, max_chars: int) -> Iterator[Document]:
    """`upstream`, drawn `max_docs` documents (or `max_chars` characters) ahead at a time."""
    it = iter(upstream)
    while True:
        batch, chars = [], 0
        for doc in it:
            batch.append(doc)
            chars += len(doc.text)
            if len(batch) >= max_docs or chars >= max_chars:
                break
        if not batch:
            return
        yield from batch


def _run_one(stage: Stage, upstream: Iterable[Document], sink, stats: StageStats) -> Iterator[Document]:
    inp = _Timed(upstream if stage.is_source or BATCH_DOCS <= 1 else _batches(upstream, BATCH_DOCS, BATCH_CHARS))
    out = _Timed(stage.process(inp, StageContext(stats, sink)))
    counted_in = 0
    for doc in out:
        if not stage.is_source:
            stats.docs_in += inp.count - counted_in
            counted_in = inp.count
        stats.docs_out += 1
        stats.seconds = out.seconds - inp.seconds
        yield doc
    if not stage.is_source:
        stats.docs_in += inp.count - counted_in
    stats.seconds = out.seconds - inp.seconds
