"""The runner's stage batches (each stage runs over a batch of documents before the next stage) and
the per-document word cache the quality filters share."""
from __future__ import annotations

import pytest

import pipelines.runner as runner
from pipelines.document import Document
from pipelines.quality.text_utils import document_words, words_of
from pipelines.runner import Filter, Stage, run_stages


class Log(Filter):
    """Drops documents whose number is a multiple of `mod`; logs every document it sees."""

    def __init__(self, name, mod, log):
        self.name, self.mod, self.log = name, mod, log

    def filter(self, doc):
        self.log.append((self.name, doc.id))
        return int(doc.id) % self.mod != 0 or (False, f"multiple_of_{self.mod}")


class Rewrite(Stage):
    name = "rewrite"

    def process(self, docs, ctx):
        for doc in docs:
            doc.text = doc.text.upper()
            yield doc


def _run(n_docs, batch_docs, batch_chars=runner.BATCH_CHARS, text="x", mod_a=3):
    log, removed = [], []
    stages = [Log("a", mod_a, log), Rewrite(), Log("b", 5, log)]
    docs = [Document(text, str(i)) for i in range(1, n_docs + 1)]
    old = runner.BATCH_DOCS, runner.BATCH_CHARS
    runner.BATCH_DOCS, runner.BATCH_CHARS = batch_docs, batch_chars
    try:
        out, stats = run_stages(iter(docs), stages, lambda d, s, r: removed.append((d.id, s, r)))
        kept = [d.id for d in out]
    finally:
        runner.BATCH_DOCS, runner.BATCH_CHARS = old
    return kept, stats.as_dict(), sorted(removed), log


def test_batches_change_no_result():
    unbatched = _run(50, 1)
    for batch in (2, 7, 64):
        kept, stats, removed, _ = _run(50, batch)
        assert kept == unbatched[0]
        assert removed == unbatched[2]
        assert {k: (v["docs_in"], v["docs_out"], v["dropped"]) for k, v in stats.items()} == \
               {k: (v["docs_in"], v["docs_out"], v["dropped"]) for k, v in unbatched[1].items()}
    assert unbatched[0] == [str(i) for i in range(1, 51) if i % 3 and i % 5]


def test_each_stage_runs_over_a_batch_before_the_next():
    log = _run(10, 4)[3]
    # stage a sees documents 1-4 before stage b sees any; unbatched, they alternate
    assert [d for s, d in log[:4]] == ["1", "2", "3", "4"] and {s for s, _ in log[:4]} == {"a"}
    assert _run(10, 1)[3][:3] == [("a", "1"), ("b", "1"), ("a", "2")]


def test_character_cap_cuts_a_batch_short():
    log = _run(10, 64, batch_chars=250, text="y" * 100, mod_a=1000)[3]
    # 3 documents of 100 characters reach the 250-character cap: stage b starts after the third
    assert [s for s, _ in log[:4]] == ["a", "a", "a", "b"]


@pytest.mark.parametrize("text", ["One sentence here. Another one, with a comma!", ""])
def test_document_words_are_cached_per_text(text):
    doc = Document(text, "d")
    words = document_words(doc)
    assert words == words_of(text)
    assert document_words(doc) is words  # the second filter gets the same tuple
    doc.text = "A rewritten text."
    assert document_words(doc) == words_of("A rewritten text.") != words
    assert "cache" not in doc.to_row()  # never written out
