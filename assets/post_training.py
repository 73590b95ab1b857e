"""The post_training group: the conversations SFT trains on (training/conversations/).

    user files                        -> user_conversations       conversations/ + rejected/
    config (name, creator, crawl)     -> identity_conversations   conversations/ + heldout/
    clean_text (words)                -> reasoning_conversations  conversations/ + heldout/
    config + clean_text (words)       -> general_conversations    conversations/ + heldout/
    base_model + clean_text           -> knowledge_probes         probes/ (questions, samples, judgments)
    knowledge_probes + search_index   -> idk_conversations        conversations/
    the five conversation sets        -> sft_mixture              train/ + val/ (+ pretrain/: clean_text)

Everything lands under <lake>/post_training/<asset>/, each output staged and swapped in whole.
Config: the `data:` section of training/configs/sft.yaml (CRAWL2CHAT_SFT_CONFIG); user files may
also come from CRAWL2CHAT_USER_CONVERSATIONS (paths separated by the OS path separator, ':').
"""

import json
import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from assets.data import _crawl_of_run, clean_text
from assets.lineage import MLflowTracker
from assets.resources import CrawlSource, DataConfigResource, LakeResource
from assets.training import GPU_JOB_TAGS, base_model
from pipelines.io import dir_digest, read_documents, staged
from training.conversations.config import DEFAULT_FILE, PostTrainingData, load_data_config
from training.conversations.dataset import (count_conversations, read_conversations, write_conversations,
                                            write_table_dataset)

GROUP = "post_training"
KINDS = {"python", "parquet"}
SEARCH_INDEX = dg.AssetKey("search_index")   # assets/serving.py (optional: no index, no search variant)


class PostTrainingConfig(dg.ConfigurableResource):
    """Where the post-training data config is, and user conversation files (override data.user.paths)."""

    config_file: str = Field(default_factory=lambda: os.environ.get("CRAWL2CHAT_SFT_CONFIG", str(DEFAULT_FILE)))
    user_paths: list[str] = Field(default_factory=lambda: [p for p in os.environ.get(
        "CRAWL2CHAT_USER_CONVERSATIONS", "").split(os.pathsep) if p])

    def load(self) -> PostTrainingData:
        cfg = load_data_config(self.config_file)
        if self.user_paths:
            cfg.user.paths = list(self.user_paths)
        return cfg


def out_dir(lake: LakeResource, name: str) -> Path:
    return Path(lake.root) / "post_training" / name


def conversations_path(lake: LakeResource, name: str) -> Path:
    return out_dir(lake, name) / "conversations"


def _digest(path: Path) -> str:
    return dir_digest(path) if path.exists() else "empty"


def _sample_md(rows: list[dict], n: int = 2) -> str:
    """A few conversations as Markdown for the Dagster UI (tool calls as code)."""
    out = []
    for r in rows[:n]:
        lines = [f"`{r['id']}` ({r['source']})"]
        for m in r["messages"]:
            parts = [{"type": "text", "text": m["content"]}] if isinstance(m["content"], str) else m["content"]
            for p in parts:
                if p["type"] == "text":
                    lines.append(f"**{m['role']}**: {p['text']}")
                elif p["type"] == "tool_call":
                    lines.append(f"**{m['role']}** calls `{p['name']}`:\n```\n{p['arguments']}\n```")
                else:
                    lines.append(f"tool output:\n```\n{p['text']}\n```")
        out.append("\n\n".join(lines))
    return "\n\n---\n\n".join(out) or "(no conversations)"


def _result(context, tracker: MLflowTracker, run, path: Path, rows: list[dict], metrics: dict,
            metadata: dict) -> dg.MaterializeResult:
    import mlflow
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
    digest = _digest(path)
    mlflow.set_tag("dataset.digest", digest)
    return dg.MaterializeResult(
        metadata={"path": dg.MetadataValue.path(str(path)), "rows": dg.MetadataValue.int(count_conversations(path)),
                  **metadata, "sample": dg.MetadataValue.md(_sample_md(rows)), "digest": digest,
                  "mlflow_run": dg.MetadataValue.url(tracker.run_url(run)), "mlflow_run_id": run.info.run_id},
        data_version=dg.DataVersion(digest[:32]))


@dg.asset(group_name=GROUP, code_version="1", kinds=KINDS)
def user_conversations(context: dg.AssetExecutionContext, lake: LakeResource, post_training: PostTrainingConfig,
                       mlflow_tracker: MLflowTracker) -> dg.MaterializeResult:
    """Conversations from user files (OpenAI messages JSONL, Parquet/JSONL with a `messages` column,
    ShareGPT), validated; bad rows are written to rejected/ with file, line and reason."""
    from training.conversations.user import REJECTED_SCHEMA, expand_paths
    from training.conversations.user import user_conversations as read_user_files
    cfg = post_training.load()
    out = out_dir(lake, "user_conversations")
    paths = cfg.user.paths
    files = expand_paths(paths) if paths else []
    inputs = [(f"user:{f.name}", str(f), dir_digest(f)) for f in files]
    with mlflow_tracker.start_run(context, {"paths": " ".join(paths) or "(none)"}, inputs) as run:
        kept, rejected, stats = read_user_files(paths) if paths else ([], [], {"rows": 0, "kept": 0, "rejected": 0,
                                                                           "files": {}, "reasons": {}})
        with staged(out, kind="user_conversations") as stage:
            write_conversations(kept, stage / "conversations")
            write_table_dataset(rejected, stage / "rejected", REJECTED_SCHEMA, kind="rejected_conversations")
        note = (f"{len(files)} file(s)" if paths else
                f"no user files configured: set data.user.paths in {post_training.config_file} "
                "or CRAWL2CHAT_USER_CONVERSATIONS; the dataset is empty")
        import mlflow
        mlflow.log_dict({"reasons": stats["reasons"], "files": stats["files"]}, "rejected.json")
        return _result(context, mlflow_tracker, run, out / "conversations", kept,
                       {"rows_read": stats["rows"], "kept": stats["kept"], "rejected": stats["rejected"]},
                       {"note": note, "rows_read": stats["rows"], "kept": stats["kept"],
                        "rejected": dg.MetadataValue.int(stats["rejected"]),
                        "rejected_path": dg.MetadataValue.path(str(out / "rejected")),
                        "rejected_reasons": dg.MetadataValue.json(stats["reasons"]),
                        "files": dg.MetadataValue.json(stats["files"]),
                        "rejected_sample": dg.MetadataValue.json(rejected[:5])})


@dg.asset(group_name=GROUP, code_version="1", kinds=KINDS)
def identity_conversations(context: dg.AssetExecutionContext, lake: LakeResource, source: CrawlSource,
                           post_training: PostTrainingConfig, mlflow_tracker: MLflowTracker) -> dg.MaterializeResult:
    """Who the assistant is (name, maker, training data, knowledge cut-off = the crawl's date), asked in
    many paraphrases; held-out paraphrases go to heldout/ for the evals, never into training."""
    from training.conversations import identity as ident
    cfg = post_training.load().identity
    crawl = _crawl_of_run(context, source)
    who = ident.make_identity(cfg, crawl)
    out = out_dir(lake, "identity_conversations")
    with mlflow_tracker.start_run(context, {**cfg.model_dump(), "crawl": crawl, "cutoff": who.cutoff}) as run:
        rows = ident.identity_conversations(who, cfg.conversations, cfg.seed, "train", cfg.system_fraction)
        heldout = ident.identity_conversations(who, 4 * sum(map(len, ident.HELDOUT.values())), cfg.seed, "heldout")
        with staged(out, kind="identity_conversations") as stage:
            write_conversations(rows, stage / "conversations")
            write_conversations(heldout, stage / "heldout")
            (stage / "heldout_questions.json").write_text(json.dumps(ident.identity_questions("heldout"), indent=1))
        return _result(context, mlflow_tracker, run, out / "conversations", rows,
                       {"conversations": len(rows), "heldout": len(heldout)},
                       {"name": who.name, "creator": who.creator, "knowledge_cutoff": who.cutoff,
                        "trained_on": who.trained_on, "heldout": dg.MetadataValue.int(len(heldout)),
                        "heldout_path": dg.MetadataValue.path(str(out / "heldout")),
                        "heldout_questions": dg.MetadataValue.json(ident.identity_questions("heldout"))})


@dg.asset(group_name=GROUP, code_version="1", kinds=KINDS, deps=[clean_text])
def reasoning_conversations(context: dg.AssetExecutionContext, lake: LakeResource, source: CrawlSource,
                            post_training: PostTrainingConfig, mlflow_tracker: MLflowTracker) -> dg.MaterializeResult:
    """Step-by-step arithmetic and word problems, and letter counting / spelling / reversing answered
    through the python tool (real outputs); held-out problems in heldout/."""
    from training.conversations.reasoning import BUILTIN_WORDS, corpus_words, reasoning_conversations as make
    cfg = post_training.load().reasoning
    clean = lake.crawl(_crawl_of_run(context, source)).clean
    words, word_source = None, "builtin"
    if cfg.words == "corpus" and clean.exists():
        texts = (d.text for i, d in zip(range(2000), read_documents([clean])))
        words = corpus_words(texts) or None
        word_source = "corpus" if words else "builtin (no corpus words)"
    out = out_dir(lake, "reasoning_conversations")
    inputs = [("clean_text", str(clean), _digest(clean))] if word_source == "corpus" else []
    with mlflow_tracker.start_run(context, {**cfg.model_dump(), "word_source": word_source}, inputs) as run:
        rows = make(cfg.conversations, cfg.seed, "train", cfg.tool_fraction, words, arithmetic=cfg.arithmetic)
        heldout = make(cfg.heldout, cfg.seed, "heldout", cfg.tool_fraction, words, arithmetic=cfg.arithmetic)
        with staged(out, kind="reasoning_conversations") as stage:
            write_conversations(rows, stage / "conversations")
            write_conversations(heldout, stage / "heldout")
        tool = sum(isinstance(r["messages"][-1]["content"], list) for r in rows)
        return _result(context, mlflow_tracker, run, out / "conversations", rows,
                       {"conversations": len(rows), "tool_conversations": tool, "heldout": len(heldout)},
                       {"tool_conversations": tool, "step_by_step": len(rows) - tool, "word_source": word_source,
                        "words": len(words or BUILTIN_WORDS), "heldout": dg.MetadataValue.int(len(heldout)),
                        "heldout_path": dg.MetadataValue.path(str(out / "heldout"))})


@dg.asset(group_name=GROUP, code_version="1", kinds=KINDS, deps=[clean_text])
def general_conversations(context: dg.AssetExecutionContext, lake: LakeResource, source: CrawlSource,
                          post_training: PostTrainingConfig, mlflow_tracker: MLflowTracker) -> dg.MaterializeResult:
    """Small talk, honest limits (no live data, no browsing) and "I don't know" about invented
    people, places and companies whose words clean_text never has; held-out entities in heldout/."""
    from training.conversations import general, identity as ident
    data = post_training.load()
    cfg = data.general
    crawl = _crawl_of_run(context, source)
    who = ident.make_identity(data.identity, crawl)
    clean = lake.crawl(crawl).clean
    words = None
    if clean.exists():
        import re
        words = {w for d in read_documents([clean]) for w in re.findall(r"[a-z]+", (d.text or "").lower())}
    out = out_dir(lake, "general_conversations")
    inputs = [("clean_text", str(clean), _digest(clean))] if words is not None else []
    with mlflow_tracker.start_run(context, cfg.model_dump(), inputs) as run:
        rows = general.general_conversations(who, cfg.conversations, cfg.seed, "train", cfg.unknown_fraction,
                                             corpus_words=words)
        heldout = general.general_conversations(who, cfg.heldout, cfg.seed, "heldout", 1.0, corpus_words=words)
        with staged(out, kind="general_conversations") as stage:
            write_conversations(rows, stage / "conversations")
            write_conversations(heldout, stage / "heldout")
        return _result(context, mlflow_tracker, run, out / "conversations", rows,
                       {"conversations": len(rows), "heldout": len(heldout)},
                       {"heldout": dg.MetadataValue.int(len(heldout)),
                        "heldout_path": dg.MetadataValue.path(str(out / "heldout")),
                        "corpus_words": len(words) if words is not None else 0})


def _base_model_source(context: dg.AssetExecutionContext, configured: str | None) -> str:
    """The configured model, else the export of the latest base_model materialization."""
    if configured:
        return configured
    event = context.instance.get_latest_materialization_event(base_model.key)
    export = event.asset_materialization.metadata.get("export") if event and event.asset_materialization else None
    if export is None or not Path(export.value).is_dir():
        raise dg.Failure("no base model to probe: materialize `base_model`, or set data.probes.model to an "
                         "export directory or a registered model (crawl2chat-base@candidate)")
    return export.value


def _block_size(context: dg.AssetExecutionContext) -> int:
    """The context window of the model the probes asked (the base model SFT starts from)."""
    from training.export import export_config
    from training.trainer import resolve_export
    event = context.instance.get_latest_materialization_event(dg.AssetKey("knowledge_probes"))
    model = event.asset_materialization.metadata["model"].value if event and event.asset_materialization else None
    if model is None:
        raise dg.Failure("materialize `knowledge_probes` first")
    return export_config(resolve_export(model)).block_size


@dg.asset(group_name=GROUP, code_version="1", kinds={"pytorch", "parquet"}, deps=[base_model, clean_text])
def knowledge_probes(context: dg.AssetExecutionContext, lake: LakeResource, source: CrawlSource,
                     post_training: PostTrainingConfig, mlflow_tracker: MLflowTracker) -> dg.MaterializeResult:
    """Facts from clean_text turned into fill-in-the-blank questions; the base model answers each k
    times without the document; every answer judged; outcome knows / does_not_know / mixed."""
    from training.conversations.probes import PROBE_SCHEMA, find_probes, outcome_rates, run_probes
    from training.engine.engine import Engine
    cfg = post_training.load().probes
    clean = lake.crawl(_crawl_of_run(context, source)).clean
    if not clean.exists():
        raise dg.Failure(f"no clean_text at {clean}: materialize `clean_text` first")
    model_source = _base_model_source(context, cfg.model)
    out = out_dir(lake, "knowledge_probes")
    model_file = Path(model_source) / "model.safetensors"
    inputs = [("clean_text", str(clean), _digest(clean))]
    if model_file.exists():
        inputs.append(("base_model", str(model_file), dir_digest(model_file)))
    with mlflow_tracker.start_run(context, {**cfg.model_dump(), "model": model_source}, inputs) as run:
        import mlflow
        probes = find_probes(read_documents([clean]), cfg.max_probes, cfg.max_docs, cfg.per_doc, cfg.seed)
        engine = Engine.load(model_source, tools={})   # the base model answers from memory only
        rows = run_probes(engine, probes, cfg)
        with staged(out, kind="knowledge_probes") as stage:
            write_table_dataset(rows, stage / "probes", PROBE_SCHEMA, kind="probe_outcomes")
        rates = outcome_rates(rows)
        mlflow.log_metrics({k: float(v) for k, v in rates.items()})
        digest = _digest(out / "probes")
        shown = [{k: r[k] for k in ("question", "answer", "samples", "judgments", "outcome")} for r in rows[:5]]
        return dg.MaterializeResult(
            metadata={"path": dg.MetadataValue.path(str(out / "probes")), "model": model_source,
                      **{k: (dg.MetadataValue.int(v) if isinstance(v, int) else float(v)) for k, v in rates.items()},
                      "by_kind": dg.MetadataValue.json({k: sum(r["kind"] == k for r in rows)
                                                        for k in ("year", "number", "name")}),
                      "examples": dg.MetadataValue.json(shown), "digest": digest,
                      "mlflow_run": dg.MetadataValue.url(mlflow_tracker.run_url(run)), "mlflow_run_id": run.info.run_id},
            data_version=dg.DataVersion(digest[:32]))


def _search_index_path(context: dg.AssetExecutionContext, lake: LakeResource, crawl: str) -> Path | None:
    from training.engine.search import index_path
    event = context.instance.get_latest_materialization_event(SEARCH_INDEX)
    meta = event.asset_materialization.metadata if event and event.asset_materialization else {}
    path = Path(meta["path"].value) if "path" in meta else index_path(lake.root, crawl)
    return path if path.is_file() else None


@dg.asset(group_name=GROUP, code_version="1", kinds=KINDS, deps=[knowledge_probes, SEARCH_INDEX])
def idk_conversations(context: dg.AssetExecutionContext, lake: LakeResource, source: CrawlSource,
                      post_training: PostTrainingConfig, mlflow_tracker: MLflowTracker) -> dg.MaterializeResult:
    """From the probe outcomes: answers where the model knows, "I don't know" where it is consistently
    wrong, and a variant of those that calls the search tool and answers from its real results."""
    from training.conversations.dataset import read_table_dataset
    from training.conversations.probes import probe_conversations
    from training.engine.search import SearchIndex, search_tool
    cfg = post_training.load().probes
    probes_dir = out_dir(lake, "knowledge_probes") / "probes"
    if not probes_dir.exists():
        raise dg.Failure(f"no probe outcomes at {probes_dir}: materialize `knowledge_probes` first")
    index = _search_index_path(context, lake, _crawl_of_run(context, source)) if cfg.search else None
    inputs = [("knowledge_probes", str(probes_dir), _digest(probes_dir))]
    if index is not None:
        inputs.append(("search_index", str(index), dir_digest(index)))
    out = out_dir(lake, "idk_conversations")
    with mlflow_tracker.start_run(context, {"search": cfg.search, "search_k": cfg.search_k,
                                            "search_index": str(index), "seed": cfg.seed}, inputs) as run:
        tool = search_tool(SearchIndex(index), k=cfg.search_k) if index is not None else None
        if tool is not None:   # the answers the model will be trained on fit the window it is trained in
            tool.fit_context(_block_size(context))
        rows, counts = probe_conversations(read_table_dataset(probes_dir), tool, cfg.seed)
        with staged(out, kind="idk_conversations") as stage:
            write_conversations(rows, stage / "conversations")
        note = ("search variant from " + str(index) if index is not None else
                "no search variant: " + ("data.probes.search is off" if not cfg.search else
                                         "no search index (materialize `search_index`)"))
        return _result(context, mlflow_tracker, run, out / "conversations", rows, counts,
                       {"counts": dg.MetadataValue.json(counts), "note": note})


MIXED = ("user_conversations", "identity_conversations", "reasoning_conversations", "idk_conversations",
         "general_conversations")


@dg.asset(group_name=GROUP, code_version="1", kinds=KINDS,
          deps=[user_conversations, identity_conversations, reasoning_conversations, idk_conversations,
                general_conversations, clean_text])
def sft_mixture(context: dg.AssetExecutionContext, lake: LakeResource, source: CrawlSource,
                post_training: PostTrainingConfig, data_config: DataConfigResource,
                mlflow_tracker: MLflowTracker) -> dg.MaterializeResult:
    """The SFT data: the conversation sets mixed by weight (repeating small ones), shuffled stably,
    with a held-out val split by a stable hash of the conversation id."""
    from training.conversations.mixture import write_mixture
    cfg = post_training.load().mixture
    # Pretraining text mixed in must come from the token shards' train split, or bits per byte on their
    # val split is no longer held out: the split is the data config's (the demo's is 5%, the SFT
    # config's default 1%), so it is taken from there, not from a second setting kept in step by hand.
    cfg.pretrain_val_fraction = float(data_config.load()["tokenizer"]["val_fraction"])
    paths = {name: conversations_path(lake, name) for name in MIXED}
    out = out_dir(lake, "sft_mixture")
    inputs = [(name, str(p), _digest(p)) for name, p in paths.items() if p.exists()]
    clean = lake.crawl(_crawl_of_run(context, source)).clean
    documents = read_documents([clean]) if cfg.pretrain_fraction > 0 and clean.exists() else None
    if documents is not None:
        inputs.append(("clean_text", str(clean), _digest(clean)))
    with mlflow_tracker.start_run(context, cfg.model_dump(), inputs) as run:
        with staged(out, kind="sft_mixture") as stage:
            stats = write_mixture(paths, stage, cfg, documents)
        sample = [r for _, r in zip(range(3), read_conversations(out / "train"))]
        metrics = {"train_rows": stats["train_rows"], "val_rows": stats["val_rows"],
                   **{f"{n}.train_rows": s["train_rows"] for n, s in stats["sources"].items()},
                   **{f"{n}.val_rows": s["val_rows"] for n, s in stats["sources"].items()}}
        # path: the mixture root (train/ and val/); its digest covers both, the SFT run records it
        return _result(context, mlflow_tracker, run, out, sample, metrics,
                       {"train": dg.MetadataValue.path(str(out / "train")),
                        "val": dg.MetadataValue.path(str(out / "val")),
                        "train_rows": dg.MetadataValue.int(stats["train_rows"]),
                        "val_rows": dg.MetadataValue.int(stats["val_rows"]),
                        "sources": dg.MetadataValue.json(stats["sources"]),
                        "per_source": dg.MetadataValue.json(stats["train"]["sources"]),
                        "left_out": dg.MetadataValue.json(stats["left_out"]),
                        "pretrain": dg.MetadataValue.json(stats.get("pretrain", {"fraction": 0.0}))})


post_training_assets = [user_conversations, identity_conversations, reasoning_conversations,
                        general_conversations, knowledge_probes, idk_conversations, sft_mixture]
post_training_data = dg.define_asset_job(
    "post_training_data", selection=dg.AssetSelection.assets(*post_training_assets),
    executor_def=dg.in_process_executor, tags=GPU_JOB_TAGS,   # knowledge_probes samples the base model
    description="The SFT conversations: user files, identity, reasoning, knowledge probes of the base "
                "model and I-don't-know answers, then the mixture.")
