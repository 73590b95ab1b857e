"""Export a trained model for inference without DeepSpeed: model.safetensors + config.json + tokenizer.

    from training.export import load_model
    model = load_model("lake/models/base/<run>/export")   # GPT in eval mode
    tok = pipelines.tokenizer.load_tokenizer(same dir)

The export directory is staged like every directory output (pipelines/io.py, kind "export"): built
beside its target and swapped in whole, so a killed export never leaves a directory that looks
complete, and a directory crawl2chat did not write is never replaced. Tied embeddings are stored once (safetensors refuses
shared tensors); load_model re-ties them through the model constructor.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from pipelines.io import staged
from training.model import GPT, GPTConfig

FORMAT = "crawl2chat-gpt"


def gather_state_dict(engine) -> dict[str, torch.Tensor] | None:
    """The fp32 MASTER weights, full, on CPU in rank 0 (None elsewhere). Collective at ZeRO 1-3:
    every rank must call it. One parameter at a time, so the peak memory is one full tensor.

    Under bf16 the module's parameters are the bf16 copies DeepSpeed casts from its fp32 master
    weights after each step; exporting those would throw away the low 16 bits of every weight (and
    a fine-tune from the export would restart from rounded weights). The master copy is where the
    optimizer lives: BF16_Optimizer (ZeRO-1) and ZeRO-2 keep fp32 partitions, ZeRO-3 fp32 shards;
    deepspeed.utils.safe_get_full_fp32_param assembles one parameter from them (an all-reduce /
    all-gather over the ranks). At stage 0 there is no wrapper (fp32, or fp32 weights under bf16
    autocast: training/config.py): it returns None and the module's parameter is the master."""
    import deepspeed
    import torch.distributed as dist
    from deepspeed.utils import safe_get_full_fp32_param
    module = engine.module
    rank0 = (not dist.is_initialized()) or dist.get_rank() == 0
    out = {}
    for name, p in module.named_parameters(remove_duplicate=True):
        master = safe_get_full_fp32_param(p)
        if master is not None:
            if rank0:
                out[name] = master.detach().to("cpu", torch.float32).clone()
            continue
        # No fp32 copy behind it (stage 0, a frozen parameter): the module's own, gathered under ZeRO-3.
        with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
            if rank0:
                out[name] = p.detach().to("cpu").clone()
    # No buffers: the GPT's only buffers (RoPE tables) are non-persistent, rebuilt from the config.
    return out if rank0 else None


def export_state(state: dict[str, torch.Tensor], cfg: GPTConfig, out_dir: str | Path,
                 tokenizer_dir: str | Path | None = None, extra: dict | None = None,
                 dtype: torch.dtype | None = None) -> Path:
    from safetensors.torch import save_file
    from training.data import TOKENIZER_FILES
    out_dir = Path(out_dir)
    tensors = {}
    for k, v in state.items():
        if cfg.tie_embeddings and k == "lm_head.weight":
            continue  # same tensor as wte.weight
        v = v.to(dtype) if dtype is not None and v.is_floating_point() else v
        tensors[k] = v.contiguous()
    with staged(out_dir, kind="export") as tmp:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": FORMAT})
        stored_dtype = str(next(iter(tensors.values())).dtype).replace("torch.", "")
        meta = {"format": FORMAT, "model": cfg.to_dict(), "dtype": stored_dtype, **(extra or {})}
        (tmp / "config.json").write_text(json.dumps(meta, indent=1))
        if tokenizer_dir:
            for name in TOKENIZER_FILES:
                src = Path(tokenizer_dir) / name
                if src.exists():
                    shutil.copy2(src, tmp / name)
    return out_dir


def export_config(export_dir: str | Path) -> GPTConfig:
    """The model config an export directory holds (its config.json), without loading the weights."""
    meta = json.loads((Path(export_dir) / "config.json").read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{export_dir}: not a {FORMAT} export")
    return GPTConfig.from_dict(meta["model"])


def load_model(export_dir: str | Path, device: str | torch.device = "cpu",
               dtype: torch.dtype | None = None) -> GPT:
    """GPT from an export directory, in eval mode; dtype defaults to the stored one."""
    from safetensors.torch import load_file
    export_dir = Path(export_dir)
    cfg = export_config(export_dir)
    state = load_file(str(export_dir / "model.safetensors"))
    model = GPT(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    allowed_missing = {"lm_head.weight"} if cfg.tie_embeddings else set()
    if set(missing) - allowed_missing or unexpected:
        raise ValueError(f"{export_dir}: missing {sorted(set(missing) - allowed_missing)}, unexpected {unexpected}")
    model.to(device=device, dtype=dtype or next(iter(state.values())).dtype)
    return model.eval()
