"""What a language-model job plugs into the trainer (training/trainer.py): moving a micro-batch to the
device, its trained-target count, the summed cross-entropy, validation loss and bits per byte, and
text samples from fixed prompts. Pretraining and SFT use them as they are; the evals reuse lm_sums.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from training.model import IGNORE


def to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return type(batch)(to_device(v, device) for v in batch)


def split_batch(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(inputs, targets, segments or None) of an (inputs, targets[, segments]) micro-batch: packed
    SFT windows carry their rows' segments (training/sft.py), pretraining windows do not."""
    x, y, *rest = batch
    return x, y, (rest[0] if rest else None)


def count_targets(batch) -> int:
    """Trained positions of an (inputs, targets[, segments]) micro-batch: targets that are not IGNORE."""
    return int((batch[1] != IGNORE).sum())


def lm_loss(engine, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ cross-entropy over the trained targets, their count, a tensor: no device sync). IGNORE
    targets add exactly 0."""
    x, y, segments = split_batch(batch)
    return engine(x, y, reduction="sum", segments=segments), (y != IGNORE).sum()


@torch.no_grad()
def lm_sums(model, x: torch.Tensor, y: torch.Tensor, token_bytes: torch.Tensor | None,
            segments: torch.Tensor | None = None) -> torch.Tensor:
    """Per row of an (inputs, targets) micro-batch, (B, 4) float64: Σ nats over the trained targets,
    their count, Σ nats over the text targets (UTF-8 bytes > 0) and Σ their bytes (0 without
    token_bytes). Shared by the trainer's validation and the bits-per-byte eval (training/evals)."""
    per_tok = model(x, y, reduction="none", segments=segments).float()  # 0 at IGNORE targets
    trained = y != IGNORE
    b = token_bytes[y.clamp(min=0)] * trained if token_bytes is not None else torch.zeros_like(y)
    return torch.stack([per_tok.sum(1).double(), trained.sum(1).double(),
                        (per_tok * (b > 0)).sum(1).double(), b.sum(1).double()], dim=1)


@torch.no_grad()
def evaluate_lm(engine, batches, device, token_bytes: np.ndarray | None) -> dict:
    """Val loss (nats per trained token) and bits per byte = Σ nats over trained text tokens /
    (ln 2 · Σ their UTF-8 bytes). Special tokens have 0 bytes: they count in the loss, not in bits
    per byte (as nanochat). Collective: every rank runs its batches, then the sums are reduced."""
    import torch.distributed as dist
    engine.eval()
    tb = torch.from_numpy(token_bytes.astype(np.int64)).to(device) if token_bytes is not None else None
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    for batch in batches:
        x, y, segments = split_batch(to_device(batch, device))
        sums += lm_sums(engine, x, y, tb, segments).sum(0)
    engine.train()
    if dist.get_world_size() > 1:
        dist.all_reduce(sums)
    loss_sum, count, nats_text, nbytes = sums.tolist()  # the one device sync of an evaluation
    return {"val/loss": loss_sum / count if count else None,
            "val/bpb": nats_text / (math.log(2) * nbytes) if nbytes > 0 else None}


def sample(engine, tokenizer, prompts: list[tuple[str, list[int]]], ev: dict, device, zero3: bool, rank: int,
           stop_ids: tuple[int, ...] = ()) -> str | None:
    """Text of samples from fixed prompts (rank 0): the prompt (after its first token) and what follows,
    cut after the first stop token. Under ZeRO-3 every rank runs the same forwards, because each forward
    gathers parameter shards from all ranks."""
    if tokenizer is None or not prompts or (rank != 0 and not zero3):
        return None
    module = engine.module
    module.eval()
    gen = torch.Generator(device=device).manual_seed(1234)
    out = []
    for label, ids in prompts:
        idx = torch.tensor([ids], device=device)
        new = module.generate(idx, ev["sample_tokens"], temperature=ev["temperature"], top_k=ev["top_k"],
                              generator=gen)[0, len(ids):].tolist()
        stop = next((i for i, t in enumerate(new) if t in stop_ids), None)
        new = new if stop is None else new[:stop + 1]
        out.append(f"### {label!r}\n{tokenizer.decode(ids[1:] + new)}\n")
    module.train()
    return "\n".join(out) if rank == 0 else None
