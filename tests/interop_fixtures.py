"""Tiny models of each exportable family for the export tests (tests/test_export_hf.py, _gguf.py).

    interop_tokenizer_dir     a 500-token BPE (padded to 512 rows in the model: the cut is exercised)
    trained["gpt2"]           GPT-2 shape (learned positions, LayerNorm, GELU, tied head), SFT-trained
    trained["qwen3"]          RoPE + RMSNorm + SwiGLU + QK-norm, no biases, untied head, SFT-trained
    random_export(...)        any shape with random weights, drawn wider than the init so that a
                              wrong detail (an activation variant, a norm epsilon) moves the logits

The trained ones are a fresh init exported as pretraining would export it, then real SFT (DeepSpeed
on CPU, the project's trainer) for a few steps on generated chats with system prompts and python
tool calls, so the weights are trained ones and the export's metadata is the trainer's.

Two sizes follow transformers' GGUF loader, which does not read every field it could: GPT-2's
context is 1024 (it leaves n_positions at its default) and Qwen3's head_dim is 128 (its default).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine_fixtures import build_tokenizer
from test_sft import conversations
from training.conversations.dataset import write_conversations
from training.export import export_state
from training.model import GPT, preset

VOCAB = 500
SHAPES = {
    "gpt2": dict(n_layer=2, n_embd=64, n_head=2, block_size=1024),
    "qwen3": dict(n_layer=2, n_embd=256, n_head=2, block_size=256, rope=True, rmsnorm=True, mlp="swiglu",
                  qk_norm=True, bias=False, tie_embeddings=False),
}
SFT = ["train.micro_batch=4", "train.batch_tokens=1024", "train.seq_len=128", "train.warmup_steps=2",
       "train.lr=3e-3", "train.steps=12", "eval.every=12", "eval.val_tokens=1024", "eval.sample_every=0",
       "eval.prompts=[]", "checkpoint.every=0", "log.mlflow=false"]


def fresh_export(out: Path, tokenizer_dir: Path, seed: int = 0, **shape) -> Path:
    torch.manual_seed(seed)
    model = GPT(preset("tiny", vocab_size=VOCAB, **shape))
    return export_state(model.state_dict(), model.config, out, tokenizer_dir=tokenizer_dir)


LLAMA = dict(rope=True, rmsnorm=True, mlp="swiglu", tie_embeddings=False)


def random_export(out: Path, tokenizer_dir: Path, **shape) -> Path:
    torch.manual_seed(2)
    model = GPT(preset("tiny", vocab_size=VOCAB, **{"n_layer": 2, "n_embd": 64, "n_head": 2, "block_size": 256,
                                                    **shape}))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return export_state(model.state_dict(), model.config, out, tokenizer_dir=tokenizer_dir)


@pytest.fixture(scope="session")
def interop_tokenizer_dir(tmp_path_factory) -> Path:
    return build_tokenizer(tmp_path_factory.mktemp("interop_tok"), vocab_size=VOCAB)


@pytest.fixture(scope="session")
def trained(interop_tokenizer_dir, tmp_path_factory) -> dict[str, Path]:
    """family -> export directory of a tiny SFT-trained model."""
    from training.config import load_config
    from training.sft import train
    root = tmp_path_factory.mktemp("interop_models")
    write_conversations([{**r, "split": "train"} for r in conversations(120, 0)], root / "chats" / "train")
    write_conversations([{**r, "split": "val"} for r in conversations(12, 1)], root / "chats" / "val")
    n = torch.get_num_threads()
    torch.set_num_threads(1)   # the shared box: two threads contend (conftest.one_torch_thread)
    try:
        out = {}
        for fam, shape in SHAPES.items():
            base = fresh_export(root / fam / "base" / "export", interop_tokenizer_dir, **shape)
            train(load_config(None, SFT + [f"model.init_from={base}"], job="sft"), root / "chats", root / fam / "sft")
            out[fam] = root / fam / "sft" / "export"
        return out
    finally:
        torch.set_num_threads(n)
