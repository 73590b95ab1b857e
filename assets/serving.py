"""The serving group: what the chat model reads at inference time.

    clean_text -> search_index     lake/search/<crawl>/index.sqlite   (SQLite FTS5, BM25)

The index covers exactly the text the model was trained on (the "working memory" next to the
"vague recollection" in the weights). Which model serves chat is the `ChatModel` resource
(assets/resources.py): an MLflow alias such as `crawl2chat-base@candidate`, or an export path.
"""
import dagster as dg

from assets.data import _crawl_of_run, clean_text
from assets.lineage import MLflowTracker
from assets.resources import CrawlSource, LakeResource
from pipelines.io import dir_digest, read_documents, staged

GROUP = "serving"
FINDS_PHRASES = "finds_known_phrases"
MIN_TOP_K_RATE = 0.9   # a phrase from a document finds that document in the top 3 at least this often


@dg.asset(group_name=GROUP, code_version="1", kinds={"python", "sqlite"}, deps=[clean_text],
          check_specs=[dg.AssetCheckSpec(FINDS_PHRASES, asset="search_index", blocking=False,
                                         description="a 12-word phrase from a sampled document finds it "
                                                     f"in the top 3 for at least {MIN_TOP_K_RATE:.0%} of 50 "
                                                     "documents whose phrase at most 3 documents hold "
                                                     "(first-place rate and the others, `ambiguous`, in the metadata)")])
def search_index(context: dg.AssetExecutionContext, source: CrawlSource, lake: LakeResource,
                 mlflow_tracker: MLflowTracker) -> dg.MaterializeResult:
    """BM25 full-text index (SQLite FTS5) of the crawl's clean text: url, title and text of every
    document; the chat's `search` tool returns its top snippets with their URLs."""
    import mlflow

    from training.engine.search import INDEX_FILE, SearchIndex, build_index, index_path, phrase_probe
    crawl = lake.crawl(_crawl_of_run(context, source))
    if not crawl.clean.exists():
        raise dg.Failure(f"no clean_text at {crawl.clean}: materialize `clean_text` first")
    digest = dir_digest(crawl.clean)
    out = index_path(lake.root, crawl.crawl)
    with mlflow_tracker.start_run(context, {"crawl": crawl.crawl},
                                  [("clean_text", str(crawl.clean), digest)]) as run:
        # The crawl's folder is staged: a killed build leaves no half index, and the next one sweeps it.
        with staged(out.parent, kind="search_index") as stage:
            stats = build_index(read_documents([crawl.clean]), stage / INDEX_FILE,
                                meta={"crawl": crawl.crawl, "source": str(crawl.clean), "source_digest": digest})
        probe = phrase_probe(SearchIndex(out), read_documents([crawl.clean]))
        mlflow.log_metrics({"docs": stats["docs"], "chars": stats["chars"], "bytes": stats["bytes"],
                            "seconds": stats["seconds"],
                            **{f"probe.{k}": v for k, v in probe.items() if v is not None}})
    passed = probe["top_k_rate"] is not None and probe["top_k_rate"] >= MIN_TOP_K_RATE
    check = dg.AssetCheckResult(check_name=FINDS_PHRASES, passed=passed,
                                metadata={k: v for k, v in probe.items() if v is not None})
    return dg.MaterializeResult(
        metadata={"path": dg.MetadataValue.path(str(out)), "crawl": crawl.crawl,
                  "docs": dg.MetadataValue.int(stats["docs"]), "chars": dg.MetadataValue.int(stats["chars"]),
                  "bytes": dg.MetadataValue.int(stats["bytes"]), "seconds": stats["seconds"],
                  "clean_text_digest": digest, "probe": dg.MetadataValue.json(probe),
                  "mlflow_run": dg.MetadataValue.url(mlflow_tracker.run_url(run)),
                  "mlflow_run_id": run.info.run_id},
        data_version=dg.DataVersion(digest[:32]), check_results=[check])


serving_assets = [search_index]
search_job = dg.define_asset_job("search", selection=[search_index], executor_def=dg.in_process_executor,
                                 description="Index the crawl's clean_text for the chat's search tool.")
