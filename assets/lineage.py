"""MLflow lineage: one MLflow run per asset materialization (a small resource of our own; the
legacy dagster-mlflow resource has run-naming and premature-finish bugs)."""
from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import dagster as dg
from pydantic import Field

from training.evals.registry import mlflow_ui


def _dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / "dagster_home")


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{_dagster_home() / 'mlflow.db'}"


def default_artifact_root() -> str:
    return os.environ.get("CRAWL2CHAT_MLFLOW_ARTIFACTS") or str(_dagster_home() / "mlartifacts")


def git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = str(v)[:500]
    return out


class MLflowTracker(dg.ConfigurableResource):
    """Tracking URI and artifact root are always explicit (default: inside DAGSTER_HOME)."""

    tracking_uri: str = Field(default_factory=default_tracking_uri)
    artifact_root: str = Field(default_factory=default_artifact_root)
    ui_url: Optional[str] = Field(default_factory=lambda: os.environ.get("CRAWL2CHAT_MLFLOW_UI"))

    @property
    def ui(self) -> str:
        """Where a person opens MLflow: ui_url when set, else the tracking server itself (a tracking
        URI of http(s), credentials left out), else the local UI `make ui` starts on MLFLOW_PORT."""
        return mlflow_ui(self.tracking_uri, self.ui_url)

    def _experiment_id(self, name: str) -> str:
        import mlflow
        mlflow.set_tracking_uri(self.tracking_uri)
        exp = mlflow.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = (Path(self.artifact_root) / name.replace("/", "_")).resolve().as_uri()
        if self.tracking_uri.startswith(("http://", "https://")):
            location = None  # a tracking server stores artifacts itself (mlflow-artifacts:/, --serve-artifacts)
        try:
            return mlflow.create_experiment(name, artifact_location=location)
        except Exception:  # another process created it first
            return mlflow.get_experiment_by_name(name).experiment_id

    def run_url(self, run) -> str:
        return f"{self.ui}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"

    @contextmanager
    def start_run(self, context: dg.AssetExecutionContext, params: dict | None = None,
                  inputs: list[tuple[str, str, str]] = ()) -> Iterator:
        """An MLflow run for this materialization: experiment per asset group, Dagster tags,
        params = stage config, inputs = upstream datasets as (name, path, digest)."""
        import mlflow
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        asset_key = context.asset_key.to_user_string()
        group = context.assets_def.group_names_by_key.get(context.asset_key, "default")
        partition = context.partition_key if context.has_partition_key else ""
        code_version = context.assets_def.code_versions_by_key.get(context.asset_key) or ""
        run_name = f"{asset_key}[{partition}]" if partition else asset_key
        tags = {"dagster.run_id": context.run_id, "dagster.asset_key": asset_key,
                "dagster.partition": partition, "dagster.code_version": code_version,
                "git_sha": git_sha(), "mlflow.source.name": f"dagster:{asset_key}"}
        with mlflow.start_run(experiment_id=self._experiment_id(f"crawl2chat/{group}"),
                              run_name=run_name, tags=tags) as run:
            if params:
                mlflow.log_params(_flatten(params))
            for name, path, digest in inputs:
                uri = Path(path).resolve().as_uri() if "://" not in str(path) else str(path)
                ds = MetaDataset(source=resolve_dataset_source(uri), name=name, digest=digest[:36])
                mlflow.log_input(ds, context="upstream")
            yield run


def log_stage_metrics(stats: dict) -> None:
    """Stage stats (RunStats.as_dict()) as MLflow metrics: <stage>.docs_in, .docs_out, .dropped.<reason>."""
    import mlflow
    metrics = {}
    for stage, s in stats.items():
        for key in ("docs_in", "docs_out", "docs_removed", "seconds"):
            metrics[f"{stage}.{key}"] = float(s[key])
        for reason, n in s["dropped"].items():
            metrics[f"{stage}.dropped.{reason}"] = float(n)
        for key, n in s.get("counters", {}).items():
            metrics[f"{stage}.{key}"] = float(n)
    mlflow.log_metrics(metrics)
