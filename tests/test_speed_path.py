"""The pretraining speed path on CPU: chunked loss == one cross-entropy, the padded vocabulary is never
trained on or sampled, exports before padding still load, the compiled training loss matches eager,
and the prefetching loader yields the plain loader's batches and resume positions."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from engine_fixtures import tiny_gpt, tiny_tok, tiny_tokenizer_dir  # noqa: F401 (fixtures)
from training.data import Prefetcher, WindowLoader, random_token_shards
from training.engine.engine import Engine, SamplingParams
from training.export import export_state, load_model
from training.model import GPT, IGNORE, GPTConfig, preset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**dict(vocab_size=97, block_size=16, n_layer=2, n_head=2, n_embd=32), **kw}))


def bias_toward_padding(model: GPT, scale: float = 50.0) -> None:
    """Make every padded id the overwhelming favourite of an unmasked softmax: the final norm outputs
    ~its bias u whatever the input, the padded head rows are scale·u, the real rows stay small."""
    V, d = model.config.vocab_size, model.config.n_embd
    u = torch.nn.functional.normalize(torch.randn(d, generator=torch.Generator().manual_seed(0)), dim=0)
    with torch.no_grad():
        model.ln_f.weight.mul_(0.01)
        model.ln_f.bias.copy_(u)
        model.lm_head.weight[:V].mul_(0.01)
        model.lm_head.weight[V:] = scale * u


# ---- chunked loss ------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_chunked_loss_equals_one_cross_entropy_over_the_real_vocabulary(reduction):
    m = small()
    bias_toward_padding(m, scale=3.0)  # padded logits large: including them would change the loss
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 97, (5, 16), generator=g), torch.randint(0, 97, (5, 16), generator=g)
    y[0, :7] = IGNORE
    y[3] = IGNORE                      # a whole row untrained
    h = m._trunk(x, None)
    W = m.lm_head.weight
    ref = F.cross_entropy(F.linear(h, W[:97]).flatten(0, 1), y.flatten(), reduction=reduction)
    padded = F.cross_entropy(F.linear(h, W).flatten(0, 1), y.flatten(), reduction=reduction)
    ref_grad = torch.autograd.grad(ref.sum(), W)[0]
    assert not torch.allclose(ref, padded, rtol=1e-3)  # the test can tell the padded denominator apart
    m.loss_chunk = 32                  # 2 rows of 16 per chunk: 3 chunks, checkpointed under autograd
    got = m(x, y, reduction=reduction)
    got_grad = torch.autograd.grad(got.sum(), W)[0]
    if reduction == "none":
        assert got.shape == (5, 16) and (got[y == IGNORE] == 0).all()
        ref = ref.view(5, 16)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_grad, ref_grad, rtol=1e-4, atol=1e-6)
    assert got_grad[97:].abs().max() == 0  # the padded rows never get a gradient from the loss
    m.loss_chunk = 10_000              # one chunk: the same figures
    torch.testing.assert_close(m(x, y, reduction=reduction), ref, rtol=1e-5, atol=1e-5)


def test_head_runs_once_per_step_when_the_logits_fit_in_one_chunk():
    """One chunk: backward reuses the logits (the head's forward runs once per forward + backward);
    checkpointed chunks rerun it in backward, the recompute that recompute_flops_per_token counts."""
    m = small()
    calls = []
    m.lm_head.register_forward_hook(lambda *_: calls.append(1))
    x = torch.randint(0, 97, (4, 16), generator=torch.Generator().manual_seed(1))
    for chunk, runs, extra in ((10_000, 1, 0.0), (32, 4, 2.0 * 128 * 32)):  # 4 rows: 1 chunk, or 2 of 2 rows
        m.loss_chunk, calls[:] = chunk, []
        m(x, x).backward()
        assert len(calls) == runs
        assert m.recompute_flops_per_token(4, 16) == extra


def test_loss_rows_on_the_cpu_unchanged_and_sized_from_memory_for_cuda():
    m = small()
    assert m.loss_rows(64, 16, torch.device("cpu")) == 8192 // 16     # the CPU keeps 8192 positions
    with torch.device("meta"):
        g = GPT(preset("gpt2-124m"))
    # gpt2-124m: a 1024-position row of logits is 1024 · 50304 · 16 B = 0.82 GB; half of 75 GB free
    # holds 45 rows (micro-batch 32 in one chunk), half of 10 GB free 6 rows.
    assert g.rows_that_fit(75 * 10**9, 1024) == 45
    assert g.rows_that_fit(10 * 10**9, 1024) == 6
    assert g.rows_that_fit(10**6, 1024) == 1


def test_mean_of_a_batch_without_trained_targets_is_nan_like_cross_entropy():
    m = small()
    y = torch.full((2, 16), IGNORE)
    assert math.isnan(m(torch.zeros(2, 16, dtype=torch.long), y).item())
    assert m(torch.zeros(2, 16, dtype=torch.long), y, reduction="sum").item() == 0.0


# ---- padded vocabulary -------------------------------------------------------------------------

def test_padded_vocabulary_shapes_and_flops():
    m = small()
    assert m.config.padded_vocab == 128 and m.wte.weight.shape == (128, 32)
    assert m(torch.zeros(1, 4, dtype=torch.long)).shape == (1, 1, 97)   # logits: the real vocabulary
    assert GPTConfig(vocab_size=50257).padded_vocab == 50304
    assert GPTConfig(vocab_size=256, vocab_pad_multiple=1).padded_vocab == 256
    assert small(vocab_pad_multiple=1).wte.weight.shape == (97, 32)


def test_generate_never_samples_a_padded_id():
    m = small()
    bias_toward_padding(m)
    full = F.linear(m._trunk(torch.zeros(1, 1, dtype=torch.long), None), m.lm_head.weight)
    assert full[0, -1].argmax() >= 97  # unmasked, the head would pick a padded id
    out = m.eval().generate(torch.zeros(4, 1, dtype=torch.long), 12, temperature=2.0,
                            generator=torch.Generator().manual_seed(0))
    assert out.max() < 97
    assert m.generate(torch.zeros(1, 1, dtype=torch.long), 5, temperature=0).max() < 97


def test_engine_never_samples_a_padded_id(tiny_tok):
    model = tiny_gpt(tiny_tok.vocab_size, seed=2, vocab_pad_multiple=384)  # 512 -> 768 rows
    assert model.config.padded_vocab > model.config.vocab_size
    bias_toward_padding(model)
    engine = Engine(model, tiny_tok, tools={})
    prompts = [tiny_tok.encode("hello"), tiny_tok.encode("the answer")]
    for params in (SamplingParams(max_tokens=16, temperature=2.0, seed=0), SamplingParams(max_tokens=8, temperature=0),
                   SamplingParams(max_tokens=8, top_p=0.99, top_k=500)):
        for c in engine.generate(prompts, params):
            assert c.tokens and max(c.tokens) < tiny_tok.vocab_size


def test_export_records_padding_and_exports_before_it_load_unpadded(tmp_path):
    m = small().eval()
    x = torch.randint(0, 97, (2, 8))
    state = {k: v.detach() for k, v in m.state_dict().items()}
    out = export_state(state, m.config, tmp_path / "padded")
    assert json.loads((out / "config.json").read_text())["model"]["vocab_pad_multiple"] == 128
    back = load_model(out)
    assert back.wte.weight.shape == (128, 32)
    torch.testing.assert_close(back(x), m(x))
    # An export written before padding existed: vocab_size rows, no vocab_pad_multiple in config.json.
    old = small(vocab_pad_multiple=1).eval()
    out = export_state({k: v.detach() for k, v in old.state_dict().items()}, old.config, tmp_path / "old")
    meta = json.loads((out / "config.json").read_text())
    del meta["model"]["vocab_pad_multiple"]
    (out / "config.json").write_text(json.dumps(meta))
    back = load_model(out)
    assert back.config.vocab_pad_multiple == 1 and back.wte.weight.shape == (97, 32)
    torch.testing.assert_close(back(x), old(x))


# ---- torch.compile of the training loss ---------------------------------------------------------

@pytest.mark.slow  # inductor compiles forward + backward C++ kernels: ~1-3 min on two cores
def test_compiled_training_loss_matches_eager_and_sampling_stays_eager():
    """A few AdamW steps of the tiny preset, compiled training loss vs eager: the same losses; then
    the compiled model's sampling (eager path) gives the eager model's tokens."""
    torch.manual_seed(0)
    models = [GPT(preset("tiny", n_layer=2, vocab_size=300, block_size=64)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    models[1].compile_loss()
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 300, (4, 65), generator=g) for _ in range(3)]
    losses = []
    for m in models:
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        seq = []
        for b in batches:
            loss = m(b[:, :-1], b[:, 1:], reduction="sum") / b[:, 1:].numel()
            loss.backward()
            opt.step()
            opt.zero_grad()
            seq.append(loss.item())
        losses.append(seq)
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    assert losses[0][-1] < losses[0][0]
    prompt = batches[0][:2, :5]
    toks = [m.eval().generate(prompt, 10, temperature=1.0, generator=torch.Generator().manual_seed(3))
            for m in models]
    assert torch.equal(toks[0], toks[1])
    ev = [m(batches[0][:, :-1], batches[0][:, 1:], reduction="none") for m in models]  # eval mode: eager
    torch.testing.assert_close(ev[0], ev[1], rtol=1e-4, atol=1e-4)


# ---- prefetching loader --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return random_token_shards(tmp_path_factory.mktemp("shards"), 300, {"train": 3000, "val": 200}, doc_tokens=150)


def batches_of(source, n):
    return [source.next_batch() for _ in range(n)]


def test_prefetcher_yields_the_plain_batches_and_resumes_at_the_next_untaken_one(shards):
    plain = WindowLoader(shards, 16, 4, seed=3)
    want = batches_of(plain, 40)  # several epochs
    pre = Prefetcher(WindowLoader(shards, 16, 4, seed=3), depth=2)
    got = batches_of(pre, 25)
    ref = WindowLoader(shards, 16, 4, seed=3)
    batches_of(ref, 25)
    assert pre.state_dict() == ref.state_dict()   # the next batch taken, not what the thread read ahead
    state = pre.state_dict()
    got += batches_of(pre, 5)
    pre.close()
    resumed = Prefetcher(WindowLoader(shards, 16, 4, seed=3))
    resumed.load_state_dict(state)
    rest = batches_of(resumed, 15)
    resumed.close()
    for (x, y), (wx, wy) in zip(got + rest[5:], want):
        assert torch.equal(x, wx) and torch.equal(y, wy)
    for (x, _), (wx, _) in zip(rest[:5], want[25:30]):
        assert torch.equal(x, wx)
    # close() rewinds: the same Prefetcher continues where the trainer stopped taking
    pre2 = Prefetcher(WindowLoader(shards, 16, 4, seed=3))
    batches_of(pre2, 3)
    pre2.close()
    assert torch.equal(pre2.next_batch()[0], want[3][0])
    pre2.close()


def test_prefetcher_raises_the_sources_error_in_the_trainer():
    class Broken:
        def next_batch(self):
            raise ValueError("damaged shard")

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass
    with pytest.raises(ValueError, match="damaged shard"):
        Prefetcher(Broken()).next_batch()


@pytest.mark.slow  # inductor compiles FlexAttention's CPU kernel: ~3 min on two cores
@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_compiled_loss_takes_the_block_mask_once_for_every_segment_layout():
    """CUDA's SFT step: the compiled training loss with a FlexAttention block mask built outside it.
    Three batches with different segment layouts: the dense mask's loss each time, and one compiled
    graph (a new mask per batch must not recompile). The CPU runs it forward only."""
    import torch._dynamo.utils as dynamo_utils
    from torch.nn.attention.flex_attention import BlockMask
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=97, block_size=256, n_layer=2, n_head=2, n_embd=32))
    m.compile_loss()
    torch._dynamo.reset()
    dynamo_utils.counters.clear()
    g = torch.Generator().manual_seed(1)
    for layout in ([200], [3, 130, 1, 66], [17] * 11 + [13]):
        segments = torch.cat([torch.full((n,), k) for k, n in enumerate(layout)])[None].expand(2, -1)
        x, y = torch.randint(0, 97, (2, 200), generator=g), torch.randint(0, 97, (2, 200), generator=g)
        with torch.no_grad():
            m.packed_attention = "dense"
            dense = m._train_loss(x, y, "sum", segments)
            m.packed_attention = "flex"
            assert isinstance(m.block_mask(segments), BlockMask)
            flex = m(x, y, reduction="sum", segments=segments)
        torch.testing.assert_close(flex, dense, rtol=1e-5, atol=1e-3)
    assert dynamo_utils.counters["stats"]["unique_graphs"] == 1
