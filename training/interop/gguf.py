"""A crawl2chat export as a GGUF file for llama.cpp, Ollama and LM Studio, written with the `gguf`
package (llama.cpp's own writer), in the architecture llama.cpp has for the model's family:

    OUT/model.gguf    weights, hyperparameters, the BPE tokenizer and the chat template (Jinja)
    OUT/Modelfile     `ollama create NAME -f OUT/Modelfile`: the same protocol as a Go template, stops
    OUT/README.md     the model card (card.py)

Tensors are the transformers ones (families.hf_state) renamed with the gguf package's name table,
transformed as llama.cpp's convert_hf_to_gguf.py does: GPT-2's Conv1D weights back to (out, in), and
Llama's q/k rows interleaved per head (llama.cpp's llama rotates adjacent pairs; Qwen3 is NeoX-style,
as ours, and stays). dtypes: f32, f16, bf16 for every matrix, q8_0 (8-bit blocks of 32, llama.cpp's
near-lossless quantization) where a row is a multiple of 32 (else f16); norms and biases stay f32.
The directory is staged like every output (pipelines/io.py, kind "gguf-export").
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from pipelines.errors import InputError
from pipelines.io import check_output_target, staged
from training.interop.chat_template import CHAT_TEMPLATE, OLLAMA_TEMPLATE, STOP_TOKENS
from training.interop.families import FAMILIES, FLOAT_MAX, LAYERNORM_EPS, RMSNORM_EPS, check_range, family
from training.interop.hf import export_weights, read_export

KIND = "gguf-export"
FILE = "model.gguf"
DTYPES = ("f32", "f16", "bf16", "q8_0")
# llama.cpp's pre-tokenizer that splits text as pipelines/tokenizer.py's SPLIT_PATTERN does: Llama 3's
# regex (the same classes; its `\s*[\r\n]+` and our `\s*[\r\n]` match the same spans). llama.cpp has
# it under three names; "llama-bpe" also turns on ignore_merges (a word found whole in the vocabulary
# is taken without merging) and a default BOS, which our BPE does not do; "dbrx" is the regex alone.
PRE_TOKENIZER = "dbrx"


def _qtype(dtype: str, t: np.ndarray | torch.Tensor):
    import gguf
    Q = gguf.GGMLQuantizationType
    if t.ndim < 2 or dtype == "f32":
        return Q.F32
    if dtype == "q8_0":
        return Q.Q8_0 if t.shape[-1] % 32 == 0 else Q.F16
    return {"f16": Q.F16, "bf16": Q.BF16}[dtype]


def _check_range(weights: dict[str, torch.Tensor], dtype: str, what: str) -> None:
    """Each tensor against the range of the type it will be stored in: F16 and BF16 their own, Q8_0
    int8 values times an F16 block scale (|w| up to 127 x 65504); rows Q8_0 cannot block are F16."""
    import gguf
    Q = gguf.GGMLQuantizationType
    groups: dict = {}
    for name, t in weights.items():
        groups.setdefault(_qtype(dtype, t), {})[name] = t
    for q, group in groups.items():
        if q in (Q.F16, Q.BF16):
            check_range(group, torch.float16 if q == Q.F16 else torch.bfloat16, what)
        elif q == Q.Q8_0:
            check_range(group, torch.float16, what, limit=127 * FLOAT_MAX[torch.float16], label="q8_0")


def _llama_interleave(w: torch.Tensor, heads: int) -> torch.Tensor:
    """convert_hf_to_gguf.py LlamaModel.permute: each head's (first half, second half) rotation
    pairs become adjacent rows, the order llama.cpp's llama rotates in."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensors(fam: str, cfg, weights: dict[str, torch.Tensor]):
    """(gguf name, fp32 array) per tensor, in llama.cpp's names and layouts."""
    import gguf
    arch = next(a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == FAMILIES[fam][2])
    names = gguf.get_tensor_name_map(arch, cfg.n_layer)
    for hf_name, t in weights.items():
        base, suffix = hf_name.rsplit(".", 1)
        gname = names.get_name(base)
        if gname is None:
            raise ValueError(f"no llama.cpp {FAMILIES[fam][2]} tensor for {hf_name}")
        if fam == "gpt2" and t.ndim == 2 and base.endswith(("c_attn", "c_proj", "c_fc")):
            t = t.t()
        if fam == "llama" and base.endswith(("q_proj", "k_proj")):
            t = _llama_interleave(t, cfg.n_head)
        yield f"{gname}.{suffix}", t.contiguous().numpy()


def _tokenizer(w, export_dir: Path) -> None:
    """The BPE vocabulary, merges and special tokens as llama.cpp reads a GPT-2-style tokenizer."""
    import gguf
    from pipelines.tokenizer import load_tokenizer
    tok = load_tokenizer(export_dir)
    model = json.loads((export_dir / "tokenizer.json").read_text())["model"]
    vocab = {i: s for s, i in tok.hf.get_vocab(with_added_tokens=True).items()}
    tokens = [vocab[i] for i in range(tok.vocab_size)]
    types = [gguf.TokenType.CONTROL if tok.is_special(i) else gguf.TokenType.NORMAL for i in range(tok.vocab_size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(PRE_TOKENIZER)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tok.bos_id)
    w.add_eos_token_id(tok.special(STOP_TOKENS[0]))
    w.add_eot_token_id(tok.special(STOP_TOKENS[0]))
    w.add_pad_token_id(tok.bos_id)
    w.add_add_bos_token(False)   # the chat template writes <|endoftext|> itself
    w.add_chat_template(CHAT_TEMPLATE)


def modelfile(gguf_name: str) -> str:
    stops = "".join(f'PARAMETER stop "{s}"\n' for s in STOP_TOKENS)
    return f'FROM ./{gguf_name}\nTEMPLATE """{OLLAMA_TEMPLATE}"""\n{stops}'


def export_gguf(export_dir: str | Path, out: str | Path, name: str, dtype: str = "f32",
                card: str | None = None, force: bool = False) -> Path:
    """Write OUT/model.gguf (+ Modelfile) from the crawl2chat export `export_dir`; returns the GGUF
    file. Refused before anything is written for an output crawl2chat did not write, an
    architecture with no llama.cpp family, or a dtype some weight overflows."""
    import gguf
    export_dir = Path(export_dir)
    check_output_target(out, KIND, force)
    if dtype not in DTYPES:
        raise InputError(f"--dtype {dtype}: a GGUF export is one of {', '.join(DTYPES)}")
    meta, cfg = read_export(export_dir)
    fam = family(cfg)
    weights = export_weights(export_dir, cfg)
    _check_range(weights, dtype, str(export_dir))
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]
    head_dim = cfg.n_embd // cfg.n_head
    with staged(out, kind=KIND, force=force) as tmp:
        w = gguf.GGUFWriter(str(tmp / FILE), FAMILIES[fam][2])
        w.add_name(name)
        w.add_description(f"crawl2chat {meta.get('stage', 'model')} export ({fam} architecture)")
        w.add_file_type(file_type)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_context_length(cfg.block_size)
        w.add_embedding_length(cfg.n_embd)
        w.add_block_count(cfg.n_layer)
        w.add_feed_forward_length(cfg.mlp_hidden)
        w.add_head_count(cfg.n_head)
        w.add_head_count_kv(cfg.n_head)
        if fam == "gpt2":
            w.add_layer_norm_eps(LAYERNORM_EPS)
        else:
            w.add_layer_norm_rms_eps(RMSNORM_EPS)
            w.add_rope_freq_base(cfg.rope_theta)
            w.add_rope_dimension_count(head_dim)
            w.add_key_length(head_dim)
            w.add_value_length(head_dim)
            w.add_vocab_size(cfg.vocab_size)
        _tokenizer(w, export_dir)
        for gname, arr in _tensors(fam, cfg, weights):
            q = _qtype(dtype, arr)
            w.add_tensor(gname, gguf.quants.quantize(arr, q), raw_dtype=q)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        (tmp / "Modelfile").write_text(modelfile(FILE))
        if card:
            (tmp / "README.md").write_text(card)
    return Path(out) / FILE
