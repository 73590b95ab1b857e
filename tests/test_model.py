"""GPT model, sizing math, config derivation, MFU table: fast CPU tests without DeepSpeed engines."""
import math

import pytest
import torch

from training.config import deepspeed_config, grad_accum_steps, load_config, parse_override
from training.model import GPT, GPTConfig, preset
from training.pretrain import lr_lambda
from training.tracking import mfu, peak_flops, step_line

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small(**kw) -> GPTConfig:
    return GPTConfig(**{**dict(vocab_size=97, block_size=16, n_layer=2, n_head=2, n_embd=32), **kw})


@pytest.mark.parametrize("name,expected", [("gpt2-124m", 124.44e6), ("gpt2-350m", 354.8e6),
                                           ("gpt2-774m", 774.0e6), ("gpt2-1.5b", 1557.6e6)])
def test_gpt2_presets_have_gpt2_sizes(name, expected):
    with torch.device("meta"):  # no memory for the weights
        m = GPT(preset(name))
    total = sum(p.numel() for p in m.parameters())
    assert abs(total - expected) / expected < 0.002
    c = m.config
    # non-embedding = 12·L·d² plus biases and norms (small): within 1% of the sizing comment
    assert abs(m.num_params() - 12 * c.n_layer * c.n_embd ** 2) / m.num_params() < 0.01
    assert m.num_params(non_embedding=False) == total


def test_tiny_preset_is_a_few_million_params_with_a_small_vocab():
    m = GPT(preset("tiny", vocab_size=8192))
    total = sum(p.numel() for p in m.parameters())
    assert 2e6 <= total <= 6e6
    assert m.config.n_layer == 4 and m.config.n_embd == 256 and m.config.block_size == 256


def test_flops_per_token_formula():
    m = GPT(small())
    c = m.config
    assert c.padded_vocab == 128 and m.wte.weight.shape == (128, 32)  # 97 padded to a multiple of 128
    n = m.num_params(non_embedding=True) + c.padded_vocab * c.n_embd  # the padded head matmul (tied)
    assert m.flops_per_token(16) == 6 * n + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * 16
    with torch.device("meta"):
        g = GPT(preset("gpt2-124m"))
    assert 0.8e9 < g.flops_per_token(1024) < 0.9e9  # ≈ 6·124M + 12·12·768·1024


def test_loss_at_init_is_near_uniform_and_causal():
    torch.manual_seed(0)
    m = GPT(small())
    x, y = torch.randint(0, 97, (2, 16)), torch.randint(0, 97, (2, 16))
    assert abs(m(x, y).item() - math.log(97)) < 0.3
    per_tok = m(x, x, reduction="none")
    assert per_tok.shape == (2, 16)
    x2 = x.clone()
    x2[:, 10:] = (x2[:, 10:] + 1) % 97  # change the future
    per_tok2 = m(x2, x, reduction="none")
    assert torch.allclose(per_tok[:, :10], per_tok2[:, :10], atol=1e-6)
    assert not torch.allclose(per_tok[:, 10:], per_tok2[:, 10:])


@pytest.mark.parametrize("switch", [dict(rope=True), dict(rmsnorm=True), dict(qk_norm=True),
                                    dict(tie_embeddings=False), dict(bias=False),
                                    dict(rope=True, rmsnorm=True, qk_norm=True, tie_embeddings=False)])
def test_switches_train(switch):
    torch.manual_seed(0)
    m = GPT(small(**switch))
    assert (m.wpe is None) == bool(switch.get("rope"))
    assert (m.lm_head.weight is m.wte.weight) == switch.get("tie_embeddings", True)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    x = torch.randint(0, 97, (4, 16))
    first = None
    for _ in range(15):  # memorize one batch: the loss must fall
        loss = m(x[:, :-1], x[:, 1:])
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.5


@pytest.mark.parametrize("switch", [dict(), dict(rope=True)])
def test_packed_segments_are_each_computed_as_if_alone(switch):
    """Three sequences packed in one row with segments: every per-token loss equals that sequence's
    loss run alone from position 0 (learned positions and RoPE); without segments it does not."""
    torch.manual_seed(0)
    m = GPT(small(**switch))
    lengths = [5, 7, 4]
    seqs = [torch.randint(0, 97, (1, n + 1)) for n in lengths]
    alone = [m(s[:, :-1], s[:, 1:], reduction="none") for s in seqs]
    x = torch.cat([s[:, :-1] for s in seqs], dim=1)
    y = torch.cat([s[:, 1:] for s in seqs], dim=1)
    segments = torch.cat([torch.full((1, n), k) for k, n in enumerate(lengths)], dim=1)
    packed = m(x, y, reduction="none", segments=segments)
    assert torch.allclose(packed, torch.cat(alone, dim=1), atol=1e-5)
    crossing = m(x, y, reduction="none")
    assert torch.allclose(crossing[:, :5], alone[0], atol=1e-5)      # the first sequence is at 0 anyway
    assert not torch.allclose(crossing[:, 5:], torch.cat(alone[1:], dim=1), atol=1e-3)
    m.activation_checkpointing = True                                 # the checkpointed path masks too
    assert torch.allclose(m(x, y, reduction="none", segments=segments), packed, atol=1e-5)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")  # CPU: eager on purpose
@pytest.mark.parametrize("switch", [dict(), dict(rope=True)])
def test_flex_block_mask_gives_the_dense_masks_per_token_losses(switch):
    """CUDA's path for packed segments (a FlexAttention block mask) computes the dense mask's per-token
    losses. Checked on the CPU forward (FlexAttention has no CPU backward): rows of 200 positions span
    two 128-position tiles, segments of 1 to 130 positions cross the tile edge."""
    from torch.nn.attention.flex_attention import BlockMask

    from training.segments import segment_block_mask
    torch.manual_seed(0)
    m = GPT(small(block_size=256, **switch))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 97, (3, 200), generator=g), torch.randint(0, 97, (3, 200), generator=g)
    layouts = [[200], [3, 130, 1, 66], [17] * 11 + [13]]
    segments = torch.stack([torch.cat([torch.full((n,), k) for k, n in enumerate(lens)]) for lens in layouts])
    assert m.block_mask(segments) is None          # "auto" on the CPU: the dense mask stays the path
    with torch.no_grad():
        dense = m(x, y, reduction="none", segments=segments)
        m.packed_attention = "flex"
        assert isinstance(m.block_mask(segments), BlockMask)
        flex = m(x, y, reduction="none", segments=segments)
        flex_sum = m(x, y, reduction="sum", segments=segments)
    torch.testing.assert_close(flex, dense, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(flex_sum, dense.sum(), rtol=1e-5, atol=1e-4)
    # Tiles are skipped: two 128-position documents leave 2 of 4 tiles (causal alone would leave 3)
    two = torch.cat([torch.zeros(1, 128), torch.ones(1, 128)], dim=1).long()
    assert segment_block_mask(two).sparsity() == 50.0


def test_activation_checkpointing_gives_same_loss_and_grads():
    torch.manual_seed(0)
    m = GPT(small())
    x = torch.randint(0, 97, (2, 16))
    m(x, x).backward()
    g1 = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    m.activation_checkpointing = True
    m(x, x).backward()
    for a, p in zip(g1, m.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-6)


def test_generate_lengths_greedy_and_top_k():
    torch.manual_seed(0)
    m = GPT(small()).eval()
    idx = torch.randint(0, 97, (2, 3))
    out = m.generate(idx, 20, temperature=0)  # longer than block_size: the context is cropped
    assert out.shape == (2, 23) and torch.equal(out[:, :3], idx)
    assert torch.equal(out, m.generate(idx, 20, temperature=0))
    assert torch.equal(out, m.generate(idx, 20, temperature=1.0, top_k=1))
    g = torch.Generator().manual_seed(1)
    s1 = m.generate(idx, 10, temperature=1.0, top_k=5, generator=g)
    s2 = m.generate(idx, 10, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(s1, s2) and int(s1.max()) < 97


def test_config_overrides_and_deepspeed_derivation(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  zero_stage: 2\n  micro_batch: 4\nmodel:\n  preset: tiny\n")
    cfg = load_config(p, ["train.lr=1e-3", "model.rope=true", "model.rmsnorm=true", "model.mlp=swiglu",
                          "eval.prompts=[a, b]", "train.batch_tokens=8192"])
    assert cfg["train"]["lr"] == 1e-3 and cfg["model"]["rope"] is True and cfg["eval"]["prompts"] == ["a", "b"]
    assert cfg["train"]["warmup_steps"] == 20  # defaults survive
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    ds = deepspeed_config(cfg, world_size=2, seq_len=256, on_cuda=False)
    assert ds["gradient_accumulation_steps"] == 4 and ds["train_batch_size"] == 32
    assert ds["zero_optimization"]["stage"] == 2 and "bf16" not in ds
    assert deepspeed_config(cfg, 1, 256, on_cuda=True)["bf16"] == {"enabled": True}
    with pytest.raises(ValueError):
        grad_accum_steps(1000, 4, 256, 1)


def test_lr_schedule_warmup_then_cosine():
    f = lr_lambda(warmup=10, total=100, min_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(99) == pytest.approx(0.1, abs=1e-3)
    vals = [f(s) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))


def test_peak_flops_table_and_step_line():
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA H200") == 989e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("NVIDIA L4") == 121e12
    assert peak_flops("NVIDIA A10G") == 70e12 and peak_flops("NVIDIA A10") == 125e12
    assert peak_flops("cpu") is None and peak_flops(None) is None
    assert mfu(100_000, 1e9, None) is None
    assert mfu(100_000, 1e9, 1e15) == pytest.approx(0.1)
    line = step_line(12, 200, 5.12341, 0.912, 3e-4, 210.4, 9800.2, 0.412)
    assert line == "step 12/200 | loss 5.1234 | norm 0.91 | lr 3.0e-04 | 210 ms | 9,800 tok/s | MFU 41.2%"
    assert "MFU" not in step_line(1, 2, 1.0, None, 1e-3, 1.0, 1.0, None)
