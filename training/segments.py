"""Packed segments (several sequences end to end in one row, training/sft.py): each position's index
within its sequence and the document-causal attention mask, dense or as a FlexAttention block mask.

The dense (B, 1, T, T) boolean mask is the reference and the CPU's path. On CUDA an explicit mask sends
SDPA to its memory-efficient kernel, which computes every tile of the score matrix; the block mask lets
FlexAttention's fused kernel skip the 128 x 128 tiles that cross two sequences or lie above the diagonal
(as flash attention skips the upper tiles for plain causal attention) and run the full ones unmasked.
FlexAttention has no CPU backward (torch 2.13), so the CPU trains with the dense mask.
"""
from __future__ import annotations

import torch

try:  # FlexAttention (torch >= 2.5)
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
except ImportError:  # pragma: no cover - an older torch: the dense mask everywhere
    BlockMask = create_block_mask = flex_attention = None


def segment_positions(segments: torch.Tensor) -> torch.Tensor:
    """(B, T) index of each position within its segment (segments: (B, T), contiguous runs of ids)."""
    at = torch.arange(segments.size(1), device=segments.device).expand_as(segments)
    starts = torch.ones_like(segments, dtype=torch.bool)
    starts[:, 1:] = segments[:, 1:] != segments[:, :-1]
    return at - torch.where(starts, at, torch.zeros_like(at)).cummax(dim=1).values


def segment_mask(segments: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) bool, True = attend: causal and within the segment (the diagonal always: no
    softmax row is empty)."""
    T = segments.size(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=segments.device).tril()
    return ((segments[:, :, None] == segments[:, None, :]) & causal)[:, None]


def segment_block_mask(segments: torch.Tensor) -> BlockMask:
    """segment_mask as FlexAttention's BlockMask: the same (query, key) pairs, kept per 128 x 128 tile
    (tiles without a pair are skipped, tiles with all pairs run unmasked). Built once per micro-batch,
    shared by every layer; on CUDA its construction is compiled (_compile: the eager one runs a few
    kernels over all B·T² (query, key) pairs; compiled, no B x T x T intermediate is kept)."""
    B, T = segments.shape

    def document_causal(b, h, q, k):
        return (segments[b, q] == segments[b, k]) & (k <= q)
    return create_block_mask(document_causal, B, None, T, T, device=segments.device,
                             _compile=segments.device.type == "cuda")


_compiled_flex = None


def flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: BlockMask) -> torch.Tensor:
    """flex_attention, compiled on CUDA (its fused kernel; eager would build the full score matrix).
    On the CPU it runs eager, forward only (no CPU backward in torch 2.13): the tests' comparison."""
    global _compiled_flex
    if q.device.type != "cuda":
        return flex_attention(q, k, v, block_mask=block_mask)
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex(q, k, v, block_mask=block_mask)
