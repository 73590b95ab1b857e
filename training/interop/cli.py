"""`crawl2chat export MODEL --format hf|gguf --out DIR`: a trained model for other runtimes.

    crawl2chat export lake/models/chat/<run>/export --format hf --out hf/crawl2chat-chat
    crawl2chat export crawl2chat-chat@candidate --format gguf --dtype q8_0 --out gguf/crawl2chat-chat

MODEL is an export directory (what training writes under <run>/export) or a registered model
NAME@ALIAS / NAME/VERSION, fetched through the inference engine's model cache. --out is a directory
(for gguf: model.gguf, a Modelfile and the card), replaced only when crawl2chat wrote it.
"""
from __future__ import annotations

import os
from pathlib import Path

from pipelines.errors import InputError
from pipelines.io import check_output_target
from training.interop.card import lineage_facts, model_card
from training.interop.hf import KIND as HF_KIND, read_export

FORMATS = ("hf", "gguf")


def resolve_model(model: str) -> tuple[Path, str, str | None]:
    """(export dir, display name, registered version's MLflow run id or None) of MODEL; InputError
    naming it when it is neither form."""
    from training.engine.engine import _MODEL_URI, _download_registered
    path = Path(model)
    if path.exists():
        read_export(path)
        resolved = path.resolve()
        return path, resolved.parent.name if resolved.name == "export" else resolved.name, None
    if _MODEL_URI.match(model):
        if tracking_uri() is None:  # asking would create an empty SQLite store: nothing is written
            from training.evals.registry import default_tracking_uri
            raise InputError(f"{model}: no MLflow registry at {default_tracking_uri()} to find it in; "
                             "set MLFLOW_TRACKING_URI, or give an export directory")
        export_dir, name = _download_registered(model)
        return export_dir, name, _run_of(model)
    raise InputError(f"{model}: neither an export directory nor a registered model 'NAME@ALIAS' / 'NAME/VERSION'")


def _run_of(spec: str) -> str:
    """The MLflow run of the registered version `spec` (already resolved once by the download)."""
    from mlflow import MlflowClient
    from training.engine.engine import _MODEL_URI
    m, uri = _MODEL_URI.match(spec), tracking_uri()
    client = MlflowClient(uri, registry_uri=uri)
    mv = client.get_model_version_by_alias(m["name"], m["alias"]) if m["alias"] else \
        client.get_model_version(m["name"], m["version"])
    return mv.run_id


def tracking_uri() -> str | None:
    """The MLflow store to read lineage from; None where the default SQLite store does not exist
    (reading would create it)."""
    from training.evals.registry import default_tracking_uri
    uri = default_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return None
    return uri


def export(model: str, fmt: str, out: str | Path, dtype: str = "f32", force: bool = False,
           max_shard_size: str = "5GB") -> Path:
    """Write MODEL's `fmt` export to `out`; the path written (for gguf the .gguf file)."""
    from training.interop.gguf import KIND as GGUF_KIND, export_gguf
    from training.interop.hf import export_hf
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt}: one of {', '.join(FORMATS)}")
    check_output_target(out, HF_KIND if fmt == "hf" else GGUF_KIND, force)  # before any download
    export_dir, name, run_id = resolve_model(model)
    meta, _ = read_export(export_dir)
    card = model_card(name, export_dir, meta, lineage_facts(run_id or meta.get("mlflow_run_id"), tracking_uri()))
    if fmt == "hf":
        return export_hf(export_dir, out, card, dtype=dtype, max_shard_size=max_shard_size, force=force)
    return export_gguf(export_dir, out, name, dtype=dtype, card=card, force=force)


def add_arguments(p) -> None:
    p.add_argument("model", metavar="MODEL", help="export directory, or registered NAME@ALIAS / NAME/VERSION")
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="hf: transformers / vLLM directory; gguf: llama.cpp / Ollama / LM Studio")
    p.add_argument("--out", required=True, help="output directory (replaced only when crawl2chat wrote it)")
    p.add_argument("--dtype", default="f32", choices=("f32", "bf16", "f16", "q8_0"),
                   help="weight type (default f32, lossless; q8_0: gguf only); refused where a weight overflows it")
    p.add_argument("--max-shard-size", default="5GB", help="hf: split model.safetensors above this size")
    p.add_argument("--force", action="store_true", help="replace --out even if crawl2chat did not write it")


def main(args) -> int:
    written = export(args.model, args.format, args.out, args.dtype, args.force, args.max_shard_size)
    print(f"wrote {written} ({args.format}, {args.dtype})")
    return 0
