"""Extraction stage: real trafilatura/resiliparse, and a worker pool that survives hangs and crashes."""
from __future__ import annotations

import os
import pickle
import time

import pytest

from pipelines.config import load_config
from pipelines.document import Document
from pipelines.extraction import Extraction
from pipelines.runner import StageContext, StageStats, run_stages

ARTICLE = [
    "Growing tomatoes on a small balcony is easier than most people think, as long as the plants get at "
    "least six hours of direct sunlight every day.",
    "Choose a deep container with drainage holes, fill it with a rich potting mix and add a handful of "
    "compost so that the roots have plenty of nutrients during the summer.",
    "Water the plants deeply in the morning rather than the evening, because wet leaves overnight invite "
    "fungal diseases that can ruin a crop within a week.",
    "When the first flowers appear, feed the plants every two weeks with a fertiliser that is rich in "
    "potassium, and pinch out the side shoots of cordon varieties.",
]
NAV = ["Home", "Recipes", "Garden shop", "Contact the editors"]
FOOTER = "Copyright 2024 Balcony Gardens Ltd. Registered in Narnia under number 1234567."


def page(title: str = "How to grow tomatoes on a balcony", marker: str = "") -> str:
    nav = "".join(f'<li><a href="/{n.lower().replace(" ", "-")}">{n}</a></li>' for n in NAV)
    paras = "".join(f"<p>{p}</p>" for p in ARTICLE)
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<script>var tracking = {{"id": 42}};</script><style>body {{ font-family: sans-serif; }}</style></head>
<body><header><nav><ul>{nav}</ul></nav></header>
<main><article><h1>{title}</h1><p class="byline">By Ann Gardener</p>{paras}<p>{marker}</p></article></main>
<aside><h3>Related posts</h3><ul><li><a href="/a">Ten herbs for shade</a></li><li><a href="/b">Compost 101</a></li></ul></aside>
<footer><p>{FOOTER}</p><a href="/privacy">Privacy</a></footer></body></html>"""


# Test hook extractors. The pool forks, so workers inherit them; they are referenced by
# "module:function" to exercise the config path too.
def flaky_extractor(html: str) -> str | None:
    if "HANG" in html:
        time.sleep(600)
    if "SPIN" in html:       # a CPU-bound hang, like lxml stuck in C code
        while True:
            pass
    if "NAP" in html:        # blocked (waiting for the CPU, a page fault, a lock), using no CPU
        time.sleep(1.0)
    if "BURN" in html:       # ~0.3 CPU seconds of real work, then a result
        t0 = time.process_time()
        while time.process_time() - t0 < 0.3:
            pass
    if "BOOM" in html:
        raise RuntimeError("extractor exploded")
    if "EXIT" in html:       # the worker process dies outright
        os._exit(3)
    if "EMPTY" in html:
        return "   "
    return "text of " + html


FLAKY = f"{__name__}:flaky_extractor"


def run(stage, docs):
    out, stats = run_stages(docs, [stage])
    return list(out), stats["extraction"]


def test_trafilatura_extracts_main_content_without_boilerplate():
    cfg = load_config()["extraction"]
    (doc,), stats = run(Extraction(**cfg), [Document(page(), "p")])
    for p in ARTICLE:
        assert p in doc.text
    for junk in NAV + [FOOTER, "Related posts", "tracking", "font-family"]:
        assert junk not in doc.text
    assert stats.docs_in == stats.docs_out == 1


def test_resiliparse_backend():
    stage = Extraction(**{**load_config()["extraction"], "backend": "resiliparse"})
    (doc,), _ = run(stage, [Document(page(), "p")])
    for p in ARTICLE:
        assert p in doc.text
    assert "tracking" not in doc.text and "font-family" not in doc.text
    assert "\n\n" not in doc.text  # blank lines collapsed: trafilatura's text shape
    raw = Extraction(backend="resiliparse", workers=0, resiliparse_collapse_blank_lines=False)
    (doc2,), _ = run(raw, [Document(page(), "p")])
    assert "\n\n" in doc2.text


def test_empty_page_is_dropped_as_empty():
    docs = [Document("<html><head><title>x</title></head><body><div></div></body></html>", "e"),
            Document(page(), "p")]
    out, stats = run(Extraction(**load_config()["extraction"]), docs)
    assert [d.id for d in out] == ["p"]
    assert stats.dropped == {"empty": 1}


@pytest.mark.parametrize("workers", [1, 3])
def test_hang_crash_and_raise_are_survived_in_order(workers):
    markers = ["", "HANG", "", "BOOM", "", "SPIN", "EMPTY", "", "EXIT", "", "", ""]
    docs = [Document(f"<p>doc {i} {m}</p>", f"d{i:02d}") for i, m in enumerate(markers)]
    stage = Extraction(extractor=FLAKY, workers=workers, timeout_s=0.2, wall_timeout_s=2)
    out, stats = run(stage, docs)
    expected_ok = [f"d{i:02d}" for i, m in enumerate(markers) if m == ""]
    assert [d.id for d in out] == expected_ok                       # input order kept
    assert all(d.text == f"text of <p>doc {int(d.id[1:])} </p>" for d in out)
    assert stats.dropped == {"timeout": 2, "error": 2, "empty": 1}
    assert stats.docs_in == len(docs) == stats.docs_out + stats.docs_removed
    assert stats.counters["worker_restarts"] == 3                    # HANG, SPIN, EXIT
    assert stats.counters["wall_timeouts"] >= 1                      # HANG uses no CPU: the backstop


def test_timeout_counts_cpu_time_not_wall_time():
    """A worker that waits (as one does on a loaded machine, descheduled) is not timed out for it;
    one that computes past the limit is, by the kernel, long before the wall-clock backstop. The
    wall-clock deadline dropped the NAP page (1 s of wall time, no CPU) as a timeout."""
    docs = [Document("<p>NAP</p>", "nap"), Document("<p>SPIN</p>", "spin"), Document("<p>BURN</p>", "burn"),
            Document("<p>plain</p>", "plain")]
    t0 = time.monotonic()
    out, stats = run(Extraction(extractor=FLAKY, workers=1, timeout_s=0.5, wall_timeout_s=60), docs)
    assert [d.id for d in out] == ["nap", "burn", "plain"]
    assert stats.dropped == {"timeout": 1} and not stats.counters["wall_timeouts"]
    assert time.monotonic() - t0 < 30  # SPIN ended by its CPU limit, not the 60 s backstop
    out, stats = run(Extraction(extractor=FLAKY, workers=1, timeout_s=0.2, wall_timeout_s=60), docs[2:3])
    assert not out and stats.dropped == {"timeout": 1}  # 0.3 CPU seconds is over a 0.2 s limit


@pytest.mark.parametrize("workers", [0, 2])
def test_work_budget_decides_before_any_extractor_runs(workers):
    """A page over max_tags is dropped by its tag count, never handed to an extractor (BOOM would
    give `error` if it were); pages at the cap go through."""
    at_cap = "<p>" + "<b>x</b>" * 9 + "</p>"           # 10 tag starts; closing tags do not count
    over = "<p>BOOM" + "<i>y</i>" * 10 + "</p>"         # 11
    docs = [Document(at_cap, "at"), Document(over, "over"), Document("<p>after</p>", "after")]
    out, stats = run(Extraction(extractor=FLAKY, workers=workers, timeout_s=5, max_tags=10), docs)
    assert [d.id for d in out] == ["at", "after"]
    assert stats.dropped == {"too_many_tags": 1}
    assert not stats.counters["worker_restarts"]
    assert Extraction(**load_config()["extraction"]).max_tags == 25_000


GERMAN = ["Der Gemeinderat hat am Dienstag lange über die neue Bibliothek am Marktplatz beraten und am Ende "
          "mit großer Mehrheit beschlossen, dass der Bau im nächsten Frühjahr beginnen soll.",
          "Die Kosten werden auf rund vier Millionen Euro geschätzt, von denen das Land einen großen Teil "
          "übernimmt, während die Stadt den Rest aus ihren Rücklagen bezahlen möchte."]


@pytest.mark.parametrize("workers", [0, 1])
def test_language_prefilter_is_opt_in_and_rejects_confident_foreign_pages(workers):
    german = page().replace("".join(f"<p>{p}</p>" for p in ARTICLE), "".join(f"<p>{p}</p>" for p in GERMAN * 2))
    docs = [Document(page(), "en"), Document(german, "de")]
    # deduplicate off: trafilatura's per-process cache would drop the article's paragraphs after a few
    # extractions of the same page in one process (and forked workers inherit it)
    cfg = {**load_config()["extraction"], "workers": workers, "deduplicate": False}
    out, stats = run(Extraction(**cfg), [Document(d.text, d.id) for d in docs])
    assert [d.id for d in out] == ["en", "de"] and not stats.dropped       # off by default
    out, stats = run(Extraction(**cfg, prefilter_languages=["en"]), docs)
    assert [d.id for d in out] == ["en"] and stats.dropped == {"language_prefilter": 1}
    assert out[0].text == run(Extraction(**cfg), [Document(page(), "en")])[0][0].text  # same text when kept


def test_wall_timeout_defaults_to_ten_times_the_cpu_limit():
    from pipelines.extraction import WALL_BACKSTOP
    assert WALL_BACKSTOP == 10
    assert Extraction(timeout_s=1.5)._limits() == (1.5, 15.0)
    assert Extraction(timeout_s=1.5, wall_timeout_s=4)._limits() == (1.5, 4.0)
    assert Extraction(timeout_s=None)._limits() == (None, float("inf"))
    assert load_config()["extraction"]["wall_timeout_s"] is None


def test_order_is_input_order_with_many_workers():
    docs = [Document(f"<p>n{i}</p>", str(i)) for i in range(60)]
    out, stats = run(Extraction(extractor=FLAKY, workers=4, timeout_s=5, lookahead=2), docs)
    assert [d.id for d in out] == [str(i) for i in range(60)]
    assert stats.docs_in == stats.docs_out == 60


def test_inline_mode_has_no_pool_but_handles_errors():
    docs = [Document("<p>a</p>", "a"), Document("<p>BOOM</p>", "b"), Document("<p>EMPTY</p>", "c"),
            Document("<p>d</p>", "d")]
    out, stats = run(Extraction(extractor=flaky_extractor, workers=0), docs)
    assert [d.id for d in out] == ["a", "d"]
    assert stats.dropped == {"error": 1, "empty": 1}


def test_stage_is_usable_standalone_and_picklable():
    stage = Extraction(**load_config()["extraction"])
    ctx = StageContext(StageStats("extraction"), None)
    out = list(stage.process(iter([Document(page(), "p")]), ctx))
    assert len(out) == 1 and ARTICLE[0] in out[0].text
    clone = pickle.loads(pickle.dumps(stage))   # Spark ships stages to executors
    assert clone._extract is None and clone.config() == stage.config()


def test_abandoned_generator_stops_its_workers():
    stage = Extraction(extractor=FLAKY, workers=2, timeout_s=5)
    ctx = StageContext(StageStats("extraction"), None)
    gen = stage.process(iter([Document(f"<p>{i}</p>", str(i)) for i in range(10)]), ctx)
    next(gen)
    import multiprocessing
    assert any(p.name == "c2c-extraction" for p in multiprocessing.active_children())
    gen.close()
    assert not any(p.name == "c2c-extraction" for p in multiprocessing.active_children())


@pytest.mark.parametrize("workers", [0, 1])
def test_a_pages_text_does_not_depend_on_what_the_process_extracted_before(workers):
    # trafilatura's deduplicate=True drops a paragraph it has seen a few times, in a process-wide
    # cache; a run in a process that had extracted the same article before (a test worker, an
    # in-process Dagster run) lost the article's paragraphs (a near-duplicate cluster once split)
    import trafilatura
    stage = Extraction(**{**load_config()["extraction"], "workers": workers})
    (fresh,), _ = run(stage, [Document(page(), "p")])
    for _ in range(5):
        trafilatura.extract(page(), favor_precision=True, deduplicate=True)
    (again,), _ = run(stage, [Document(page(), "p")])
    assert again.text == fresh.text and ARTICLE[0] in again.text
