"""The facts of a report card, read from MLflow runs only (nothing is re-measured or assumed).

Lineage through the runs' dataset inputs and digests (every asset logs its upstream datasets with
their digests, and tags its own output's digest):

    model version run (base_model) --token_shards digest--> token_shards run --clean_text--> clean_text
    run --deduped_text--> deduped_text run --filtered_text[batch]--> filtered_text runs
    --extracted_text--> extracted_text runs --partition--> warc_files runs; crawl_manifest by crawl;
    token_shards run --tokenizer digest--> tokenizer run.

A producer is the latest run tagged with the digest that started before its consumer.
"""
from __future__ import annotations

import json
import tempfile
from collections import OrderedDict
from pathlib import Path

from training.evals.registry import TAG_RUN, Version, dataset_input, eval_summary


def _experiments(client) -> list[str]:
    return [e.experiment_id for e in client.search_experiments(filter_string="name LIKE 'crawl2chat/%'")]


def _latest(client, exps: list[str], where: str, before_ms: int | None = None):
    if before_ms is not None:
        where += f" and attributes.start_time <= {before_ms}"
    found = client.search_runs(exps, where, order_by=["attributes.start_time DESC"], max_results=1)
    return found[0] if found else None


def producer(client, exps, consumer, input_name: str, tag: str = "dataset.digest"):
    """The run that wrote the dataset `input_name` that `consumer` lists as an input."""
    found = dataset_input(consumer, input_name)
    if found is None or not found[0]:
        return None
    return _latest(client, exps, f"tags.`{tag}` LIKE '{found[0]}%'", consumer.info.start_time)


def _inputs_like(run, prefix: str) -> list[str]:
    return [d.dataset.name for d in run.inputs.dataset_inputs if d.dataset.name.startswith(prefix)]


def data_runs(client, base_run) -> dict:
    """{asset: run or [runs]} of the data and token stages a base model was trained from."""
    exps = _experiments(client)
    out: dict = {}
    shards = out["token_shards"] = producer(client, exps, base_run, "token_shards")
    if shards is None:
        return out
    out["tokenizer"] = producer(client, exps, shards, "tokenizer", tag="tokenizer.digest")
    clean = out["clean_text"] = producer(client, exps, shards, "clean_text")
    deduped = out["deduped_text"] = producer(client, exps, clean, "deduped_text") if clean else None
    filtered = [r for name in (_inputs_like(deduped, "filtered_text[") if deduped else [])
                if (r := producer(client, exps, deduped, name))]
    out["filtered_text"] = filtered
    out["extracted_text"] = [r for f in filtered if (r := producer(client, exps, f, "extracted_text"))]
    out["warc_files"] = [r for e in out["extracted_text"] if (r := _latest(
        client, exps, f"tags.`dagster.asset_key` = 'warc_files' and tags.`dagster.partition` = "
                      f"'{e.data.tags.get('dagster.partition', '')}'", e.info.start_time))]
    crawl = clean.data.params.get("crawl") if clean else None
    out["crawl_manifest"] = _latest(client, exps, f"tags.`dagster.asset_key` = 'crawl_manifest' and "
                                                  f"params.crawl = '{crawl}'", base_run.info.start_time) if crawl else None
    return out


def run_stats(client, run) -> dict:
    """The stage stats a data run wrote (report/stats.json: RunStats.as_dict())."""
    import mlflow
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="report/stats.json",
                                                       dst_path=tmp, tracking_uri=client.tracking_uri)
        except Exception:   # noqa: BLE001 - a run without the artifact (an older asset): no funnel from it
            return {}
        return json.loads(Path(path).read_text(), object_pairs_hook=OrderedDict)


def merge_stats(parts: list[dict]) -> dict:
    """Stage stats of several runs (one per WARC batch) summed stage by stage, order kept."""
    out: dict = OrderedDict()
    for stats in parts:
        for stage, s in stats.items():
            m = out.setdefault(stage, {"docs_in": 0, "docs_out": 0, "docs_removed": 0, "seconds": 0.0,
                                       "dropped": OrderedDict()})
            for k in ("docs_in", "docs_out", "docs_removed", "seconds"):
                m[k] += s.get(k, 0)
            for reason, n in s.get("dropped", {}).items():
                m["dropped"][reason] = m["dropped"].get(reason, 0) + n
    for m in out.values():
        m["dropped"] = OrderedDict(sorted(m["dropped"].items(), key=lambda kv: -kv[1]))
    return out


def crawl_facts(client, runs: dict) -> dict | None:
    if not runs.get("clean_text"):
        return None
    stats = merge_stats([run_stats(client, r) for key in ("extracted_text", "filtered_text")
                         for r in runs.get(key, [])]
                        + [run_stats(client, runs[k]) for k in ("deduped_text", "clean_text") if runs.get(k)])
    warc = runs.get("warc_files", [])
    manifest = runs.get("crawl_manifest")
    return {"crawl": runs["clean_text"].data.params.get("crawl"),
            "batches": sorted(r.data.tags.get("dagster.partition", "") for r in runs.get("extracted_text", [])),
            "files": sum(r.data.metrics.get("warc_files", 0) for r in warc) if warc else None,
            "bytes": sum(r.data.metrics.get("bytes", 0) for r in warc) if warc else None,
            "listed_files": manifest.data.metrics.get("warc_files") if manifest else None,
            "docs_in": next(iter(stats.values()))["docs_in"] if stats else None,
            "docs_out": list(stats.values())[-1]["docs_out"] if stats else None,
            "stats": stats}


def tokenizer_facts(runs: dict) -> dict | None:
    tok, shards = runs.get("tokenizer"), runs.get("token_shards")
    if tok is None and shards is None:
        return None
    m = tok.data.metrics if tok else {}
    s = shards.data.metrics if shards else {}
    return {"vocab_size": m.get("vocab_size"), "merges": m.get("merges"), "reserved_tokens": m.get("reserved_tokens"),
            "train_docs": m.get("train_docs"), "train_chars": m.get("train_chars"),
            "train_seconds": m.get("train_seconds"), "val_bytes_per_token": m.get("val_bytes_per_token"),
            "shards": {k: v for k, v in s.items() if k.split(".")[0] in ("train", "val")}}


def training_facts(client, run) -> dict:
    """What a training run (pretraining, SFT, ...) logged: sizes, tokens, FLOPs, time, losses, curves."""
    stage = run.data.tags.get("crawl2chat.stage") or "pretrain"
    p, m = run.data.params, run.data.metrics

    def param(key):
        value = p.get(f"{stage}.{key}")
        try:
            return float(value)
        except (TypeError, ValueError):
            return value

    arch = _export_config(client, run.info.run_id).get("model", {})   # SFT takes its shape from init_from
    history = {k: [(h.step, h.value) for h in client.get_metric_history(run.info.run_id, k)]
               for k in ("train/loss", "val/loss", "train/step_ms", "rl/reward", "heldout/reward")}
    tokens = m.get("train/tokens")
    fpt = param("flops_per_token")
    step_ms = [v for _, v in history["train/step_ms"]]
    return {"stage": stage, "run_id": run.info.run_id, "params": param("n_params"),
            "params_non_embedding": param("n_params_non_embedding"), "layers": arch.get("n_layer"),
            "width": arch.get("n_embd"), "heads": arch.get("n_head"), "context": param("seq_len"),
            "world_size": param("world_size"), "zero_stage": param("train.zero_stage"),
            "device": p.get(f"{stage}.device"), "steps": max((s for s, _ in history["train/loss"]), default=None),
            "tokens": tokens, "flops_per_token": fpt,
            "flops": fpt * tokens if isinstance(fpt, float) and tokens else None,
            "train_seconds": sum(step_ms) / 1000 if step_ms else None,
            "tokens_per_s": m.get("train/tokens_per_s"), "mfu": m.get("train/mfu"),
            "final_train_loss": m.get("train/loss"), "final_val_loss": m.get("val/loss"), "final_val_bpb": m.get("val/bpb"),
            "first_val_loss": history["val/loss"][0][1] if history["val/loss"] else None,
            "logged": {k: v for k, v in m.items() if "/" not in k},   # one-off figures (protocol_adherence, ...)
            "history": history, "wall_seconds": _seconds(run), "git_sha": run.data.tags.get("git_sha")}


def _export_config(client, run_id: str) -> dict:
    """The exported model's config.json (architecture) the run logged: as registered, or the trainer's copy."""
    import mlflow
    for artifact in ("model/config.json", "export/config.json"):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=tmp,
                                                           tracking_uri=client.tracking_uri)
            except Exception:   # noqa: BLE001 - not logged under this path
                continue
            return json.loads(Path(path).read_text())
    return {}


def eval_facts(client, v: Version) -> dict | None:
    rid = v.mv.tags.get(TAG_RUN)
    if not rid:
        return None
    run = client.get_run(rid)
    return {"run_id": rid, "summary": eval_summary(client, rid), "hardware": run.data.tags.get("hardware"),
            "env": {k[4:]: val for k, val in run.data.params.items() if k.startswith("env.")},
            "wall_seconds": _seconds(run), "git_sha": run.data.tags.get("git_sha")}


def _seconds(run) -> float | None:
    if run is None or not run.info.end_time:
        return None
    return (run.info.end_time - run.info.start_time) / 1000


def stage_clock(runs: dict) -> list[tuple[str, float | None, int]]:
    """(asset, seconds summed over its runs, run count) per data stage, in pipeline order."""
    rows = []
    for key in ("crawl_manifest", "warc_files", "extracted_text", "filtered_text", "deduped_text", "clean_text",
                "tokenizer", "token_shards"):
        found = runs.get(key)
        found = found if isinstance(found, list) else [found] if found else []
        if found:
            secs = [s for r in found if (s := _seconds(r)) is not None]
            rows.append((key, sum(secs) if secs else None, len(found)))
    return rows


RM_NAME = "crawl2chat-rm"


def failed(client, v: Version) -> str | None:
    """Why a version counts as failed (its blocking check failed, or its training run did), or None."""
    if str(v.mv.tags.get("check_passed", "")).lower() == "false":
        return "its blocking check failed"
    try:
        status = client.get_run(v.mv.run_id).info.status
    except Exception:   # noqa: BLE001 - a version whose run is gone: nothing to say about it
        return None
    return f"training run {status.lower()}" if status in ("FAILED", "KILLED") else None


def length_baselines(pairs_path: str | Path | None) -> dict | None:
    """Accuracy of "the shorter reply wins" and "the longer reply wins" on the held-out pairs (ties
    count half): what a reward model that only measured length would score on the same pairs."""
    if not pairs_path:
        return None
    from training.rl.preferences import read_pairs
    try:
        held = read_pairs(pairs_path, "heldout")
    except Exception:   # noqa: BLE001 - the pairs are gone (another machine, cleaned lake)
        return None
    if not held:
        return None
    shorter = sum(1.0 if len(r["chosen"]) < len(r["rejected"]) else 0.5 if len(r["chosen"]) == len(r["rejected"])
                  else 0.0 for r in held)
    return {"pairs": len(held), "shorter_wins": shorter / len(held), "longer_wins": 1 - shorter / len(held)}


def reward_models(client, refs: set[str]) -> list[dict]:
    """The reward model versions trained from a chat version in `refs`: held-out pairwise accuracy
    with its Wilson interval, and the length-only baselines on the same pairs."""
    from training.evals.intervals import wilson
    from training.evals.registry import dataset_input
    out = []
    for mv in sorted(client.search_model_versions(f"name = '{RM_NAME}'"), key=lambda m: int(m.version)):
        parent = mv.tags.get("chat_model")
        if parent not in refs:
            continue
        run = client.get_run(mv.run_id)
        m = run.data.metrics
        acc = m.get("accuracy", m.get("rm/accuracy"))
        n = int(m.get("heldout_pairs", m.get("rm/heldout_pairs", 0)) or 0)
        pairs = dataset_input(run, "preference_pairs")
        v = Version("RM", RM_NAME, "rm", mv)
        out.append({"ref": v.ref, "parent": parent, "run_id": mv.run_id, "accuracy": acc, "n": n,
                    "interval": list(wilson(round(acc * n), n)) if acc is not None and n else None,
                    "accuracy_before": m.get("accuracy_before"), "failed": failed(client, v),
                    "length_baseline": length_baselines(pairs[1] if pairs else None)})
    return out
