"""Model versions in the MLflow registry and their evaluation runs.

    stages:  BASE crawl2chat-base -> SFT crawl2chat-chat -> RL crawl2chat-rl -> RLHF crawl2chat-rlhf
    a version's parent: the tag whose value names a version of an earlier stage
                        (chat_model tags base_model = "crawl2chat-base/3")
    evaluation run:     experiment crawl2chat/evaluation, tags model_version = "NAME/VERSION",
                        model_run_id, eval_suite; metrics "<task>/<metric>"; per-example results
                        evals/<task>.jsonl; the version gets tags eval_run_id and eval_suite
"""
from __future__ import annotations

import json
import os
import platform
import re
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse, urlsplit, urlunsplit

STAGES = (("BASE", "crawl2chat-base", "base"), ("SFT", "crawl2chat-chat", "chat"),
          ("RL", "crawl2chat-rl", "chat"), ("RLHF", "crawl2chat-rlhf", "chat"))
EXPERIMENT = "crawl2chat/evaluation"
TAG_RUN, TAG_SUITE = "eval_run_id", "eval_suite"
PACKAGES = ("torch", "deepspeed", "tokenizers", "mlflow", "dagster", "pyspark", "numpy", "trafilatura")
_REF = re.compile(r"^(crawl2chat-[a-z]+)/(\d+)$")


@dataclass
class Version:
    stage: str        # BASE | SFT | RL | RLHF
    name: str
    kind: str         # base | chat
    mv: object        # mlflow ModelVersion

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.mv.version}"


def default_tracking_uri() -> str:
    home = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / "dagster_home")
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"


def mlflow_ui(tracking_uri: str, ui_url: str | None = None) -> str:
    """The MLflow UI address for links: `ui_url` (CRAWL2CHAT_MLFLOW_UI) when set, else the tracking
    server itself for an http(s) tracking URI (credentials left out), else the local UI on MLFLOW_PORT."""
    if ui_url:
        return ui_url.rstrip("/")
    parts = urlsplit(tracking_uri)
    if parts.scheme in ("http", "https"):
        return urlunsplit((parts.scheme, parts.hostname + (f":{parts.port}" if parts.port else ""),
                           parts.path.rstrip("/"), "", ""))
    return f"http://127.0.0.1:{os.environ.get('MLFLOW_PORT', '5000')}"


def run_link(tracking_uri: str, run) -> str:
    return f"{mlflow_ui(tracking_uri, os.environ.get('CRAWL2CHAT_MLFLOW_UI'))}/#/experiments/{run.info.experiment_id}" \
           f"/runs/{run.info.run_id}"


def version_link(tracking_uri: str, name: str, version) -> str:
    return f"{mlflow_ui(tracking_uri, os.environ.get('CRAWL2CHAT_MLFLOW_UI'))}/#/models/{name}/versions/{version}"


def registered_versions(client) -> tuple[list[Version], list[str]]:
    """Every version of every stage's model, oldest first; notes for the stages not registered."""
    out, notes = [], []
    for stage, name, kind in STAGES:
        found = client.search_model_versions(f"name = '{name}'")
        if not found:
            notes.append(f"{stage}: no {name} registered")
        out += [Version(stage, name, kind, mv) for mv in sorted(found, key=lambda m: int(m.version))]
    return out, notes


def pending_versions(client, suite_digest: str) -> list[Version]:
    """Versions with no evaluation by this suite (version and config) yet."""
    return [v for v in registered_versions(client)[0] if v.mv.tags.get(TAG_SUITE) != suite_digest]


def parent_of(client, v: Version) -> Version | None:
    """The version of an earlier stage that this one was trained from (by its lineage tags)."""
    position = [stage for stage, *_ in STAGES].index(v.stage)
    earlier = {name: (stage, kind) for stage, name, kind in STAGES[:position]}
    for value in v.mv.tags.values():
        m = _REF.match(str(value))
        if m and m[1] in earlier:
            stage, kind = earlier[m[1]]
            return Version(stage, m[1], kind, client.get_model_version(m[1], m[2]))
    return None


def lineage_of(client, v: Version) -> list[Version]:
    """The chain from the base version down to `v`."""
    chain = [v]
    while (p := parent_of(client, chain[0])) is not None:
        chain.insert(0, p)
    return chain


def lineages(client) -> list[list[Version]]:
    """One chain per leaf: every version that no later version was trained from."""
    versions = registered_versions(client)[0]
    parents = {p.ref for v in versions if (p := parent_of(client, v)) is not None}
    return [lineage_of(client, v) for v in versions if v.ref not in parents]


def trees(client) -> list[tuple[list[Version], dict[str, str | None]]]:
    """One lineage tree per root version (a base model and everything trained from it, RL and RLHF
    side by side): (versions in stage then version order, {ref: parent ref or None})."""
    versions = registered_versions(client)[0]
    parent = {v.ref: (p.ref if (p := parent_of(client, v)) is not None else None) for v in versions}

    def root(ref: str) -> str:
        seen = set()
        while parent.get(ref) and ref not in seen:
            seen.add(ref)
            ref = parent[ref]
        return ref
    groups: dict[str, list[Version]] = {}
    for v in versions:
        groups.setdefault(root(v.ref), []).append(v)
    return [(vs, {v.ref: parent[v.ref] for v in vs}) for vs in groups.values()]


def local_path(uri: str) -> Path | None:
    """The local path of a file:// URI or a plain path (None for remote storage)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path if parsed.scheme else uri))
    return None


def dataset_input(run, name: str) -> tuple[str, str | None] | None:
    """(digest, local path) of the dataset `name` a run lists as its input."""
    for d in run.inputs.dataset_inputs:
        if d.dataset.name == name:
            try:
                uri = json.loads(d.dataset.source).get("uri", "")
            except (ValueError, AttributeError):
                uri = ""
            path = local_path(uri) if uri else None
            return d.dataset.digest, str(path) if path else None
    return None


def export_dir(client, v: Version, cache: Path | None = None) -> Path:
    """The version's exported model, through the engine's model cache (the same copy that
    Engine.load('NAME/VERSION') uses)."""
    from training.engine.engine import cached_model
    return cached_model(v.mv, client.tracking_uri, cache)


def environment() -> dict[str, str]:
    """Hardware and package versions of this process (logged with every evaluation)."""
    import torch
    hw = torch.cuda.get_device_name() if torch.cuda.is_available() else \
        f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    env = {"hardware": hw, "python": platform.python_version(), "platform": platform.platform()}
    for p in PACKAGES:
        try:
            env[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return env


def log_evaluation(client, experiment_id: str, v: Version, results: list, params: dict, tags: dict,
                   parent_run_id: str | None = None) -> str:
    """One MLflow run for one version's results: every metric, per-example JSONL artifacts, the
    environment; the version is tagged with the run. Returns the run id."""
    from mlflow.entities import Metric, Param
    import time
    env = environment()
    run_tags = {"model_name": v.name, "model_version": v.ref, "model_stage": v.stage, "model_run_id": v.mv.run_id,
                "hardware": env["hardware"], "mlflow.runName": f"eval {v.ref}", **tags}
    if parent_run_id:
        run_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id, tags=run_tags)
    rid = run.info.run_id
    try:
        ts = int(time.time() * 1000)
        metrics = [Metric(k, val, ts, 0) for r in results for k, val in r.all_metrics().items()]
        all_params = {**{f"suite.{k}": v_ for k, v_ in params.items()}, **{f"env.{k}": val for k, val in env.items()}}
        items = [Param(k, str(val)[:6000]) for k, val in all_params.items()]
        for i in range(0, max(len(metrics), len(items)), 100):
            client.log_batch(rid, metrics=metrics[i:i + 100], params=items[i:i + 100])
        with tempfile.TemporaryDirectory() as tmp:
            for r in results:
                with open(Path(tmp) / f"{r.task}.jsonl", "w") as f:
                    for rec in r.records:
                        f.write(json.dumps(rec, default=str) + "\n")
            summary = [{"task": r.task, "kind": r.kind, "score": r.score, "n": r.n, "metrics": r.metrics,
                        "higher_is_better": r.higher_is_better, "seconds": r.seconds, "note": r.note,
                        "interval": list(r.interval) if r.interval else None,
                        "interval_method": r.interval_method} for r in results]
            (Path(tmp) / "summary.json").write_text(json.dumps({"model_version": v.ref, "tasks": summary}, indent=1))
            client.log_artifacts(rid, tmp, "evals")
        client.set_terminated(rid, "FINISHED")
    except BaseException:
        client.set_terminated(rid, "FAILED")
        raise
    client.set_model_version_tag(v.name, v.mv.version, TAG_RUN, rid)
    if "eval_suite" in tags:
        client.set_model_version_tag(v.name, v.mv.version, TAG_SUITE, tags["eval_suite"])
    return rid


def eval_summary(client, run_id: str) -> dict:
    """The summary.json an evaluation run wrote: {"model_version", "tasks": [...]}."""
    import mlflow
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="evals/summary.json", dst_path=tmp,
                                                   tracking_uri=client.tracking_uri)
        return json.loads(Path(path).read_text())


def lineage_data(client, lineage: list[Version]) -> tuple[Path | None, Path | None, float | None]:
    """(token shards root, clean_text dir, validation fraction) the lineage's base model was trained
    from, as its MLflow runs recorded them (None where a run did not record it or the path is gone)."""
    from training.evals.card_data import _experiments, producer
    if lineage[0].stage != "BASE":
        return None, None, None
    base_run = client.get_run(lineage[0].mv.run_id)
    shards = dataset_input(base_run, "token_shards")
    shards_root = Path(shards[1]) if shards and shards[1] else None
    if shards_root is not None and shards_root.name == "manifest.json":
        shards_root = shards_root.parent
    if shards_root is None or not (shards_root / "manifest.json").exists():
        return None, None, None
    val_fraction = json.loads((shards_root / "manifest.json").read_text()).get("split_rule", {}).get("val_fraction")
    shards_run = producer(client, _experiments(client), base_run, "token_shards")
    clean = dataset_input(shards_run, "clean_text") if shards_run else None
    clean_dir = Path(clean[1]) if clean and clean[1] and Path(clean[1]).exists() else None
    return shards_root, clean_dir, val_fraction


def lineage_sft_mixture(client, lineage: list[Version]) -> Path | None:
    """The SFT mixture the lineage's SFT version trained on (its run's sft_mixture input), if still there."""
    sft = next((v for v in lineage if v.stage == "SFT"), None)
    found = dataset_input(client.get_run(sft.mv.run_id), "sft_mixture") if sft else None
    return Path(found[1]) if found and found[1] and Path(found[1]).exists() else None
