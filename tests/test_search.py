"""The search index (SQLite FTS5, BM25) over real text: phrase queries find their document first,
any text is a safe query, outputs are bounded, builds are atomic; the `search_index` asset
materialized by Dagster from a clean_text dataset; and the real stages' output indexed end to end."""
import os
import subprocess
import sys
import threading
from pathlib import Path

import dagster as dg
import mlflow
import pytest

from pipelines.document import Document
from pipelines.errors import InputError
from pipelines.io import ParquetSink, read_documents
from training.engine.search import (SNIPPET_CHARS, SearchIndex, build_index, fts_query, index_path,
                                    latest_index, phrase_probe, search_tool)

CRAWL = "CC-MAIN-2099-01"


def topic_documents() -> list[Document]:
    """Real English: Python's own help topics (stdlib), one document each, with made-up URLs."""
    from pydoc_data.topics import topics
    return [Document(text=topics[k], id=f"doc-{k}", metadata={"url": f"https://docs.example.org/{k}"})
            for k in sorted(topics)[:60]]


def unique_phrase(doc: Document, others: list[Document], words: int = 8) -> str:
    """A phrase of `words` words from the middle of `doc` that no other document contains."""
    w = doc.text.split()
    for start in range(len(w) // 2, len(w) - words):
        phrase = " ".join(w[start:start + words])
        if not any(phrase in o.text for o in others if o.id != doc.id):
            return phrase
    raise AssertionError(f"{doc.id} has no unique phrase")


@pytest.fixture(scope="module")
def docs():
    return topic_documents()


@pytest.fixture(scope="module")
def index(docs, tmp_path_factory):
    path = tmp_path_factory.mktemp("search") / "index.sqlite"
    stats = build_index(iter(docs), path, meta={"source": "pydoc topics"})
    assert stats["docs"] == len(docs) and stats["bytes"] == path.stat().st_size > 0
    return SearchIndex(path)


def test_phrase_from_a_document_returns_it_first(index, docs):
    for doc in docs[::7]:
        hits = index.search(unique_phrase(doc, docs), k=3)
        assert hits and hits[0].doc_id == doc.id, doc.id
        assert hits[0].url == doc.metadata["url"]
    assert index.num_docs == len(docs) and index.meta["source"] == "pydoc topics"


def test_words_rank_by_bm25_and_stemming_matches_word_forms(index, docs):
    assert index.search("augmented assignment operators")[0].doc_id == "doc-augassign"
    assert index.search("lambda expressions")[0].doc_id == "doc-lambda"
    # Porter stemming: "raising" is indexed as "rais", so the `raise` statement's page comes first
    assert index.search("raising exceptions")[0].doc_id == "doc-raise"
    # snippets are one line of text cut from the document, within their bound
    hits = index.search("formatted string literals", k=3)
    assert hits[0].doc_id == "doc-formatstrings" and len(hits) == 3
    for h in hits:
        assert "\n" not in h.snippet and 0 < len(h.snippet) <= SNIPPET_CHARS
        assert h.score > 0


@pytest.mark.parametrize("query", ['"', '""', "'", "AND", "AND OR", "OR", "NOT x", "*", "a*", "^start",
                                   "NEAR(", "NEAR(a b, 3)", "text:foo", "(((", "-", "{col}", "\\",
                                   "\x00", "café naïve", "日本語 テキスト", "🙂", "x" * 10_000,
                                   "the " * 3_000, "a_b__c", "\n\t  "])
def test_any_text_is_a_safe_query(index, query):
    hits = index.search(query, k=3)
    assert isinstance(hits, list) and len(hits) <= 3


def test_operators_are_plain_words(index):
    # FTS5 would read AND / NOT as operators and "*" as a prefix; here they are words or nothing
    assert fts_query('try AND "except" NOT*') == ('"try and except not" OR "try" OR "and" OR "except" OR "not"',
                                                  '"try and except not"')
    assert fts_query("Try") == ('"try"', None)
    assert fts_query("") is None and fts_query("*** ()") is None
    assert index.search("", k=3) == [] and index.search("?!", k=3) == []
    assert index.search("try", k=0) == []


def test_search_tool_answers_with_bounded_text(index, docs):
    tool = search_tool(index, k=3, max_chars=500)
    answer = tool(unique_phrase(docs[14], docs))
    assert answer.startswith(f"[1] {docs[14].metadata['url']}\n")
    assert len(tool("the of and " * 2000)) <= 500
    assert tool("") == "no results" and tool("zzqqxxnotaword") == "no results"
    assert len(search_tool(index)(docs[3].text)) <= 1200   # a whole document pasted as the query


def test_an_engine_fits_the_search_answer_to_its_models_window(index, tmp_path):
    """1,200 characters of three hits overflowed the tiny preset's 256-token window: the search
    conversations SFT trained on were cut, and the served model never ended its turn."""
    from engine_fixtures import build_tokenizer, tiny_gpt
    from pipelines.tokenizer import load_tokenizer
    from training.engine.engine import Engine
    query = "the of and " * 50   # matches many documents
    wide = search_tool(index)
    assert wide(query).count("\n[") == 2 and len(wide(query)) > 700
    tok = load_tokenizer(build_tokenizer(tmp_path / "tok"))
    engine = Engine(tiny_gpt(tok.vocab_size, block_size=256), tok, tools={"search": search_tool(index)})
    narrow = engine.tools["search"](query)
    assert narrow.startswith("[1] ") and "\n[2]" not in narrow and len(narrow) <= 149
    assert search_tool(index).fit_context(1024).k == 3   # a GPT-2-sized window keeps three hits


def test_search_tool_never_raises(tmp_path, docs):
    path = tmp_path / "index.sqlite"
    build_index(docs[:5], path)
    tool = search_tool(SearchIndex(path))
    path.unlink()   # the file disappears under a running server: a new thread cannot open it
    answers = []
    worker = threading.Thread(target=lambda: answers.append(tool("try")))
    worker.start()
    worker.join()
    assert answers[0].startswith("search error: OperationalError")


def test_missing_or_foreign_index_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="no search index at .*search_index"):
        SearchIndex(tmp_path / "nope.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_text("not a database")
    with pytest.raises(InputError, match="not a crawl2chat search index"):
        SearchIndex(junk)


def test_rebuild_is_atomic_and_a_failed_build_keeps_the_old_index(tmp_path, docs):
    path = tmp_path / "index.sqlite"
    build_index(docs[:10], path)
    reader = SearchIndex(path)
    phrase = unique_phrase(docs[3], docs[:10])
    assert reader.search(phrase)[0].doc_id == docs[3].id

    def failing():
        yield from docs[10:20]
        raise RuntimeError("killed mid-build")
    with pytest.raises(RuntimeError):
        build_index(failing(), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.sqlite"]   # no temp file left
    assert SearchIndex(path).num_docs == 10

    build_index(docs[10:20], path)   # replaced whole, while a reader holds the old file open
    assert reader.search(phrase)[0].doc_id == docs[3].id
    fresh = SearchIndex(path)
    assert fresh.num_docs == 10 and not any(h.doc_id == docs[3].id for h in fresh.search(phrase))


def test_concurrent_readers_from_threads(index, docs):
    phrases = [(d.id, unique_phrase(d, docs)) for d in docs[::6]]
    errors = []

    def worker():
        try:
            for _ in range(3):
                for doc_id, phrase in phrases:
                    assert index.search(phrase)[0].doc_id == doc_id
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_latest_index_is_the_newest_under_the_lake(tmp_path, docs):
    assert latest_index(tmp_path) is None
    old, new = index_path(tmp_path, "CC-A"), index_path(tmp_path, "CC-B")
    build_index(docs[:3], old)
    build_index(docs[3:6], new)
    os.utime(old, (1, 1))
    assert new == tmp_path / "search" / "CC-B" / "index.sqlite" and latest_index(tmp_path) == new


def write_clean_text(lake: Path, docs: list[Document]) -> Path:
    clean = lake / "crawls" / CRAWL / "clean"
    sink = ParquetSink(clean / "part-00000.parquet")
    for d in docs:
        sink.write(d)
    sink.close()
    return clean


def test_search_index_asset_materializes_from_clean_text(tmp_path, docs):
    write_clean_text(tmp_path / "lake", docs)
    result, instance, tracker = materialize_search_index(tmp_path)
    assert result.success
    meta = instance.get_latest_materialization_event(dg.AssetKey("search_index")).asset_materialization.metadata
    path = Path(meta["path"].value)
    assert path == index_path(tmp_path / "lake", CRAWL) and meta["docs"].value == len(docs)
    assert meta["bytes"].value == path.stat().st_size
    hits = SearchIndex(path).search(unique_phrase(docs[20], docs))
    assert hits[0].doc_id == docs[20].id
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "finds_known_phrases" and check.passed
    assert [p.name for p in path.parent.parent.iterdir()] == [CRAWL]   # staging swept, nothing beside it
    run = mlflow.MlflowClient(tracker.tracking_uri).get_run(meta["mlflow_run_id"].value)
    assert run.data.tags["dagster.asset_key"] == "search_index" and run.data.metrics["docs"] == len(docs)
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["clean_text"]


def test_search_index_asset_without_clean_text_fails_clearly(tmp_path):
    result, _, _ = materialize_search_index(tmp_path, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "materialize `clean_text` first" in str(failure.step_failure_data.error.message)


def materialize_search_index(root: Path, **kw):
    from assets.lineage import MLflowTracker
    from assets.resources import CrawlSource, LakeResource
    from assets.serving import search_index
    (root / "dagster_home").mkdir()
    instance = dg.DagsterInstance.local_temp(str(root / "dagster_home"))
    tracker = MLflowTracker(tracking_uri=f"sqlite:///{root / 'mlflow.db'}", artifact_root=str(root / "mlartifacts"))
    result = dg.materialize([search_index], instance=instance, **kw,
                            resources={"lake": LakeResource(root=str(root / "lake")),
                                       "source": CrawlSource(crawl=CRAWL), "mlflow_tracker": tracker})
    return result, instance, tracker


@pytest.mark.slow
def test_real_stages_output_is_searchable(tmp_path):
    """A generated crawl through `crawl2chat process` (the real stages) into the lake's clean_text
    place, indexed by the `search_index` asset: a phrase copied from a known document returns it first."""
    cli = [str(Path(sys.executable).parent / "crawl2chat")]
    subprocess.run([*cli, "sample-crawl", "--out", str(tmp_path / "src"), "--pages", "40", "--files", "1"],
                   check=True, capture_output=True)
    warcs = sorted(str(p) for p in (tmp_path / "src").rglob("*.warc.gz"))
    subprocess.run([*cli, "process", *warcs, "--out", str(tmp_path / "lake" / "crawls" / CRAWL), "--workers", "1"],
                   check=True, capture_output=True)
    docs = list(read_documents([tmp_path / "lake" / "crawls" / CRAWL / "clean"]))
    assert len(docs) >= 10
    result, instance, _ = materialize_search_index(tmp_path)
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    index = SearchIndex(index_path(tmp_path / "lake", CRAWL))
    assert index.num_docs == len(docs)
    for doc in docs[:10]:
        hits = index.search(unique_phrase(doc, docs))
        assert hits[0].doc_id == doc.id and hits[0].url == doc.metadata["url"]
    probe = phrase_probe(index, docs)
    assert probe["probes"] == min(50, len(docs)) and probe["top_k_rate"] >= 0.9


def test_phrase_probe_leaves_out_phrases_many_pages_share_and_fails_an_index_of_other_pages(tmp_path):
    def page(i: int, middle: str) -> Document:
        words = " ".join(f"w{i}x{j}" for j in range(10))
        return Document(f"{words} {middle} {words}", f"doc-{i}", {"url": f"http://site.example/{i}"})
    shared = "the same twelve words sit in the middle of every one of these pages"
    docs = [page(i, shared) for i in range(5)] + [page(i, f"a middle of its own for page {i} alone") for i in range(5, 10)]
    build_index(iter(docs), tmp_path / "a.sqlite")
    index = SearchIndex(tmp_path / "a.sqlite")
    assert index.phrase_count(shared) == 5 and index.phrase_count("page 7 alone") == 1
    probe = phrase_probe(index, docs)   # five pages share their probe phrase: more than k=3 hold it
    assert (probe["probes"], probe["ambiguous"], probe["top_k_rate"]) == (5, 5, 1.0)
    others = [page(i, f"another middle for page {i} here") for i in range(20, 30)]
    build_index(iter(others), tmp_path / "b.sqlite")   # an index of other pages finds none of them
    wrong = phrase_probe(SearchIndex(tmp_path / "b.sqlite"), docs)
    assert wrong["ambiguous"] == 0 and wrong["top_k_rate"] == 0.0
