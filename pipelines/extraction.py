"""Text extraction stage: HTML in doc.text -> main-content text, with a per-document timeout that
really stops a hung extractor.

A Python-level timeout (signal.alarm, a thread) cannot interrupt lxml stuck in C code, so the
extractor runs in a small pool of worker processes. Each worker is forked once (so trafilatura is
imported once, in the parent, and shared copy-on-write) and is fed one document at a time over a
Pipe. Exceptions in the extractor give `error`, a worker that dies gives `error`, empty output
gives `empty`, and a document that overruns its time is dropped with reason `timeout` (the worker
is replaced by a fresh fork).

A page's fate must not depend on machine load (issue 26: a 655 KB page costing ~0.7 CPU-s was
dropped as `timeout` against a 1.0 CPU-s limit in 3 of 8 identical runs). So the budget that decides
is counted in work, not time: `max_tags`, the number of tag starts (`<` then a letter) in the HTML,
which is what trafilatura's cost grows with (its XPath passes visit every element). A page over it is
dropped as `too_many_tags` before any extractor sees it: the same on every run and every machine.
On ../shared/realweb (1,310 real pages, 204 B - 2.9 MB) a page has at most 12,815 tags, the
costliest costs 0.74 CPU-s (a 1 MB Wikipedia page, 9,877 tags) and the most per tag is 181 us; the
default cap, 25,000 tags, is twice the largest real page. FineWeb's own budget (datatrove, 0.1 s of
wall time) drops more, and by load: 67 of these pages take over 0.1 s of CPU even on a free core.

The CPU limit (`timeout_s`) stays only as a guard against a pathological page under the cap (lxml
stuck in C code), with a margin so wide that no normal page comes near it: 30 CPU seconds, 40x the
costliest real page and 6x a page at the cap at the worst cost per tag seen (25,000 x 181 us = 4.5 s),
while CPU time itself grows only 1.35-1.6x when the cores are oversubscribed.
It is enforced by the kernel (setitimer(ITIMER_PROF) armed around each extraction: past it the
worker gets SIGPROF, whose default action ends it, even inside C code). A wall-clock backstop
(`wall_timeout_s`, default 10 x timeout_s) kills a worker that blocks without using CPU (counted
as `wall_timeouts`).

The trafilatura backend runs FineWeb's exact call inside `fast_trafilatura()`
(pipelines/trafilatura_fast.py): the same text on all 1,310 realweb pages for ~1.75x less CPU.
The per-page costs quoted above were measured before it, so the margins are now wider still.

Throughput: `workers` processes run concurrently. Documents are dealt to workers round-robin
(document i goes to worker i % workers) and results are re-ordered, so the output order equals
the input order and every worker sees the same sequence of documents on every run; this matters
because trafilatura's `deduplicate=True` keeps a per-process cache of text segments it has seen.
`workers: 0` runs the extractor inline with no timeout (for a Spark executor, where the executor
itself is the disposable process). Workers die with the process that forked them, however it dies
(`pipelines/lifecycle.py`).
"""
from __future__ import annotations

import importlib
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import sys
import time
from collections import deque
from typing import Callable

from pipelines.document import Document
from pipelines.lifecycle import die_with_parent
from pipelines.runner import Stage

Extractor = Callable[[str], "str | None"]
# Wall-clock backstop per document, in multiples of the CPU limit, when wall_timeout_s is not set.
WALL_BACKSTOP = 10
# What the work budget counts: a tag start. Over the whole text, scripts included (counting only
# outside <script>/<style> needs a lazy scan that costs 30 ms on a 2 MB page; this is one C pass).
_TAG_START = re.compile(r"<[A-Za-z]")


def count_tags(html: str) -> int:
    """The work measure of the extraction budget: tag starts in the HTML (see module doc)."""
    return len(_TAG_START.findall(html))


def trafilatura_extractor(favor_precision: bool = True, include_comments: bool = False,
                          deduplicate: bool = True, fast: bool = False) -> Extractor:
    """trafilatura.extract as FineWeb calls it, byte for byte, run inside `fast_trafilatura()`
    (pipelines/trafilatura_fast.py: trafilatura's costliest XPath selectors evaluated in Python,
    element classes chosen in C: 57.4 -> 32.9 CPU-s on realweb, the same text on all 1,310
    pages, bench/extraction_identity.py). `fast` (opt-in, off in fineweb_v1) skips trafilatura's
    comparison with readability/justext: on 131 realweb pages 29% less CPU, 6 of the 131 texts differ
    (the decisions then differ from FineWeb's; measure with bench/vs_datatrove.py --realweb)."""
    import trafilatura

    from pipelines.trafilatura_fast import fast_trafilatura

    def extract(html: str) -> str | None:
        with fast_trafilatura():
            return trafilatura.extract(html, favor_precision=favor_precision, include_comments=include_comments,
                                       deduplicate=deduplicate, fast=fast)
    return extract


def forget_seen_segments() -> None:
    """Empty trafilatura's `deduplicate` memory (a process-wide LRU of text segments it has seen,
    which drops a segment once it has been seen a few times). Called at the start of every run of the stage,
    before workers fork, so a page's text depends only on the pages before it in this run: a run in
    a process that had extracted other pages (a test worker, Dagster's in-process executor, a pool
    process reused for a second WARC file) otherwise cut segments of this crawl's pages and, once,
    split a planted near-duplicate cluster in two (tests/test_pipeline_manifest.py under xdist)."""
    dedup = sys.modules.get("trafilatura.deduplication")
    if dedup is not None:
        dedup.LRU_TEST.clear()


_BLANK_LINES = re.compile(r"\n[ \t]*(?:\n[ \t]*)+")


def resiliparse_extractor(collapse_blank_lines: bool = True) -> Extractor:
    """Resiliparse main-content text.

    Resiliparse separates blocks with a blank line, trafilatura with a single newline. The
    FineWeb-era Gopher repetition rule counts blank lines as duplicate lines, so a resiliparse page
    of 5+ blocks would be dropped for `dup_line_frac` almost always; collapsing blank lines gives
    the filters the text shape they were tuned on (trafilatura's).
    """
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    def extract(html: str) -> str | None:
        text = extract_plain_text(HTMLTree.parse(html), main_content=True)
        return _BLANK_LINES.sub("\n", text).strip() if collapse_blank_lines and text else text
    return extract


class Reject(Exception):
    """Raised by an extractor to drop a page with a reason of its own (the exception's message)."""


def language_prefiltered(extract: Extractor, languages, min_score: float, model_path: str | None = None) -> Extractor:
    """Opt-in early reject before trafilatura (extraction.prefilter_languages): resiliparse's main
    text (~4 ms a real page) through the language model; a page confidently in another language
    (top label not in `languages`, probability >= min_score) is dropped as `language_prefilter`
    without running trafilatura (~45 ms a real page), which the language filter would have dropped.
    Decisions can differ from FineWeb's where the two extractors' texts disagree on the language:
    measured on ../shared/realweb (1,310 pages) at min_score 0.8, 657 pages rejected early, none that
    trafilatura + the language filter would have kept (at 0.5: one). The stage and reason of those
    drops change (extraction/language_prefilter instead of language/wrong_language)."""
    from pipelines.lid import load_model, predict
    model = load_model(model_path)
    quick = resiliparse_extractor()
    wanted = set(languages)

    def prefiltered(html: str) -> str | None:
        text = quick(html)
        if text and text.strip():
            lang, score = predict(model, text.replace("\n", " "), k=1)[0]
            if lang not in wanted and score >= min_score:
                raise Reject("language_prefilter")
        return extract(html)
    return prefiltered


# Trafilatura loads a lot lazily on its first calls (justext stop lists, htmldate, courlan tables):
# ~1 s, as long as the default timeout. Running it on these pages in the parent *before* forking
# means every worker (and every replacement of a killed one) starts warm.
_WARM_UP_PAGES = (
    "<html><head><title>w</title></head><body><nav><a href='/'>Home</a></nav></body></html>",
    "<html><head><title>w</title></head><body><article><h1>Warm up</h1><p>A short paragraph of text "
    "that warms up the extractor.</p><ul><li>one item</li></ul></article><footer>f</footer></body></html>",
)


def _warm_up(extract: Extractor) -> None:
    for html in _WARM_UP_PAGES:
        try:
            extract(html)
        except Exception:  # noqa: BLE001 - warm-up is best effort
            pass


def resolve_callable(spec: str | Callable) -> Callable:
    """A callable, or "package.module:function" imported from the current environment."""
    if callable(spec):
        return spec
    module, _, attr = str(spec).partition(":")
    if not attr:
        raise ValueError(f"extractor must look like 'module:function', got {spec!r}")
    return getattr(importlib.import_module(module), attr)


def _serve(conn, extract: Extractor, parent_pid: int, cpu_limit_s: float | None) -> None:
    """Worker loop: receive HTML, send back ("ok", text) or ("error", message); None stops it.
    A document that uses more than cpu_limit_s CPU seconds ends the process (SIGPROF)."""
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGPROF, signal.SIG_DFL)  # terminate: nothing to run in Python, C code or not
    while True:
        try:
            html = conn.recv()
        except (EOFError, OSError):
            return
        if html is None:
            return
        if cpu_limit_s:
            signal.setitimer(signal.ITIMER_PROF, cpu_limit_s)  # user + system CPU of this process
        try:
            reply = ("ok", extract(html))
        except Reject as rej:
            reply = (str(rej), None)
        except Exception as exc:  # noqa: BLE001 - any extractor failure is a per-document drop
            reply = ("error", f"{type(exc).__name__}: {exc}"[:500])
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return


class _Worker:
    """One forked extractor process and the indices of the documents dealt to it."""

    def __init__(self, mp, extract: Extractor, cpu_limit_s: float | None):
        self._mp, self._extract, self._cpu_limit_s = mp, extract, cpu_limit_s
        self.queue: deque[int] = deque()   # dealt, not yet sent
        self.job: int | None = None        # sent, awaiting a reply
        self.deadline = 0.0
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        parent, child = self._mp.Pipe()
        self.proc = self._mp.Process(target=_serve, args=(child, self._extract, os.getpid(), self._cpu_limit_s),
                                     daemon=True, name="c2c-extraction")
        self.proc.start()
        child.close()
        self.conn = parent

    def send(self, idx: int, html: str, timeout_s: float) -> None:
        self.job = idx
        self.deadline = time.monotonic() + timeout_s
        try:
            self.conn.send(html)
        except (OSError, ValueError):
            pass  # a dead worker shows up as EOF on the next wait and is replaced there

    def hit_cpu_limit(self) -> bool:
        """After EOF from the worker: did it end on its CPU time limit (SIGPROF)?"""
        self.proc.join(5)
        return self.proc.exitcode == -signal.SIGPROF

    def restart(self) -> None:
        """Kill (SIGKILL: a stuck C extension ignores nothing else reliably) and fork a new one."""
        self.conn.close()
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.restarts += 1
        self._start()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(1 if self.job is None else 0)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


class Extraction(Stage):
    name = "extraction"

    def __init__(self, backend: str = "trafilatura", timeout_s: float | None = 30.0, workers: int = 1,
                 favor_precision: bool = True, include_comments: bool = False, deduplicate: bool = True,
                 extractor: str | Callable | None = None, lookahead: int = 4,
                 resiliparse_collapse_blank_lines: bool = True, wall_timeout_s: float | None = None,
                 max_tags: int | None = 25_000, fast: bool = False, prefilter_languages=None,
                 prefilter_min_score: float = 0.8, prefilter_model_path: str | None = None):
        if backend not in ("trafilatura", "resiliparse"):
            raise ValueError(f"unknown extraction backend {backend!r} (trafilatura or resiliparse)")
        self.backend = backend
        self.timeout_s = timeout_s  # CPU seconds per document (see module doc)
        self.wall_timeout_s = wall_timeout_s  # backstop for a worker blocked without using CPU
        self.max_tags = max_tags  # the work budget that decides (see module doc); None: no cap
        self.workers = int(workers)
        self.favor_precision = favor_precision
        self.fast = fast  # trafilatura without its readability/justext fallback (opt-in, see trafilatura_extractor)
        # opt-in early language reject before trafilatura (language_prefiltered); None: off
        self.prefilter_languages = list(prefilter_languages) if prefilter_languages else None
        self.prefilter_min_score = prefilter_min_score
        self.prefilter_model_path = prefilter_model_path
        self.include_comments = include_comments
        self.deduplicate = deduplicate
        # test hook / plug-in: "module:function" taking HTML and returning text; overrides backend
        self.extractor = extractor
        # documents read ahead per worker, bounding the re-order buffer
        self.lookahead = max(1, int(lookahead))
        self.resiliparse_collapse_blank_lines = resiliparse_collapse_blank_lines
        self._extract: Extractor | None = None

    def config(self) -> dict:
        return {"backend": self.backend, "timeout_s": self.timeout_s, "wall_timeout_s": self.wall_timeout_s,
                "max_tags": self.max_tags,
                "workers": self.workers,
                "favor_precision": self.favor_precision, "include_comments": self.include_comments, "fast": self.fast,
                "prefilter_languages": self.prefilter_languages, "prefilter_min_score": self.prefilter_min_score,
                "deduplicate": self.deduplicate, "lookahead": self.lookahead,
                "resiliparse_collapse_blank_lines": self.resiliparse_collapse_blank_lines,
                "extractor": self.extractor if self.extractor is None or isinstance(self.extractor, str)
                else f"{self.extractor.__module__}:{self.extractor.__qualname__}"}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_extract"] = None  # closures over imported modules; rebuilt where the stage runs
        return state

    def extract_fn(self) -> Extractor:
        """The extractor callable, built once (imports the backend in this process)."""
        if self._extract is None:
            if self.extractor is not None:
                self._extract = resolve_callable(self.extractor)
            elif self.backend == "resiliparse":
                self._extract = resiliparse_extractor(self.resiliparse_collapse_blank_lines)
            else:
                self._extract = trafilatura_extractor(self.favor_precision, self.include_comments, self.deduplicate,
                                                      self.fast)
                if self.prefilter_languages:
                    self._extract = language_prefiltered(self._extract, self.prefilter_languages,
                                                         self.prefilter_min_score, self.prefilter_model_path)
            if self.extractor is None:
                _warm_up(self._extract)
        return self._extract

    def _finish(self, doc: Document, status: str, payload, ctx) -> Document | None:
        """Apply a worker reply to `doc`: the doc with its text replaced, or None when dropped."""
        if status == "ok":
            if payload is None or not str(payload).strip():
                ctx.drop(doc, "empty")
                return None
            doc.text = payload
            return doc
        ctx.drop(doc, status)  # "too_many_tags", "timeout", "error" or an extractor's Reject reason
        return None

    def _over_budget(self, html: str) -> bool:
        # Every tag start is a "<", so a page with at most max_tags of them is under the cap; a
        # str.count is ~2.5x cheaper than the regex, and all but the biggest pages stop there.
        return (self.max_tags is not None and html.count("<") > self.max_tags
                and count_tags(html) > self.max_tags)

    def _limits(self) -> tuple[float | None, float]:
        """(CPU seconds per document or None, wall-clock backstop in seconds or inf)."""
        if not self.timeout_s:
            return None, float(self.wall_timeout_s) if self.wall_timeout_s else float("inf")
        cpu = float(self.timeout_s)
        return cpu, float(self.wall_timeout_s) if self.wall_timeout_s else WALL_BACKSTOP * cpu

    def process(self, docs, ctx):
        self.extract_fn()  # import and warm up first: the warm-up pages are seen segments too
        forget_seen_segments()
        if self.workers <= 0:
            yield from self._process_inline(docs, ctx)
        else:
            yield from self._process_pool(docs, ctx)

    def _process_inline(self, docs, ctx):
        extract = self.extract_fn()
        for doc in docs:
            if self._over_budget(doc.text):
                status, payload = "too_many_tags", None
            else:
                try:
                    status, payload = "ok", extract(doc.text)
                except Reject as rej:
                    status, payload = str(rej), None
                except Exception as exc:  # noqa: BLE001
                    status, payload = "error", repr(exc)
            out = self._finish(doc, status, payload, ctx)
            if out is not None:
                yield out

    def _process_pool(self, docs, ctx):
        extract = self.extract_fn()  # import the backend before forking: workers share it
        mp = multiprocessing.get_context("fork")
        cpu_limit, timeout = self._limits()
        n = self.workers
        workers = [_Worker(mp, extract, cpu_limit) for _ in range(n)]
        pending: dict[int, Document] = {}           # read, not yet emitted
        results: dict[int, tuple[str, object]] = {}  # finished, waiting for their turn
        source = iter(docs)
        next_in = head = 0
        exhausted = False
        try:
            while True:
                # read ahead and deal round-robin
                while not exhausted and next_in - head < n * self.lookahead:
                    try:
                        doc = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    pending[next_in] = doc
                    if self._over_budget(doc.text):  # decided here, by work: no worker, no clock
                        results[next_in] = ("too_many_tags", None)
                    else:
                        workers[next_in % n].queue.append(next_in)
                    next_in += 1
                # emit every finished document at the head, in input order
                while head in results:
                    status, payload = results.pop(head)
                    out = self._finish(pending.pop(head), status, payload, ctx)
                    head += 1
                    if out is not None:
                        yield out
                if exhausted and head == next_in:
                    break
                # feed idle workers
                for w in workers:
                    if w.job is None and w.queue:
                        idx = w.queue.popleft()
                        w.send(idx, pending[idx].text, timeout)
                busy = [w for w in workers if w.job is not None]
                if not busy:
                    continue  # only possible right after emitting; loop reads more input
                by_conn = {w.conn: w for w in busy}
                wait_s = max(0.0, min(w.deadline for w in busy) - time.monotonic())
                ready = multiprocessing.connection.wait(list(by_conn), None if wait_s == float("inf") else wait_s)
                for conn in ready:
                    w = by_conn[conn]
                    try:
                        results[w.job] = conn.recv()
                    except (EOFError, OSError):
                        results[w.job] = (("timeout", None) if w.hit_cpu_limit()
                                          else ("error", "extraction worker died"))
                        w.restart()
                    w.job = None
                now = time.monotonic()
                for w in busy:
                    if w.job is not None and now >= w.deadline:
                        results[w.job] = ("timeout", None)
                        ctx.count("wall_timeouts")
                        w.job = None
                        w.restart()
        finally:
            restarts = sum(w.restarts for w in workers)
            if restarts:
                ctx.count("worker_restarts", restarts)
            for w in workers:
                w.stop()
