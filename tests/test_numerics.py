"""Pretraining numerics on CPU with the real DeepSpeed: the derived DeepSpeed config per ZeRO stage
and precision, fp32 gradient accumulation under bf16 (emulated, then in DeepSpeed's own engine), the
export of the fp32 master weights, the weight-decay groups and the peak-FLOPs table."""
from __future__ import annotations

import copy

import pytest
import torch

from training.config import deepspeed_config, load_config
from training.model import GPT, preset
from training.tracking import peak_flops
from training.trainer import build_optimizer, decay_groups, start

GAS = 32  # micro-batches per optimizer step


def derived(stage: int, precision: str, on_cuda: bool = False, gas: int = 2, seq: int = 16) -> dict:
    cfg = load_config(None, [f"train.zero_stage={stage}", f"train.precision={precision}", "train.micro_batch=2",
                             f"train.batch_tokens={2 * seq * gas}", "train.grad_clip=1.0"])
    return deepspeed_config(cfg, 1, seq, on_cuda)


# ---- the derived DeepSpeed config ----------------------------------------------------------------

COMMON = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 2, "train_batch_size": 4,
          "gradient_clipping": 1.0, "steps_per_print": 10**9, "wall_clock_breakdown": False}
BUCKETS = {"reduce_bucket_size": 50_000_000, "allgather_bucket_size": 50_000_000, "contiguous_gradients": True}
BF16_FP32_ACCUM = {"bf16": {"enabled": True}, "data_types": {"grad_accum_dtype": "fp32"},
                   "communication_data_type": "fp32"}


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
@pytest.mark.parametrize("on_cuda", [False, True])
def test_derived_deepspeed_config(stage, precision, on_cuda):
    zero = {0: {"stage": 0},
            1: {"stage": 1, **BUCKETS, "overlap_comm": on_cuda},
            2: {"stage": 2, **BUCKETS, "overlap_comm": on_cuda, "reduce_scatter": True},
            3: {"stage": 3, **BUCKETS, "overlap_comm": on_cuda,
                "stage3_gather_16bit_weights_on_model_save": True}}[stage]
    want = {**COMMON, "zero_optimization": zero}
    if stage:
        want["zero_allow_untested_optimizer"] = True
    if precision == "bf16":
        # stage 0: DeepSpeed has no fp32 accumulation for bf16 weights there -> autocast, fp32 weights
        want.update({"torch_autocast": {"enabled": True, "dtype": "bfloat16"}} if stage == 0 else BF16_FP32_ACCUM)
    assert derived(stage, precision, on_cuda) == want


def test_auto_precision_and_the_default_stage():
    assert derived(1, "auto", on_cuda=True)["data_types"] == {"grad_accum_dtype": "fp32"}
    assert "bf16" not in derived(1, "auto", on_cuda=False) and "data_types" not in derived(1, "auto")
    assert load_config()["train"]["zero_stage"] == 1  # ZeRO-1 where the model fits
    assert load_config("training/configs/tiny.yaml")["train"]["zero_stage"] == 0  # the CPU demo


# ---- bf16 gradients accumulate in fp32 -------------------------------------------------------------

class Regression(torch.nn.Module):
    """A linear model whose gradients have a common direction (inputs centred at 1): a running
    sum over micro-batches grows, which is where a bf16 accumulator loses the low bits."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(256, 64, bias=False)

    def forward(self, x, y):
        return ((self.lin(x) - y).float() ** 2).mean()


def micro_batches(dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    return [((torch.randn(8, 256, generator=g) + 1.0).to(dtype), torch.randn(8, 64, generator=g).to(dtype))
            for _ in range(GAS)]


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.double() - ref.double()).norm() / ref.double().norm()).item()


def test_fp32_accumulation_matches_the_full_batch_and_bf16_accumulation_does_not():
    """Emulation of the accumulators: 32 micro-batch gradients (the mean over the step as DeepSpeed
    scales them, 1/32 each) added into an fp32 buffer and into a bf16 buffer, against the gradient
    of the whole batch in one backward."""
    torch.manual_seed(0)
    model = Regression()
    batches = micro_batches()
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    model(x, y).backward()                 # the mean over the 32·8 rows = the mean of the micro means
    full = model.lin.weight.grad.clone()
    acc32 = torch.zeros_like(full)
    acc16 = torch.zeros_like(full, dtype=torch.bfloat16)
    for xb, yb in batches:
        model.zero_grad()
        (model(xb, yb) / GAS).backward()
        acc32 += model.lin.weight.grad
        acc16 += model.lin.weight.grad.bfloat16()
    assert rel_err(acc32, full) < 1e-6
    assert rel_err(acc16, full) > 1e-3


def test_deepspeed_bf16_engine_accumulates_in_fp32():
    """The real engine on CPU with the derived ZeRO-1 bf16 config (DeepSpeed's BF16_Optimizer):
    after the last micro-batch's backward, the gradient it will apply equals the exact (float64) sum
    of the 32 bf16 micro-batch gradients to fp32 rounding. The config bf16 alone gave (bf16 grads
    accumulated in place) misses it by ~0.5%."""
    import deepspeed
    from deepspeed.utils import safe_get_full_grad
    start()
    torch.manual_seed(0)
    base = Regression()
    batches = micro_batches(torch.bfloat16)
    reference_model = copy.deepcopy(base).bfloat16()
    exact = torch.zeros(64, 256, dtype=torch.float64)
    for xb, yb in batches:   # the same bf16 forward/backward per micro-batch, summed exactly
        reference_model.zero_grad()
        (reference_model(xb, yb) / GAS).backward()
        exact += reference_model.lin.weight.grad.double()
    ds = derived(1, "bf16", gas=GAS, seq=4) | {"train_micro_batch_size_per_gpu": 8, "train_batch_size": 8 * GAS}
    bf16_only = {k: v for k, v in ds.items() if k not in ("data_types", "communication_data_type")}
    errors = {}
    for name, config in (("derived", ds), ("bf16 only", bf16_only)):
        model = copy.deepcopy(base)
        engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                                          config=config)
        assert engine.module.lin.weight.dtype == torch.bfloat16
        for i, (xb, yb) in enumerate(batches):
            engine.backward(engine(xb, yb))
            if i == GAS - 1:
                errors[name] = rel_err(safe_get_full_grad(engine.module.lin.weight), exact)
            engine.step()
        if name == "derived":
            assert type(engine.optimizer).__name__ == "BF16_Optimizer"
    assert errors["derived"] < 1e-6, errors
    assert errors["bf16 only"] > 1e-3, errors


# ---- export: the fp32 master weights ----------------------------------------------------------------

def tiny_model(**over) -> GPT:
    torch.manual_seed(0)
    return GPT(preset("tiny", vocab_size=256, block_size=32, n_layer=2, **over))


def one_step_engine(stage: int, precision: str):
    import deepspeed
    start()
    model = tiny_model()
    cfg = load_config(None, [f"train.zero_stage={stage}", f"train.precision={precision}", "train.micro_batch=2",
                             "train.batch_tokens=32", "train.lr=1e-2", "train.warmup_steps=0"])
    engine, *_ = deepspeed.initialize(model=model, optimizer=build_optimizer(model, cfg["train"], False),
                                      config=deepspeed_config(cfg, 1, 16, False))
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(3))
    engine.backward(engine(x, x))
    engine.step()
    return engine


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_export_is_the_fp32_master_copy_not_the_bf16_module(stage):
    import deepspeed
    from deepspeed.utils import safe_get_full_fp32_param
    from training.export import gather_state_dict
    engine = one_step_engine(stage, "bf16")
    state = gather_state_dict(engine)
    assert engine.get_global_grad_norm() is not None  # the trainer reads DeepSpeed's norm at stages 1-3
    params = dict(engine.module.named_parameters())
    assert set(state) == set(params) and "lm_head.weight" not in state  # tied: stored once, as wte
    differs = 0
    for name, p in params.items():
        master = safe_get_full_fp32_param(p)
        assert state[name].dtype == torch.float32 and torch.equal(state[name], master.cpu()), name
        with deepspeed.zero.GatheredParameters([p]):
            assert p.dtype == torch.bfloat16
            assert torch.equal(state[name].bfloat16(), p.detach().cpu())  # the module is its rounding
            differs += int(not torch.equal(state[name], p.detach().float().cpu()))
    assert differs == len(params)  # every tensor keeps bits the bf16 module dropped


def test_stage0_bf16_is_autocast_with_fp32_weights_exported_as_they_are():
    import deepspeed.runtime.torch_autocast as ds_autocast
    from training.export import gather_state_dict
    try:
        engine = one_step_engine(0, "bf16")
        assert engine.torch_autocast_enabled() and not engine.bfloat16_enabled()
        assert engine.get_global_grad_norm() is None  # stage 0: the trainer computes the norm itself
        state = gather_state_dict(engine)
        for name, p in engine.module.named_parameters():
            assert p.dtype == torch.float32 and torch.equal(state[name], p.detach())
    finally:
        # DeepSpeed keeps "autocast initialized" process-global: later ZeRO engines in this test
        # process would take their communication dtypes from it.
        ds_autocast.TORCH_AUTOCAST_INITIALIZED = False


# ---- weight decay ----------------------------------------------------------------------------------

@pytest.mark.parametrize("tied", [True, False])
def test_decay_groups_leave_out_embeddings_biases_and_norms(tied):
    model = tiny_model(tie_embeddings=tied)
    decay, no_decay = decay_groups(model)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay}
    assert not any(n.startswith(("wte", "wpe")) for n in decayed)
    assert all(p.dim() >= 2 for p in decay) and decayed  # attention / MLP matrices
    assert {names[id(p)] for p in no_decay} >= {"wte.weight"} | ({"wpe.weight"} if model.wpe is not None else set())
    assert len(decay) + len(no_decay) == len(list(model.parameters()))  # each once
    # The tied head IS wte (not decayed); an untied head is an ordinary matmul (decayed).
    assert ("lm_head.weight" in decayed) == (not tied)
    opt = build_optimizer(model, load_config()["train"], False)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert [len(g["params"]) for g in opt.param_groups] == [len(decay), len(no_decay)]


# ---- peak FLOPs ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H200 NVL", 835e12), ("NVIDIA H200", 989e12), ("NVIDIA GH200 480GB", 989e12),
    ("NVIDIA H100 NVL", 835e12), ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12),
    ("NVIDIA A100-SXM4-80GB", 312e12), ("cpu (x86_64, 2 cores)", None)])
def test_peak_flops_lookup(name, peak):
    assert peak_flops(name) == peak
