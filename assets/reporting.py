"""One mechanism for what every data asset reports: counts, digest, funnel table and chart, sample
documents, MLflow metrics and artifacts, and the MLflow run URL in Dagster metadata."""
from __future__ import annotations

import base64
import json
import tempfile
from pathlib import Path

import dagster as dg

from assets.lineage import log_stage_metrics
from pipelines.io import dir_digest, sample_rows
from pipelines.report import funnel_chart, funnel_markdown, samples_markdown


def data_result(context: dg.AssetExecutionContext, tracker, run, stats: dict, out_dir: Path,
                removed_dir: Path | None = None, extra: dict | None = None,
                checks: list | None = None) -> dg.MaterializeResult:
    import mlflow

    digest = dir_digest(out_dir) if Path(out_dir).exists() else "empty"
    log_stage_metrics(stats)
    kept = sample_rows(out_dir, 3, ["url", "text"])
    removed = _removed_samples(removed_dir)
    table = funnel_markdown(stats)
    samples = samples_markdown(kept, removed)
    with tempfile.TemporaryDirectory() as tmp:
        chart = funnel_chart(stats, Path(tmp) / "funnel.png", title=context.asset_key.to_user_string())
        (Path(tmp) / "funnel.md").write_text(table + "\n\n" + samples)
        (Path(tmp) / "stats.json").write_text(json.dumps(stats, indent=2))
        mlflow.log_artifacts(tmp, artifact_path="report")
        png = base64.b64encode(chart.read_bytes()).decode()
    last = list(stats.values())[-1] if stats else {"docs_out": 0}
    first = list(stats.values())[0] if stats else {"docs_in": 0}
    metadata = {
        "path": dg.MetadataValue.path(str(out_dir)),
        "docs_in": dg.MetadataValue.int(first["docs_in"]),
        "docs_out": dg.MetadataValue.int(last["docs_out"]),
        "digest": digest,
        "funnel": dg.MetadataValue.md(table),
        "funnel_chart": dg.MetadataValue.md(f"![funnel](data:image/png;base64,{png})"),
        "samples": dg.MetadataValue.md(samples),
        "stats": dg.MetadataValue.json(stats),
        "mlflow_run": dg.MetadataValue.url(tracker.run_url(run)),
        "mlflow_run_id": run.info.run_id,
    }
    if removed_dir is not None:
        metadata["removed_path"] = dg.MetadataValue.path(str(removed_dir))
    metadata.update(extra or {})
    mlflow.set_tag("dataset.digest", digest)
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(digest[:32]),
                                check_results=checks or [])


def _removed_samples(removed_dir: Path | None, n: int = 3) -> list[dict]:
    """Up to n removed documents, taken from different stages where there are several."""
    if removed_dir is None or not Path(removed_dir).exists():
        return []
    out = []
    for stage_dir in sorted(p for p in Path(removed_dir).iterdir() if p.is_dir()):
        out += sample_rows(stage_dir, 1, ["url", "text", "stage", "reason"])
    return out[:n]
