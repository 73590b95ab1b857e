"""A starting model for the RL tests: a tiny GPT fine-tuned (plain torch, ~15 s on one core) on the toy
task's warmup conversations, so it copies the number but answers in four styles and only ~1 in 7 of
its sampled replies is the exact "Answer: N" the checker rewards. RL has something to learn (the
format) that a 2-layer model can learn in seconds, on problems it was not trained on by RL.

    from rl_fixtures import toy_chat_export, tiny_tokenizer_dir  # noqa: F401 (fixtures)
"""
from __future__ import annotations

import pytest
import torch

from engine_fixtures import tiny_tokenizer_dir  # noqa: F401 (fixture)
from pipelines.tokenizer import load_tokenizer
from training.export import export_state
from training.model import GPT, preset

WARMUP_STEPS = 300


def warm_toy_model(tokenizer_dir, out_dir, steps: int = WARMUP_STEPS, seed: int = 0):
    from training.sft import pack_conversations
    from training.tasks.toy import warmup_conversations
    tok = load_tokenizer(tokenizer_dir)
    packed = pack_conversations(tok, warmup_conversations(2000, seed), 63)
    torch.manual_seed(seed)
    model = GPT(preset("tiny", n_layer=2, n_embd=64, n_head=2, block_size=64, vocab_size=tok.vocab_size))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(steps):
            x, y, segments = packed.batch(torch.randint(len(packed), (16,), generator=g).numpy())
            loss = model(x, y, segments=segments)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    return export_state(state, model.config, out_dir, tokenizer_dir=tokenizer_dir)


@pytest.fixture(scope="session")
def toy_chat_export(tiny_tokenizer_dir, tmp_path_factory):
    return warm_toy_model(tiny_tokenizer_dir, tmp_path_factory.mktemp("toy_chat") / "export")
