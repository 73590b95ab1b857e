"""GPT model: GPT-2 shape with modern options as switches.

Pre-LN transformer blocks, causal self-attention through `F.scaled_dot_product_attention(is_causal=True)`
(flash / memory-efficient kernels on GPUs, a fused math kernel on CPU), GELU MLP, tied input/output
embeddings. RoPE, RMSNorm, QK-norm, a SwiGLU MLP and an untied head are config switches, not forks;
the combinations a standard architecture has (GPT-2, Llama, Qwen3) are the ones the training config
accepts (training/interop/families.py), so every trained model exports to transformers and llama.cpp.

The embedding table and the head are padded to a multiple of `vocab_pad_multiple` rows (50257 -> 50304
for GPT-2): a matmul whose width is a multiple of 128 runs on full tensor-core tiles. The head returns
only the first vocab_size columns, so a padded id is never in a softmax: not in the loss's denominator,
never sampled. The loss runs the head over as many rows at once as memory holds (`loss_rows`): on CUDA
the whole micro-batch when its logits fit in half the free memory (gpt2-124m: 32 x 1024 rows on an
80 GB GPU), so backward reuses them; only a micro-batch whose logits do not fit is split into
checkpointed chunks, whose backward recomputes each chunk's logits (one more head matmul). The CPU keeps
8192-position chunks.

Inference passes a `KVCache` to forward: keys and values of earlier positions are kept, so each new
token costs one position's forward instead of the whole context's. Without a cache, forward is the
training forward, unchanged.

Packed training rows (SFT windows: several conversations end to end) pass `segments` (B, T), which
sequence of the row each position belongs to: a position attends only to earlier positions of its own
segment, and its position index counts from that segment's first token. Each packed conversation is
then trained exactly as inference sees it: alone, from position 0. The mask is a FlexAttention block
mask on CUDA (flash-like: tiles outside every segment are skipped), a dense boolean mask on the CPU
(training/segments.py).

Sizing math (per block, d = n_embd, bias terms ignored):
    attention: qkv projection 3·d² + output projection d²   = 4·d²
    MLP:       d → 4d → d                                   = 8·d²
               SwiGLU: d → 2·h (gate, up) → h → d, h ≈ 8d/3  ≈ 8·d² (the same budget, as Llama sizes it)
    block total ≈ 12·d²;  model ≈ 12·L·d² + V·d (token embedding) + T·d (learned positions)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from training.segments import BlockMask, flex, segment_block_mask, segment_mask, segment_positions

IGNORE = -100  # target of a position that is not trained (F.cross_entropy's default ignore_index)


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    block_size: int = 1024      # context length T
    n_layer: int = 12           # L
    n_head: int = 12            # H  (head dim Q = n_embd / n_head)
    n_embd: int = 768           # d
    bias: bool = True           # GPT-2 has biases in Linear and LayerNorm
    rope: bool = False          # rotary position embedding instead of a learned position table
    rope_theta: float = 10000.0
    rmsnorm: bool = False       # RMSNorm instead of LayerNorm
    qk_norm: bool = False       # normalize q and k per head before attention (stabilizes large lr)
    tie_embeddings: bool = True # lm_head shares the token embedding matrix (GPT-2)
    mlp: str = "gelu"           # "gelu" (GPT-2) or "swiglu" (Llama / Qwen3: silu(gate) * up)
    vocab_pad_multiple: int = 128  # table/head rows rounded up to this (1 = no padding)

    @property
    def padded_vocab(self) -> int:
        """Rows of the token table and the head: vocab_size rounded up to vocab_pad_multiple."""
        m = max(1, self.vocab_pad_multiple)
        return -(-self.vocab_size // m) * m

    def __post_init__(self):
        if self.mlp not in ("gelu", "swiglu"):
            raise ValueError(f"mlp must be 'gelu' or 'swiglu', got {self.mlp!r}")

    @property
    def mlp_hidden(self) -> int:
        """MLP hidden width: 4d for GELU; for SwiGLU 8d/3 rounded up to a multiple of 64 (its three
        matrices then hold about the 8·d² of GELU's two, as Llama sizes it)."""
        if self.mlp == "gelu":
            return 4 * self.n_embd
        return -(-8 * self.n_embd // (3 * 64)) * 64

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        names = {f.name for f in fields(cls)}
        # Exports written before padding existed have no vocab_pad_multiple: their tables have exactly
        # vocab_size rows, so they load unpadded.
        return cls(**{"vocab_pad_multiple": 1, **{k: v for k, v in d.items() if k in names}})

    def to_dict(self) -> dict:
        return asdict(self)


# Presets. Parameter counts assume the GPT-2 vocabulary (V = 50257) unless noted; the trainer replaces
# vocab_size with the tokenizer's, which changes only the V·d embedding term.
PRESETS: dict[str, dict] = {
    # CPU demo: 12·4·256² = 3.1M non-embedding + V·d (V = 8k → 2.1M) + 256·256 positions ≈ 5.3M.
    # Head dim 64 like GPT-2; context 256 keeps attention cheap on two cores.
    "tiny": dict(n_layer=4, n_embd=256, n_head=4, block_size=256),
    # GPT-2 small: 12·12·768² = 84.9M + 50257·768 = 38.6M + 1024·768 = 0.8M ≈ 124M.
    "gpt2-124m": dict(n_layer=12, n_embd=768, n_head=12, block_size=1024),
    # GPT-2 medium: 12·24·1024² = 302M + 51.5M + 1.0M ≈ 355M.
    "gpt2-350m": dict(n_layer=24, n_embd=1024, n_head=16, block_size=1024),
    # GPT-2 large: 12·36·1280² = 708M + 64.3M + 1.3M ≈ 774M.
    "gpt2-774m": dict(n_layer=36, n_embd=1280, n_head=20, block_size=1024),
    # GPT-2 XL: 12·48·1600² = 1.47B + 80.4M + 1.6M ≈ 1.56B. bf16 Adam needs 16 bytes/param ≈ 25 GB
    # before activations: ZeRO-1/2 on 80 GB GPUs fits it (see training-recipes.md).
    "gpt2-1.5b": dict(n_layer=48, n_embd=1600, n_head=25, block_size=1024),
}


def preset(name: str, **overrides) -> GPTConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return GPTConfig(**{**PRESETS[name], **overrides})


def _norm(cfg: GPTConfig, dim: int) -> nn.Module:
    if cfg.rmsnorm:
        return nn.RMSNorm(dim, eps=1e-6)
    return nn.LayerNorm(dim, bias=cfg.bias)


def _rope_tables(head_dim: int, length: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    ang = torch.outer(torch.arange(length, dtype=torch.float32), inv)  # (T, Q/2)
    return ang.cos(), ang.sin()


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, H, T, Q); rotate pairs (first half, second half) as in GPT-NeoX / Llama.
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class KVCache:
    """Keys and values of every layer for incremental decoding, preallocated (B, H, capacity, Q).

    Rows of a batch are left-padded to one length: row b's first `pad[b]` slots are padding, never
    attended to, and its positions (RoPE angle or learned position index) count from its first real
    token, so a row decodes exactly as it would alone. `length` slots are filled; forward(idx, kv_cache)
    appends idx's T positions and advances it.
    """

    def __init__(self, cfg: GPTConfig, batch: int, capacity: int, pad: torch.Tensor | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32):
        head_dim = cfg.n_embd // cfg.n_head
        shape = (cfg.n_layer, batch, cfg.n_head, capacity, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.pad = (torch.zeros(batch, dtype=torch.long) if pad is None else pad).to(device)
        self.min_pad = int(self.pad.min())  # the longest row bounds the positions (checked without a sync)
        self.capacity, self.length = capacity, 0

    def positions(self, T: int) -> torch.Tensor:
        """(B, T) position of each new slot within its row (0 on padding)."""
        slots = torch.arange(self.length, self.length + T, device=self.pad.device)
        return (slots[None, :] - self.pad[:, None]).clamp(min=0)

    def mask(self, T: int) -> torch.Tensor:
        """(B, 1, T, length + T) bool, True = attend: causal, real keys only. A padding query attends to
        itself alone, so no softmax row is empty (an empty one gives NaN, and NaN values would leak
        through the zero weights of later rows)."""
        q = torch.arange(self.length, self.length + T, device=self.pad.device)[:, None]
        k = torch.arange(self.length + T, device=self.pad.device)[None, :]
        real = k[None] >= self.pad[:, None, None]
        return ((real & (k <= q)[None]) | (k == q)[None])[:, None]

    def store(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new positions' keys/values; return all filled ones of this layer."""
        end = self.length + k.size(2)
        if end > self.capacity:
            raise ValueError(f"KV cache full: {end} positions, capacity {self.capacity}")
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def keep(self, rows: torch.Tensor) -> None:
        """Drop the rows not in `rows` (finished ones), so later steps compute only live rows."""
        self.k, self.v, self.pad = self.k[:, rows], self.v[:, rows], self.pad[rows]
        self.min_pad = int(self.pad.min())


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int = 0):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0, "n_embd must be divisible by n_head"
        self.layer = layer  # index into a KVCache
        self.n_head, self.head_dim = cfg.n_head, cfg.n_embd // cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.c_proj.residual_scale = True  # type: ignore[attr-defined]  # see GPT._init_weights
        self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if cfg.qk_norm else None
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if cfg.qk_norm else None

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                kv_cache: KVCache | None = None, mask=None) -> torch.Tensor:
        """mask: None (causal), a boolean (B, 1, T, S) tensor (True = attend) or a BlockMask."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = _apply_rope(q, *rope), _apply_rope(k, *rope)
        if kv_cache is not None:
            k, v = kv_cache.store(self.layer, k, v)
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif BlockMask is not None and isinstance(mask, BlockMask):  # packed segments on CUDA
            y = flex(q, k, v, mask)
        else:  # a KV cache's padding, or packed segments on the CPU (on GPUs an explicit mask takes
            # SDPA's memory-efficient kernel instead of flash, which is why CUDA gets a block mask)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        # SwiGLU: one matmul computes gate and up side by side (rows [:h] gate, [h:] up)
        self.swiglu, hidden = cfg.mlp == "swiglu", cfg.mlp_hidden
        self.c_fc = nn.Linear(cfg.n_embd, (2 if self.swiglu else 1) * hidden, bias=cfg.bias)
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.c_proj.residual_scale = True  # type: ignore[attr-defined]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            gate, up = self.c_fc(x).chunk(2, dim=-1)
            return self.c_proj(F.silu(gate) * up)
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int = 0):
        super().__init__()
        self.ln_1, self.attn = _norm(cfg, cfg.n_embd), CausalSelfAttention(cfg, layer)
        self.ln_2, self.mlp = _norm(cfg, cfg.n_embd), MLP(cfg)

    def forward(self, x: torch.Tensor, rope=None, kv_cache: KVCache | None = None,
                mask=None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), rope, kv_cache, mask)
        return x + self.mlp(self.ln_2(x))


class Head(nn.Linear):
    """The output projection over the padded vocabulary, returning the real vocabulary's columns only
    (a view: the matmul keeps its padded width, nothing downstream can see or pick a padded id)."""

    def __init__(self, n_embd: int, padded_vocab: int, vocab_size: int):
        super().__init__(n_embd, padded_vocab, bias=False)
        self.vocab_size = vocab_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[..., :self.vocab_size]


# Bytes per logit that the loss keeps alive at its peak (head output to its gradient), per position and
# vocabulary column: the head's output (2 in bf16, 4 in fp32), its fp32 copy (4), the log-softmax that
# cross-entropy saves for backward (4), and in backward the fp32 gradient (4) and its cast back (2).
# 16 in bf16; torch.compile fuses some of these away, so this is an upper bound there.
LOGIT_BYTES = 16


class GPT(nn.Module):
    # Positions per loss chunk. None: sized by loss_rows (CUDA: from free memory; CPU: CPU_LOSS_CHUNK).
    # An int forces that many positions per chunk (tests, or a GPU shared with other work).
    loss_chunk: int | None = None
    # The CPU's chunk: 8192 x vocabulary fp32 logits (1.6 GB at GPT-2's 50304), whatever the micro-batch.
    CPU_LOSS_CHUNK = 8192
    # Share of the device's free memory (measured once, at the first training loss) the logits may use;
    # the rest is for the blocks' activations, which the trunk allocates before the loss runs.
    LOGITS_MEMORY_FRACTION = 0.5
    # Packed segments: "auto" = FlexAttention block mask on CUDA, dense mask elsewhere; "dense" or
    # "flex" force one ("flex" on the CPU runs forward only: FlexAttention has no CPU backward).
    packed_attention = "auto"

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.padded_vocab, cfg.n_embd)
        self.wpe = None if cfg.rope else nn.Embedding(cfg.block_size, cfg.n_embd)
        self.h = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_f = _norm(cfg, cfg.n_embd)
        self.lm_head = Head(cfg.n_embd, cfg.padded_vocab, cfg.vocab_size)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        if cfg.rope:
            cos, sin = _rope_tables(cfg.n_embd // cfg.n_head, cfg.block_size, cfg.rope_theta)
            # Non-persistent: derived from the config, so checkpoints and exports do not carry them.
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        # Set by the trainer (not part of the exported config): recompute block activations in backward.
        self.activation_checkpointing = False
        self._compiled_loss = None  # compile_loss(): the training loss forward under torch.compile
        self._loss_rows: dict = {}  # (T, device) -> rows per loss chunk on CUDA, measured once (loss_rows)
        self.apply(self._init_weights)

    def _init_weights(self, m: nn.Module) -> None:
        # GPT-2 init: N(0, 0.02); projections into the residual stream scaled by 1/sqrt(2L) so the
        # residual's variance does not grow with depth (two residual adds per block).
        if isinstance(m, nn.Linear):
            std = 0.02 / math.sqrt(2 * self.config.n_layer) if getattr(m, "residual_scale", False) else 0.02
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; non_embedding drops the lookup tables (token and position embeddings).

        With tied embeddings the lm_head is the token table, so it is dropped too; flops_per_token adds
        its matmul back explicitly.
        """
        n = sum(p.numel() for p in self.parameters())  # parameters() yields a tied tensor once
        if non_embedding:
            n -= self.wte.weight.numel()
            if self.wpe is not None:
                n -= self.wpe.weight.numel()
            # An untied lm_head is an ordinary matmul and stays counted.
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token: 6·N + 12·L·H·Q·T (PaLM appendix B; nanoGPT/llm.c/nanochat MFU).

        6·N: every weight matrix costs 2 FLOPs per parameter per token forward (multiply + add) and 4 in
        backward (gradients w.r.t. inputs and weights). N counts every matrix that does a matmul: the
        non-embedding parameters plus the output head (V·d over the PADDED vocabulary: the matmul that
        runs), which is a real matmul even when its weight is tied to the token table (a lookup costs
        nothing).
        12·L·H·Q·T: attention scores QKᵀ and the weighted sum AV are 2·T·Q FLOPs each per head per token
        forward (4·T·Q), times 3 for forward + backward, over H heads and L layers. The causal mask halves
        the useful work, but by convention (and for comparability with published MFU) it is not halved.
        """
        c = self.config
        T = seq_len or c.block_size
        n = self.num_params(non_embedding=True)
        if c.tie_embeddings:
            n += c.padded_vocab * c.n_embd
        q = c.n_embd // c.n_head
        return 6.0 * n + 12.0 * c.n_layer * c.n_head * q * T

    def recompute_flops_per_token(self, micro_batch: int, seq_len: int, device: torch.device | str = "cpu") -> float:
        """FLOPs per token that backward recomputes on top of flops_per_token: work the device does and
        MFU (training/tracking.py MFU_DEFINITION) does not count. Activation checkpointing reruns every
        block's forward (2 FLOPs per block parameter + attention's 4·L·H·Q·T); a micro-batch whose logits
        take more than one loss chunk (loss_rows) reruns the head matmul (2·Vp·d: +9% at gpt2-124m).
        flops_per_token + this is the hardware's count (HFU)."""
        c = self.config
        extra = 0.0
        if self.activation_checkpointing:
            extra += 2.0 * sum(p.numel() for p in self.h.parameters()) + 4.0 * c.n_layer * c.n_embd * seq_len
        if self.loss_rows(micro_batch, seq_len, torch.device(device)) < micro_batch:
            extra += 2.0 * c.padded_vocab * c.n_embd
        return extra

    def compile_loss(self) -> None:
        """Run the training loss forward (targets given, reduction sum/mean, train mode) through
        torch.compile. Its shapes are fixed (micro_batch, seq_len), so it compiles once; sampling,
        per-token eval and KV-cache decoding, whose shapes vary, stay eager."""
        self._compiled_loss = torch.compile(self._train_loss, dynamic=False)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, reduction: str = "mean",
                kv_cache: KVCache | None = None, segments: torch.Tensor | None = None):
        """idx (B, T) token ids. Without targets: logits of the last position (B, 1, V) for sampling.
        With targets: the cross-entropy loss ("mean" over the trained targets, "sum", or "none": per
        token (B, T), 0 at IGNORE). With kv_cache: idx continues the cached positions (inference; the
        cache advances by T). segments (B, T): packed sequences of a row, each seen alone."""
        if kv_cache is not None and segments is not None:
            raise ValueError("segments with a kv_cache: a cache decodes one sequence per row")
        if targets is not None:
            if kv_cache is not None:
                raise ValueError("targets with a kv_cache: the cache is for decoding, not for a loss")
            # Sized and built here, eagerly: a compiled loss sees a fixed int and a ready block mask.
            rows, block_mask = self.loss_rows(*targets.shape, idx.device), self.block_mask(segments)
            if self._compiled_loss is not None and self.training and reduction != "none":
                return self._compiled_loss(idx, targets, reduction, segments, block_mask, rows)
            return self._train_loss(idx, targets, reduction, segments, block_mask, rows)
        return self.lm_head(self._trunk(idx, kv_cache, segments, self.block_mask(segments))[:, [-1], :])

    def _train_loss(self, idx: torch.Tensor, targets: torch.Tensor, reduction: str,
                    segments: torch.Tensor | None = None, block_mask=None, rows: int | None = None) -> torch.Tensor:
        return self.chunked_loss(self._trunk(idx, None, segments, block_mask), targets, reduction, rows)

    def block_mask(self, segments: torch.Tensor | None):
        """The FlexAttention block mask of packed segments where it is used (packed_attention), else
        None (the trunk builds the dense segment_mask)."""
        if self.packed_attention not in ("auto", "dense", "flex"):
            raise ValueError(f"packed_attention must be auto, dense or flex, got {self.packed_attention!r}")
        if segments is None or BlockMask is None:
            return None
        # cuda.is_available: a fake CUDA device (FakeTensorMode on a CPU build) keeps the dense path
        on_cuda = segments.device.type == "cuda" and torch.cuda.is_available()
        if self.packed_attention == "flex" or (self.packed_attention == "auto" and on_cuda):
            return segment_block_mask(segments)
        return None

    def loss_rows(self, B: int, T: int, device: torch.device) -> int:
        """Rows of a (B, T) micro-batch per loss chunk; B or more = one chunk, nothing recomputed.

        loss_chunk set: loss_chunk // T. CPU: CPU_LOSS_CHUNK // T (unchanged behaviour). CUDA: the rows
        whose logits (T · padded vocabulary · LOGIT_BYTES each) fit in LOGITS_MEMORY_FRACTION of the free
        memory, measured once per (T, device), so a compiled loss sees one value. gpt2-124m: one row of
        1024 positions is 1024 · 50304 · 16 B = 0.82 GB; with ~75 GB free on an 80 GB H100 the budget
        of 37 GB holds 45 rows, so micro-batch 32 runs in one chunk."""
        if self.loss_chunk:
            return max(1, self.loss_chunk // T)
        if device.type != "cuda" or not torch.cuda.is_available():  # (a fake CUDA device: CPU's rule)
            return max(1, self.CPU_LOSS_CHUNK // T)
        key = (T, str(device))
        if key not in self._loss_rows:
            self._loss_rows[key] = self.rows_that_fit(torch.cuda.mem_get_info(device)[0], T)
        return self._loss_rows[key]

    def rows_that_fit(self, free_bytes: int, T: int) -> int:
        """Rows of T positions whose logits fit in LOGITS_MEMORY_FRACTION of free_bytes (at least 1)."""
        per_row = T * self.config.padded_vocab * LOGIT_BYTES
        return max(1, int(free_bytes * self.LOGITS_MEMORY_FRACTION) // per_row)

    def _trunk(self, idx: torch.Tensor, kv_cache: KVCache | None,
               segments: torch.Tensor | None = None, block_mask=None) -> torch.Tensor:
        """Hidden states after the final norm, (B, T, d). block_mask: segments' BlockMask, when used."""
        B, T = idx.shape
        x, rope, pos, mask = self.wte(idx), None, None, None
        if kv_cache is None and T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens exceeds block_size {self.config.block_size}")
        if segments is not None:
            pos = segment_positions(segments)
            mask = block_mask if block_mask is not None else segment_mask(segments)
        elif kv_cache is not None:
            if kv_cache.length + T - kv_cache.min_pad > self.config.block_size:
                raise ValueError(f"{kv_cache.length + T - kv_cache.min_pad} positions exceed block_size "
                                 f"{self.config.block_size}")
            pos, mask = kv_cache.positions(T), kv_cache.mask(T)
        if pos is None:  # one sequence per row from position 0: plain causal attention
            if self.wpe is not None:
                x = x + self.wpe(torch.arange(T, device=idx.device))
            else:
                rope = (self.rope_cos[:T], self.rope_sin[:T])
        elif self.wpe is not None:
            x = x + self.wpe(pos)
        else:  # per-row positions (B, T) -> tables (B, 1, T, Q/2), broadcast over heads
            rope = (self.rope_cos[pos][:, None], self.rope_sin[pos][:, None])
        for block in self.h:
            if self.activation_checkpointing and self.training:
                x = checkpoint(block, x, rope, None, mask, use_reentrant=False)
            else:
                x = block(x, rope, kv_cache, mask)
        if kv_cache is not None:
            kv_cache.length += T
        return self.ln_f(x)

    def chunked_loss(self, x: torch.Tensor, targets: torch.Tensor, reduction: str,
                     rows: int | None = None) -> torch.Tensor:
        """Cross-entropy of the head over hidden states x (B, T, d), `rows` rows at a time (default
        loss_rows: all of them where their logits fit).

        Each chunk of rows does head matmul -> fp32 -> cross-entropy and keeps
        only its loss; under autograd with more than one chunk, each chunk is checkpointed, so backward
        recomputes its logits (one extra head matmul: 2·V·d FLOPs per token) instead of keeping
        B·T·V fp32 logits alive. The sums are those of one F.cross_entropy over all rows, up to the
        order of fp32 additions; "mean" divides by the trained targets (NaN when there is none, as
        F.cross_entropy)."""
        B, T = targets.shape
        rows = rows or self.loss_rows(B, T, x.device)
        per_row = "none" if reduction == "none" else "sum"
        keep_graph = torch.is_grad_enabled() and x.requires_grad and B > rows
        parts = []
        for i in range(0, B, rows):
            xs, ys = x[i:i + rows], targets[i:i + rows]
            if keep_graph:
                parts.append(checkpoint(self._head_loss, xs, ys, per_row, use_reentrant=False))
            else:
                parts.append(self._head_loss(xs, ys, per_row))
        if reduction == "none":
            return torch.cat(parts).view(B, T)
        total = parts[0] if len(parts) == 1 else torch.stack(parts).sum()
        if reduction == "sum":
            return total
        if reduction == "mean":
            return total / (targets != IGNORE).sum()
        raise ValueError(f"reduction must be mean, sum or none, got {reduction!r}")

    def _head_loss(self, x: torch.Tensor, targets: torch.Tensor, reduction: str) -> torch.Tensor:
        logits = self.lm_head(x).float()  # loss in fp32 even under bf16 autocast / bf16 weights
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction=reduction)
        return loss.view(targets.shape) if reduction == "none" else loss

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Append max_new_tokens sampled tokens to idx (B, T). temperature 0 means greedy.

        No KV cache: the whole (cropped) context is re-run per token, which is fine for logging samples
        and keeps the forward identical to training (and ZeRO-3 friendly: every call is a plain forward).
        """
        for _ in range(max_new_tokens):
            ctx = idx[:, -self.config.block_size:]
            logits = self(ctx)[:, -1, :].float()
            if temperature <= 0:
                nxt = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None and top_k > 0:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = -float("inf")
                probs = F.softmax(logits, dim=-1)
                nxt = torch.multinomial(probs, num_samples=1, generator=generator)
            idx = torch.cat((idx, nxt), dim=1)
        return idx
