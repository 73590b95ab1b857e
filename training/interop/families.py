"""Which standard architecture a crawl2chat GPT is, and its weights under that architecture's names.

    GPT-2 shape (learned positions, LayerNorm, GELU)         -> transformers GPT2LMHeadModel, llama.cpp gpt2
    RoPE + RMSNorm + SwiGLU                                  -> LlamaForCausalLM,             llama.cpp llama
    RoPE + RMSNorm + SwiGLU + QK-norm (no biases)            -> Qwen3ForCausalLM,             llama.cpp qwen3

Every other combination of the model's switches has no architecture that transformers, vLLM and
llama.cpp load without custom code, so the training config refuses it before training
(`check_trainable`, called by training.config.load_config) and names the switch to change. The
exporters (hf.py, gguf.py) call `family` again on what they are given: an export written before the
check existed may still be one of those.

`hf_state` is the one weight mapping: the GGUF writer maps these transformers names on to llama.cpp's
with the gguf package's own table, as llama.cpp's convert_hf_to_gguf.py does.
"""
from __future__ import annotations

import torch

from pipelines.errors import ConfigError
from training.model import GPTConfig

# family -> (transformers model_type, architecture class, llama.cpp architecture)
FAMILIES = {"gpt2": ("gpt2", "GPT2LMHeadModel", "gpt2"),
            "llama": ("llama", "LlamaForCausalLM", "llama"),
            "qwen3": ("qwen3", "Qwen3ForCausalLM", "qwen3")}
LAYERNORM_EPS = 1e-5   # nn.LayerNorm's default, what training/model.py builds
RMSNORM_EPS = 1e-6     # training/model.py's RMSNorm (blocks, final norm and QK-norm alike)


class ArchitectureError(ConfigError):
    """A switch combination with no standard architecture; the message names the switch to change."""


def family(cfg: GPTConfig) -> str:
    """'gpt2', 'llama' or 'qwen3'; ArchitectureError naming the switch to change for anything else."""
    modern = {"rope": cfg.rope, "rmsnorm": cfg.rmsnorm, "mlp=swiglu": cfg.mlp == "swiglu"}
    if not any(modern.values()) and not cfg.qk_norm:
        return "gpt2"
    missing = [k for k, on in modern.items() if not on]
    if missing:
        on = [k for k, v in {**modern, "qk_norm": cfg.qk_norm}.items() if v]
        raise ArchitectureError(
            f"{_switches(on)} without {_switches(missing)} has no standard architecture (transformers, vLLM "
            f"and llama.cpp could not load the model): set {_switches(missing)} (Llama; with "
            f"model.qk_norm=true Qwen3), or set {_switches(on, off=True)} (GPT-2 shape)")
    if not cfg.qk_norm:
        return "llama"
    if cfg.bias:
        raise ArchitectureError("model.qk_norm=true with model.bias=true has no standard architecture (Qwen3, "
                                "the QK-norm family, has no MLP biases): set model.bias=false, or "
                                "model.qk_norm=false (Llama, which has biases)")
    return "qwen3"


def _switches(keys: list[str], off: bool = False) -> str:
    if off:
        return ", ".join("model.mlp=gelu" if k.startswith("mlp") else f"model.{k}=false" for k in keys)
    return ", ".join(f"model.{k}" if "=" in k else f"model.{k}=true" for k in keys)


def check_trainable(model_section: dict) -> None:
    """Config time: refuse a fresh model whose switches no standard architecture has. A model with
    model.init_from takes its shape from that export and is not checked here."""
    from training.model import preset
    if model_section.get("init_from"):
        return
    over = {k: v for k, v in model_section.items() if k not in ("preset", "init_from") and v is not None}
    try:
        cfg = preset(model_section.get("preset") or "tiny", **over)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"model: {e}") from None
    family(cfg)


def hf_config(cfg: GPTConfig, bos_id: int, eos_ids: list[int]) -> dict:
    """transformers config.json fields for the family (model_type picks the class)."""
    fam = family(cfg)
    model_type, arch, _ = FAMILIES[fam]
    common = {"model_type": model_type, "architectures": [arch], "vocab_size": cfg.vocab_size,
              "tie_word_embeddings": cfg.tie_embeddings, "bos_token_id": bos_id, "eos_token_id": eos_ids,
              "dtype": "float32"}
    if fam == "gpt2":
        return {**common, "n_positions": cfg.block_size, "n_embd": cfg.n_embd, "n_layer": cfg.n_layer,
                "n_head": cfg.n_head, "n_inner": cfg.mlp_hidden,
                "activation_function": "gelu_new",   # tanh approximation, as F.gelu(approximate="tanh")
                "layer_norm_epsilon": LAYERNORM_EPS, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    out = {**common, "hidden_size": cfg.n_embd, "intermediate_size": cfg.mlp_hidden,
           "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head,
           "num_key_value_heads": cfg.n_head, "head_dim": cfg.n_embd // cfg.n_head, "hidden_act": "silu",
           "max_position_embeddings": cfg.block_size, "rms_norm_eps": RMSNORM_EPS,
           "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
           "rope_theta": cfg.rope_theta,   # the pre-5.0 spelling, for older readers (vLLM pins transformers)
           "attention_bias": cfg.bias, "attention_dropout": 0.0}
    if fam == "llama":
        out["mlp_bias"] = cfg.bias
    else:
        out.update(use_sliding_window=False, sliding_window=None, max_window_layers=cfg.n_layer)
    return out


def hf_state(state: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """Our weights (an export's state dict) under the family's transformers names, fp32, the padded
    vocabulary rows cut. A missing bias (bias=False) in GPT-2, whose layers always have one, is zeros:
    the same function."""
    fam, d, V = family(cfg), cfg.n_embd, cfg.vocab_size
    get = lambda k: state[k].detach().to(torch.float32)  # noqa: E731
    out: dict[str, torch.Tensor] = {}

    def bias(k: str, n: int) -> torch.Tensor:
        return get(k) if k in state else torch.zeros(n)

    head = None if cfg.tie_embeddings else get("lm_head.weight")[:V]
    if fam == "gpt2":
        out["transformer.wte.weight"] = get("wte.weight")[:V]
        out["transformer.wpe.weight"] = get("wpe.weight")
        for i in range(cfg.n_layer):
            s, t = f"h.{i}.", f"transformer.h.{i}."
            for ln in ("ln_1", "ln_2"):
                out[t + ln + ".weight"], out[t + ln + ".bias"] = get(s + ln + ".weight"), bias(s + ln + ".bias", d)
            # transformers' Conv1D keeps weights as (in, out): ours transposed
            for ours, theirs in (("attn.c_attn", "attn.c_attn"), ("attn.c_proj", "attn.c_proj"),
                                 ("mlp.c_fc", "mlp.c_fc"), ("mlp.c_proj", "mlp.c_proj")):
                w = get(s + ours + ".weight")
                out[t + theirs + ".weight"] = w.t().contiguous()
                out[t + theirs + ".bias"] = bias(s + ours + ".bias", w.shape[0])
        out["transformer.ln_f.weight"], out["transformer.ln_f.bias"] = get("ln_f.weight"), bias("ln_f.bias", d)
        if head is not None:
            out["lm_head.weight"] = head
        return _own_storage(out)
    out["model.embed_tokens.weight"] = get("wte.weight")[:V]
    h = cfg.mlp_hidden
    for i in range(cfg.n_layer):
        s, t = f"h.{i}.", f"model.layers.{i}."
        out[t + "input_layernorm.weight"] = get(s + "ln_1.weight")
        out[t + "post_attention_layernorm.weight"] = get(s + "ln_2.weight")
        # c_attn rows are q, k, v (each heads x head_dim, as q_proj's); c_fc rows are gate, up
        parts = {"q_proj": (s + "attn.c_attn", 0, d), "k_proj": (s + "attn.c_attn", d, 2 * d),
                 "v_proj": (s + "attn.c_attn", 2 * d, 3 * d), "o_proj": (s + "attn.c_proj", 0, d)}
        for name, (src, a, b) in parts.items():
            out[t + f"self_attn.{name}.weight"] = get(src + ".weight")[a:b]
            if cfg.bias:
                out[t + f"self_attn.{name}.bias"] = get(src + ".bias")[a:b]
        for name, (src, a, b) in {"gate_proj": (s + "mlp.c_fc", 0, h), "up_proj": (s + "mlp.c_fc", h, 2 * h),
                                  "down_proj": (s + "mlp.c_proj", 0, d)}.items():
            out[t + f"mlp.{name}.weight"] = get(src + ".weight")[a:b]
            if cfg.bias:
                out[t + f"mlp.{name}.bias"] = get(src + ".bias")[a:b]
        if fam == "qwen3":
            out[t + "self_attn.q_norm.weight"] = get(s + "attn.q_norm.weight")
            out[t + "self_attn.k_norm.weight"] = get(s + "attn.k_norm.weight")
    out["model.norm.weight"] = get("ln_f.weight")
    if head is not None:
        out["lm_head.weight"] = head
    return _own_storage(out)


def _own_storage(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each tensor in storage of its own: the cut and split ones are views, which safetensors refuses
    to save (it would store the whole storage behind each)."""
    seen: set[int] = set()
    out = {}
    for k, v in tensors.items():
        ptr = v.untyped_storage().data_ptr()
        whole = v.untyped_storage().nbytes() == v.numel() * v.element_size()
        out[k] = v.contiguous() if whole and ptr not in seen else v.clone(memory_format=torch.contiguous_format)
        seen.add(ptr)
    return out


# The largest finite value of each float dtype a weight may be stored in.
FLOAT_MAX = {torch.float32: torch.finfo(torch.float32).max, torch.bfloat16: torch.finfo(torch.bfloat16).max,
             torch.float16: torch.finfo(torch.float16).max}


def check_range(tensors: dict[str, torch.Tensor], dtype: torch.dtype, what: str, limit: float | None = None,
                label: str | None = None) -> None:
    """Refuse a dtype some weight would overflow in (|w| above its largest finite value, `limit` where
    the stored form holds another range: F16's 65504 is the usual one), naming the tensor and a dtype
    that holds it; before anything is written."""
    limit = FLOAT_MAX[dtype] if limit is None else limit
    for name, t in tensors.items():
        peak = float(t.abs().max()) if t.numel() else 0.0
        if peak > limit:
            raise ConfigError(f"{what}: weight {name} reaches |w| = {peak:.6g}, more than "
                              f"{label or str(dtype)[6:]} holds ({limit:.6g}); export with --dtype bf16 or f32")
