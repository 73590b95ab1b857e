"""The transformers export of every registered chat model version (SFT, RL, RLHF), logged to the
version's own MLflow run as artifacts `hf/` and recorded on the version as the tag `hf_export`, so a
version is exported once; the Dagster asset (assets/interop.py) is a thin wrapper.

    done, notes = export_registered(client, Path("lake/exports/hf"))
"""
from __future__ import annotations

import logging
from pathlib import Path

from pipelines.errors import UserError
from training.evals.registry import Version, export_dir, registered_versions
from training.interop.card import lineage_facts, model_card
from training.interop.hf import export_hf, read_export

TAG = "hf_export"
ARTIFACTS = "hf"
log = logging.getLogger(__name__)


def pending(client) -> list[Version]:
    """Chat versions (every stage after pretraining) with no transformers export logged yet."""
    return [v for v in registered_versions(client)[0] if v.kind == "chat" and TAG not in v.mv.tags]


def export_version(client, v: Version, out_root: Path, cache: Path | None = None) -> Path:
    """Export one version to out_root/NAME-vVERSION (from the engine's model cache), log it to the
    version's run and tag the version with where it is."""
    src = export_dir(client, v, cache)
    meta, _ = read_export(src)
    card = model_card(v.ref, src, meta, lineage_facts(v.mv.run_id, client.tracking_uri))
    out = export_hf(src, Path(out_root) / f"{v.name}-v{v.mv.version}", card)
    client.log_artifacts(v.mv.run_id, str(out), ARTIFACTS)
    client.set_model_version_tag(v.name, v.mv.version, TAG, f"runs:/{v.mv.run_id}/{ARTIFACTS}")
    return out


def export_registered(client, out_root: Path, cache: Path | None = None) -> tuple[dict[str, str], list[str]]:
    """({version ref: export dir}, notes): every pending version exported; a version that cannot be
    (an architecture with no standard family, say) is a note, and the others still go."""
    done, notes = {}, []
    for v in pending(client):
        try:
            done[v.ref] = str(export_version(client, v, out_root, cache))
        except UserError as e:
            notes.append(f"{v.ref}: {e}")
            log.warning("%s not exported: %s", v.ref, e)
    return done, notes
