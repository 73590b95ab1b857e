"""The tokens group: a byte-level BPE tokenizer trained on the clean text, then token shards.

    clean_text -> tokenizer      lake/tokenizer/<version>/{tokenizer.json, tokenizer_meta.json, token_bytes.npy}
    clean_text + tokenizer -> token_shards    lake/tokens/<version>/{train,val}/shard_*.{bin,idx}, manifest.json

<version> is a short digest of the inputs (dataset digests) and the settings that change the
output, so a new corpus or a new vocabulary size lands beside the old one instead of over it, and
re-materializing with the same inputs replaces it in place. The tokenizer trains on train-split
documents only, so the validation bytes-per-token it reports is measured on unseen text.
"""

import hashlib
import json
from pathlib import Path

import dagster as dg

from assets.data import _crawl_of_run, clean_text
from assets.lineage import MLflowTracker
from assets.resources import CrawlSource, DataConfigResource, LakeResource, SparkResource
from pipelines.errors import UserError
from pipelines.io import dir_digest, read_documents, staged
from pipelines.shards import split_of, tokens_config

GROUP = "tokens"
TRAIN_KEYS = ("vocab_size", "max_chars", "max_docs", "min_frequency", "val_fraction")
SHARD_KEYS = ("val_fraction", "shard_tokens")
VAL_SAMPLE_DOCS = 5000  # val documents the tokenizer asset encodes to report bytes per token
SHARDS_CONSISTENT = "shards_consistent"
TRAIN_NOT_EMPTY = "train_not_empty"


def _version(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _texts(clean_dir: Path, split: str, val_fraction: float, limit: int | None = None):
    n = 0
    for doc in read_documents([clean_dir]) if Path(clean_dir).exists() else ():
        if limit is not None and n >= limit:
            return
        if doc.text and split_of(doc.id, val_fraction) == split:
            n += 1
            yield doc.text


def _pieces_markdown(tok, text: str, max_tokens: int = 60) -> str:
    """One sample's tokens separated by '|', the way the CLI shows them (without colours)."""
    ids = tok.encode(text)[:max_tokens]
    pieces = [tok.piece(i).decode("utf-8", "backslashreplace").replace("\n", "\\n") for i in ids]
    return "`" + "|".join(p.replace("`", "'") for p in pieces) + "`\n\nids: " + " ".join(map(str, ids))


@dg.asset(group_name=GROUP, code_version="1", kinds={"python", "tokenizers"}, deps=[clean_text])
def tokenizer(context: dg.AssetExecutionContext, source: CrawlSource, lake: LakeResource,
              data_config: DataConfigResource, mlflow_tracker: MLflowTracker) -> dg.MaterializeResult:
    """Byte-level BPE (GPT-4 split pattern) trained on a sample of the crawl's train-split clean
    text; special tokens for documents, chat and tools reserved at the end of the vocabulary."""
    import mlflow

    from pipelines.tokenizer import bytes_per_token, load_tokenizer, train_tokenizer
    crawl, cfg = lake.crawl(_crawl_of_run(context, source)), data_config.load()
    tcfg = tokens_config(cfg)
    settings = {k: tcfg.get(k) for k in TRAIN_KEYS}
    clean_digest = dir_digest(crawl.clean) if crawl.clean.exists() else "empty"
    version = _version("tokenizer", clean_digest, settings)
    out = Path(lake.root) / "tokenizer" / version
    inputs = [("clean_text", str(crawl.clean), clean_digest)]
    with mlflow_tracker.start_run(context, {"tokenizer": settings, "crawl": crawl.crawl}, inputs) as run:
        with staged(out, kind="tokenizer") as stage:
            train_tokenizer(_texts(crawl.clean, "train", tcfg["val_fraction"]), int(tcfg["vocab_size"]),
                            stage, max_chars=tcfg.get("max_chars"), max_docs=tcfg.get("max_docs"),
                            min_frequency=int(tcfg.get("min_frequency", 2)))
        tok = load_tokenizer(out)
        val = bytes_per_token(tok, _texts(crawl.clean, "val", tcfg["val_fraction"], VAL_SAMPLE_DOCS))
        train = bytes_per_token(tok, _texts(crawl.clean, "train", tcfg["val_fraction"], 500))
        training = tok.meta["training"]
        metrics = {"vocab_size": tok.vocab_size, "merges": tok.meta["merges"],
                   "reserved_tokens": tok.meta["reserved_tokens"], "train_docs": training["docs"],
                   "train_chars": training["chars"], "train_seconds": training["seconds"],
                   "val_docs": val["docs"]}
        if val["bytes_per_token"] is not None:
            metrics["val_bytes_per_token"] = val["bytes_per_token"]
        if train["bytes_per_token"] is not None:
            metrics["train_sample_bytes_per_token"] = train["bytes_per_token"]
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(out), artifact_path="tokenizer")
        mlflow.set_tag("tokenizer.digest", tok.digest)
    sample = next(_texts(crawl.clean, "train", tcfg["val_fraction"], 1), "The quick brown fox.")[:300]
    return dg.MaterializeResult(
        metadata={"path": dg.MetadataValue.path(str(out)), "version": version, "digest": tok.digest,
                  "vocab_size": tok.vocab_size, "merges": tok.meta["merges"],
                  "special_tokens": dg.MetadataValue.json(tok.special_ids),
                  "val_bytes_per_token": val["bytes_per_token"] if val["docs"] else "no val documents",
                  "train_sample_bytes_per_token": train["bytes_per_token"],
                  "training": dg.MetadataValue.json(training),
                  "sample": dg.MetadataValue.md(_pieces_markdown(tok, sample)),
                  "mlflow_run": dg.MetadataValue.url(mlflow_tracker.run_url(run)),
                  "mlflow_run_id": run.info.run_id},
        data_version=dg.DataVersion(tok.digest[:32]))


def _tokenizer_path(context: dg.AssetExecutionContext, lake: LakeResource) -> Path:
    """The tokenizer the latest `tokenizer` materialization wrote (else the newest in the lake)."""
    from pipelines.tokenizer import latest_tokenizer
    event = context.instance.get_latest_materialization_event(dg.AssetKey("tokenizer"))
    if event is not None and event.asset_materialization is not None:
        path = event.asset_materialization.metadata.get("path")
        if path is not None and Path(path.value).is_dir():
            return Path(path.value)
    found = latest_tokenizer(lake.root)
    if found is None:
        raise dg.Failure(f"no tokenizer under {lake.root}/tokenizer: materialize `tokenizer` first")
    return found


@dg.asset(group_name=GROUP, code_version="1", kinds={"spark", "numpy"}, deps=[clean_text, tokenizer],
          check_specs=[dg.AssetCheckSpec(SHARDS_CONSISTENT, asset="token_shards", blocking=True,
                                         description="shard headers, sha256 digests and token counts "
                                                     "match the manifest; every document starts with BOS"),
                       dg.AssetCheckSpec(TRAIN_NOT_EMPTY, asset="token_shards", blocking=True,
                                         description="the train split has tokens")])
def token_shards(context: dg.AssetExecutionContext, source: CrawlSource, lake: LakeResource,
                 spark: SparkResource, data_config: DataConfigResource,
                 mlflow_tracker: MLflowTracker) -> dg.MaterializeResult:
    """The clean text encoded into uint16/uint32 train/val shards with document indexes, split by a
    stable hash of the document id; identical bytes for the same input on any partitioning."""
    import mlflow

    from pipelines.spark.tokens import write_token_shards_spark
    from pipelines.tokenizer import load_tokenizer
    crawl, cfg = lake.crawl(_crawl_of_run(context, source)), data_config.load()
    tcfg = tokens_config(cfg)
    tok_path = _tokenizer_path(context, lake)
    tok = load_tokenizer(tok_path)
    clean_digest = dir_digest(crawl.clean) if crawl.clean.exists() else "empty"
    settings = {k: tcfg[k] for k in SHARD_KEYS}
    version = _version("tokens", clean_digest, tok.digest, settings)
    out = Path(lake.root) / "tokens" / version
    inputs = [("clean_text", str(crawl.clean), clean_digest), ("tokenizer", str(tok_path), tok.digest)]
    with mlflow_tracker.start_run(context, {"tokens": settings, "crawl": crawl.crawl,
                                            "tokenizer": str(tok_path)}, inputs) as run:
        manifest = write_token_shards_spark(spark.session(), [crawl.clean], out, tok_path, cfg)
        metrics = {"seconds": manifest["seconds"]}
        for split, info in manifest["splits"].items():
            metrics.update({f"{split}.tokens": info["tokens"], f"{split}.documents": info["documents"],
                            f"{split}.shards": len(info["shards"]), f"{split}.bytes": info["bytes"]})
            text_tokens = info["tokens"] - info["documents"]
            if text_tokens:
                metrics[f"{split}.bytes_per_token"] = info["bytes"] / text_tokens
        mlflow.log_metrics(metrics)
        mlflow.log_dict({k: v for k, v in manifest.items() if k != "seconds"}, "manifest.json")
        mlflow.set_tag("dataset.digest", dir_digest(out / "manifest.json"))
    checks = _check_shards(out, manifest)
    return dg.MaterializeResult(
        metadata={"path": dg.MetadataValue.path(str(out)), "version": version,
                  "tokenizer": dg.MetadataValue.path(str(tok_path)), "tokenizer_digest": tok.digest,
                  "dtype": manifest["dtype"],
                  **{f"{s}_tokens": dg.MetadataValue.int(i["tokens"]) for s, i in manifest["splits"].items()},
                  **{f"{s}_documents": dg.MetadataValue.int(i["documents"]) for s, i in manifest["splits"].items()},
                  "bytes_per_token": dg.MetadataValue.json({k: v for k, v in metrics.items()
                                                            if k.endswith("bytes_per_token")}),
                  "seconds": manifest["seconds"],
                  "mlflow_run": dg.MetadataValue.url(mlflow_tracker.run_url(run)),
                  "mlflow_run_id": run.info.run_id},
        data_version=dg.DataVersion(dir_digest(out / "manifest.json")[:32]),
        check_results=checks)


def _check_shards(out: Path, manifest: dict) -> list[dg.AssetCheckResult]:
    from pipelines.shards import TokenShards
    problems = []
    for split in manifest["splits"]:
        try:
            ts = TokenShards(out, split, verify_digests=True)
            starts = ts.doc_starts()
            if len(starts) != ts.num_documents:
                problems.append(f"{split}: index has {len(starts)} documents, manifest {ts.num_documents}")
            if len(starts) and any(ts.tokens(int(s), 1)[0] != ts.bos_id for s in starts[:1000]):
                problems.append(f"{split}: a document does not start with BOS")
        except (OSError, ValueError, UserError) as e:  # InputError names the damaged file
            problems.append(f"{split}: {e}")
    train = manifest["splits"]["train"]["tokens"]
    return [dg.AssetCheckResult(check_name=SHARDS_CONSISTENT, passed=not problems,
                                metadata={"problems": dg.MetadataValue.json(problems)}),
            dg.AssetCheckResult(check_name=TRAIN_NOT_EMPTY, passed=train > 0, metadata={"train_tokens": train})]


token_assets = [tokenizer, token_shards]
