"""A CUDA device on a CPU-only machine, for tests of device discipline (tests/test_device_discipline.py).

PyTorch's FakeTensorMode can put tensors on device="cuda" without a GPU and raises when devices mix,
but its tensors hold no data, so nothing that samples, reads a figure or takes a branch on a value can
run under it: a job's start evaluation (generation, rewards, `.tolist()`) stops at its first
data-dependent op. Here a tensor "on cuda" is a real CPU tensor in a wrapper that reports
`device == cuda:0`; every op runs on the real data, and the dispatcher enforces CUDA's placement rules:

- an op whose tensor arguments are on different devices raises, as CUDA does ("Expected all tensors to
  be on the same device"); like CUDA, a 0-dim CPU tensor may join a pointwise op as a scalar;
- factory functions with device="cuda" and `.to("cuda")` / `.cuda()` make wrapped tensors, `.cpu()` /
  `.to("cpu")` unwrap, `copy_` between devices is allowed (as it is on a GPU);
- `.item()`, `.tolist()` work (a host sync on a GPU, not an error).

    with fake_cuda():                     # torch.cuda.is_available() is True inside
        model.to("cuda"); model(x.cuda())  # a CPU tensor reaching a CUDA op raises FakeCudaMismatch

The wrapped tensors report a device of type "fakegpu" (PyTorch's Python backend for PrivateUse1,
which CPU builds can run autograd on; "cuda" itself has no device guard in a CPU build), while
torch.cuda.is_available() is True and every device="cuda" request lands there. DeepSpeed's CPU
accelerator is told its device is cuda:0, so the engine moves the model there and the trainer's real
step (backward, optimizer, figures) runs under the same rules. Collectives are skipped in a world of
one (gloo has no CUDA path to take). Limits, each a property of the harness, not of the code under
test: ZeRO stages 1-3 (their gradient hooks allocate outside these modes) and activation
checkpointing's recompute (it restores a device stream) are not exercised; ZeRO is covered on real
GPUs by `make gpu-check`.
"""
from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

# A device type that CPU builds can run autograd on: PyTorch's Python-backend hook for PrivateUse1
# (a device guard and hooks registered from Python), named like a GPU. "cuda" itself cannot be
# faked: autograd asks the CUDA device guard, which a CPU build does not have.
DEVICE_TYPE = "fakegpu"


_ACTIVE = [False]   # the device exists only inside fake_cuda(): outside it torch sees no accelerator


class _DeviceModule(torch.utils.backend_registration._DummyBackendModule):
    """torch.fakegpu: what activation checkpointing and autocast ask of a device (its RNG state, a
    device context, its AMP dtypes); the data is on the CPU, so is the RNG."""

    def is_available(self) -> bool:
        return _ACTIVE[0]

    def device_count(self) -> int:
        return int(_ACTIVE[0])

    @staticmethod
    def device(index):
        return contextlib.nullcontext()

    @staticmethod
    def get_amp_supported_dtype():
        return [torch.float16, torch.bfloat16]

    get_rng_state = staticmethod(torch.get_rng_state)
    set_rng_state = staticmethod(torch.set_rng_state)


class _Hooks(torch.utils.backend_registration._DummyPrivateUse1Hook):
    def is_available(self) -> bool:
        return _ACTIVE[0]


torch.utils.backend_registration._setup_privateuseone_for_python_backend(DEVICE_TYPE, backend_module=_DeviceModule(),
                                                                         hook=_Hooks())
CUDA = torch.device(f"{DEVICE_TYPE}:0")


class FakeCudaMismatch(RuntimeError):
    pass


class CudaTensor(torch.Tensor):
    """A real CPU tensor (`.inner`) that says it lives on cuda:0."""
    inner: torch.Tensor

    @staticmethod
    def __new__(cls, inner: torch.Tensor):
        if torch.is_inference_mode_enabled():   # the engine decodes under inference_mode
            with torch.inference_mode(False):
                return CudaTensor.__new__(cls, inner)
        r = torch.Tensor._make_wrapper_subclass(cls, inner.size(), strides=inner.stride(),
                                                storage_offset=inner.storage_offset(), dtype=inner.dtype,
                                                layout=inner.layout, device=CUDA,
                                                requires_grad=inner.requires_grad)
        r.inner = inner
        return r

    def __repr__(self):
        return f"CudaTensor({self.inner!r})"

    # Module.to(dtype=...) swaps a parameter's data in place (`param.data = new`): the wrapper's
    # metadata changes in C++, the data it stands for must follow
    @property
    def data(self):
        return CudaTensor(self.inner.detach())

    @data.setter
    def data(self, value):
        torch._C.TensorBase.data.__set__(self, value)
        self.inner = value.inner if isinstance(value, CudaTensor) else value

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _dispatch(func, args, kwargs or {})


def _is_cuda_device(d) -> bool:
    return d is not None and torch.device(d).type in ("cuda", DEVICE_TYPE)


def _dispatch(func, args, kwargs):
    flat, _ = tree_flatten((args, kwargs))
    tensors = [t for t in flat if isinstance(t, torch.Tensor)]
    on_cuda = [t for t in tensors if isinstance(t, CudaTensor)]
    plain = [t for t in tensors if not isinstance(t, CudaTensor) and t.device.type != "meta"]
    name = func.overloadpacket.__name__
    target = kwargs.get("device")
    # where the output goes: an explicit device wins (factories, _to_copy), else the inputs' device
    if "device" in kwargs:
        to_cuda = _is_cuda_device(target)
        kwargs = {**kwargs, "device": torch.device("cpu") if to_cuda else target}
    else:
        to_cuda = bool(on_cuda)
        # copies cross devices, and CUDA takes CPU index tensors
        if on_cuda and plain and name not in ("copy_", "_copy_from", "_local_scalar_dense", "set_", "index",
                                              "index_put", "index_put_", "_index_put_impl_"):
            scalars_ok = torch.Tag.pointwise in func.tags
            bad = [t for t in plain if not (scalars_ok and t.dim() == 0)]
            if bad:
                raise FakeCudaMismatch(
                    f"Expected all tensors to be on the same device, but found at least two devices, cuda:0 "
                    f"and {bad[0].device}! ({func}: a {tuple(bad[0].shape)} {bad[0].device} tensor)")
    unwrapped_args, unwrapped_kwargs = tree_map(lambda t: t.inner if isinstance(t, CudaTensor) else t,
                                                (args, kwargs))
    out = func(*unwrapped_args, **unwrapped_kwargs)
    if not to_cuda:
        return out
    # in-place and out= ops return their (wrapped) argument itself
    inner_to_outer = {id(t.inner): t for t in on_cuda}

    def wrap(t):
        if isinstance(t, torch.Tensor) and not isinstance(t, CudaTensor):
            outer = inner_to_outer.get(id(t))
            return CudaTensor(t) if outer is None else outer
        return t
    return tree_map(wrap, out)


class _CudaPlacement(TorchFunctionMode):
    """Where a device="cuda" request is made (factories, `.to`, `.cuda`), before PyTorch's own CUDA
    initialisation would refuse it: the op runs on the CPU and its tensors are wrapped."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in ("tolist", "numpy", "__array__") and isinstance(args[0], CudaTensor):
            if name == "numpy":
                raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy "
                                "the tensor to host memory first.")
            return getattr(args[0].inner, name)(*args[1:], **kwargs)   # a host sync, as on a GPU
        if name in ("__getitem__", "__setitem__") and isinstance(args[0], CudaTensor):
            # a list index becomes a tensor on self's device inside C++, where no Python mode sees it;
            # as a CPU index tensor (which CUDA takes) it stays visible
            def as_tensor(i):
                return torch.tensor(i) if isinstance(i, list) else i
            index = tuple(map(as_tensor, args[1])) if isinstance(args[1], tuple) else as_tensor(args[1])
            return func(args[0], index, *args[2:], **kwargs)
        if name == "to" and isinstance(args[0], torch.Tensor):
            device, dtype, _, _ = torch._C._nn._parse_to(*args[1:], **kwargs)
            src = args[0]
            if device is None or _is_cuda_device(device) == isinstance(src, CudaTensor):
                # same device: a dtype change at most (asking for "cuda" would start CUDA's lazy init)
                return src.to(dtype=dtype or src.dtype, copy=bool(kwargs.get("copy")))
            if _is_cuda_device(device):
                return _ToCuda.apply(src.to(dtype=dtype or src.dtype))
            return _ToCpu.apply(src).to(dtype=dtype or src.dtype)
        if _is_cuda_device(kwargs.get("device")) and name != "_parse_to":   # a factory: made on the CPU, wrapped
            out = func(*args, **{**kwargs, "device": "cpu"})
            return tree_map(lambda t: CudaTensor(t) if isinstance(t, torch.Tensor) else t, out)
        return func(*args, **kwargs)


class _ToCuda(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t):
        return CudaTensor(t.detach().clone())

    @staticmethod
    def backward(ctx, grad):
        return grad.inner.clone() if isinstance(grad, CudaTensor) else grad


class _ToCpu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t):
        return t.inner.detach().clone()

    @staticmethod
    def backward(ctx, grad):
        return CudaTensor(grad.clone())


class _CudaFactories(TorchDispatchMode):
    """Factories that PyTorch's own C++ calls with a tensor's options (SDPA's outputs, autograd's
    zeros): below Python, so only a dispatch mode sees them."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _is_cuda_device(kwargs.get("device")):
            out = func(*args, **{**kwargs, "device": torch.device("cpu")})
            return tree_map(lambda t: CudaTensor(t) if isinstance(t, torch.Tensor) else t, out)
        return func(*args, **kwargs)


class _CudaGenerator:
    """torch.Generator(device="cuda") on a CPU-only build: a CPU generator (ops take it as is)."""

    def __new__(cls, device="cpu"):
        return _REAL_GENERATOR(device="cpu")


_REAL_GENERATOR = torch.Generator


@contextlib.contextmanager
def fake_cuda():
    """torch believes one CUDA device exists; DeepSpeed's accelerator puts engines on it."""
    from deepspeed.accelerator import get_accelerator
    import deepspeed.comm as ds_comm
    import torch.distributed as dist
    patches = contextlib.ExitStack()
    mp = patches.enter_context(_MonkeyPatch())
    mp.set(torch.cuda, "is_available", lambda: True)
    mp.set(torch.cuda, "device_count", lambda: 1)
    mp.set(torch.cuda, "current_device", lambda: 0)
    mp.set(torch.cuda, "set_device", lambda *_: None)
    mp.set(torch.cuda, "synchronize", lambda *_: None)
    mp.set(torch.cuda, "get_device_name", lambda *_: "fake CUDA (CPU data)")
    mp.set(torch.cuda, "get_device_capability", lambda *_: (9, 0))
    mp.set(torch.cuda, "is_bf16_supported", lambda *_: True)
    mp.set(torch.cuda, "max_memory_allocated", lambda *_: 0)
    mp.set(torch.cuda, "reset_peak_memory_stats", lambda *_: None)
    mp.set(torch, "Generator", _CudaGenerator)
    mp.set(torch.Tensor, "pin_memory", lambda self, *a, **k: self)
    mp.set(torch.Tensor, "cuda", lambda self, *a, **k: self.to(CUDA, non_blocking=k.get("non_blocking", False)))
    acc = get_accelerator()
    mp.set(acc, "device_name", lambda *a, **k: "cuda:0" if not a or a[0] is not None else "cuda")
    mp.set(acc, "current_device_name", lambda *a, **k: "cuda:0")
    for name in ("all_reduce", "broadcast", "barrier", "all_gather_into_tensor", "reduce_scatter_tensor"):
        for mod in (dist, ds_comm):
            real = getattr(mod, name, None)
            if real is not None:
                mp.set(mod, name, _single_rank(real))
    # Backward of a non-CPU device runs in autograd's device thread, which knows neither these modes
    # nor how to unwind a Python error through the Python device guard: keep it in this thread.
    patches.enter_context(torch.autograd.set_multithreading_enabled(False))
    # Activation checkpointing's backward restores a stream on the device, which the Python device
    # guard cannot do (it aborts the process): recompute-free here; placement is the same either way.
    import training.model
    mp.set(training.model, "checkpoint", lambda fn, *args, **kwargs: fn(*args))
    patches.enter_context(_CudaPlacement())
    patches.enter_context(_CudaFactories())
    _ACTIVE[0] = True
    try:
        yield
    finally:
        _ACTIVE[0] = False
        patches.close()


def _single_rank(real):
    import torch.distributed as dist

    def call(*args, **kwargs):
        if dist.is_initialized() and dist.get_world_size() == 1:
            return None   # a world of one: every collective is the identity
        return real(*args, **kwargs)
    return call


class _MonkeyPatch:
    def __init__(self):
        self.undo = []

    def set(self, obj, name, value):
        self.undo.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for obj, name, value in reversed(self.undo):
            setattr(obj, name, value)
