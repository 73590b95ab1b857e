"""Shared fixtures for the inference engine's tests: a tiny exported model and tokenizer, built in a
second or two, and a "table model" whose greedy output follows a chosen token script.

Import the fixtures into a test module (pytest puts tests/ on sys.path):

    from engine_fixtures import tiny_tokenizer_dir, tiny_export, tiny_tok  # noqa: F401  (fixtures)

    def test_something(tiny_export, tiny_tok): ...

`tiny_export` is an export directory (model.safetensors + config.json + tokenizer files) of a random
2-layer GPT, exactly what `training.export.export_state` writes after pretraining, so
`Engine.load(tiny_export)` takes the real loading path. Nothing is trained but the tokenizer.

`table_model(tok, table)` is a real GPT (1 layer, untied head) whose next token is `table[current]`:
the residual stream carries the current token's embedding straight to the head (every block's output
projections are zero, no position table), and the head maps that embedding to the target token. It
drives the engine's tool state machine deterministically without any test-only hook in the engine.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipelines.tokenizer import load_tokenizer, train_tokenizer
from training.export import export_state
from training.model import GPT, preset

TINY_VOCAB = 512


def tiny_texts() -> list[str]:
    """A few KB of English (Python's own help topics, shipped with the stdlib) plus chat-ish lines."""
    from pydoc_data.topics import topics
    texts, n = [], 0
    for k in sorted(topics):
        texts.append(topics[k])
        n += len(topics[k])
        if n >= 30_000:
            break
    texts += ["The answer is 42.", "Let me compute that with python.", "print(6*7)", "Hello, world!"] * 20
    return texts


def build_tokenizer(out_dir: str | Path, vocab_size: int = TINY_VOCAB) -> Path:
    return train_tokenizer(tiny_texts(), vocab_size=vocab_size, out_dir=out_dir, max_chars=40_000)


def tiny_gpt(vocab_size: int, seed: int = 0, rope: bool = False, block_size: int = 256,
             special_ids: list[int] = (), **overrides) -> GPT:
    """A random tiny GPT with an untied head. Embeddings and head are drawn wider than GPT-2's init
    (std 0.5, not 0.02) so the next-token distribution is peaked: ties between near-equal logits would
    make "same tokens" comparisons hinge on float rounding instead of on the code under test. The head
    rows of `special_ids` are zero, so the model (almost) never stops or calls a tool by itself and
    generations run to max_tokens (the table model tests stopping and tools)."""
    torch.manual_seed(seed)
    cfg = preset("tiny", n_layer=2, n_embd=64, n_head=2, block_size=block_size, vocab_size=vocab_size,
                 rope=rope, tie_embeddings=False, **overrides)
    model = GPT(cfg)
    with torch.no_grad():
        for table in (model.wte.weight, model.lm_head.weight) + (() if rope else (model.wpe.weight,)):
            table.normal_(0.0, 0.5)
        model.lm_head.weight[list(special_ids)] = 0.0
    return model.eval()


def export_model(model: GPT, out_dir: str | Path, tokenizer_dir: str | Path) -> Path:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return export_state(state, model.config, out_dir, tokenizer_dir=tokenizer_dir)


def table_model(tok, table: dict[int, int], scale: float = 50.0) -> GPT:
    """A 1-layer GPT whose logits put `scale` on `table[current token]` (on the current token itself
    for tokens not in the table) and ~0 elsewhere.

    n_embd = vocab size, so token embeddings are one-hot and exactly orthogonal after the final
    LayerNorm (centering shifts every one-hot by the same -1/d: cross products stay ~0)."""
    V = tok.vocab_size
    cfg = preset("tiny", n_layer=1, n_embd=V, n_head=2, block_size=256, vocab_size=V,
                 rope=True, tie_embeddings=False)
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.wte.weight[:V].copy_(torch.eye(V))  # rows past V: the padded vocabulary, never looked up
        for norm in (model.h[0].ln_1, model.h[0].ln_2, model.ln_f):
            norm.weight.fill_(1.0)
        target = torch.arange(V)
        for a, b in table.items():
            target[a] = b
        # logit[b] = <LN(e_a), W[b]>; LN(e_a) ≈ sqrt(V)·e_a, so W[b, a] = scale/sqrt(V) gives ≈ scale.
        model.lm_head.weight[target, torch.arange(V)] = scale / V ** 0.5
    return model.eval()


def script_table(tokens: list[int]) -> dict[int, int]:
    """The table that makes a table model emit tokens[1:] after tokens[0] (each token once)."""
    if len(set(tokens[:-1])) != len(tokens) - 1:
        raise ValueError("a table model cannot emit a script that repeats a token (next = f(current))")
    return dict(zip(tokens[:-1], tokens[1:]))


def _never_sampled(tok) -> list[int]:
    return [i for i in range(tok.vocab_size) if tok.is_special(i)]


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    return build_tokenizer(tmp_path_factory.mktemp("tiny_tokenizer"))


@pytest.fixture(scope="session")
def tiny_tok(tiny_tokenizer_dir):
    return load_tokenizer(tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_export(tiny_tokenizer_dir, tmp_path_factory) -> Path:
    """Export dir of a random 2-layer GPT (learned positions, tied embeddings, block 256)."""
    tok = load_tokenizer(tiny_tokenizer_dir)
    model = tiny_gpt(tok.vocab_size, special_ids=_never_sampled(tok))
    return export_model(model, tmp_path_factory.mktemp("tiny_export") / "export", tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_rope_export(tiny_tokenizer_dir, tmp_path_factory) -> Path:
    """The same shape with RoPE, RMSNorm and QK-norm (the switches that change attention)."""
    tok = load_tokenizer(tiny_tokenizer_dir)
    model = tiny_gpt(tok.vocab_size, seed=1, rope=True, rmsnorm=True, qk_norm=True,
                     special_ids=_never_sampled(tok))
    return export_model(model, tmp_path_factory.mktemp("tiny_rope_export") / "export", tiny_tokenizer_dir)
