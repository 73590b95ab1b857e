"""Rank-0 metrics: MLflow run (continued through MLFLOW_RUN_ID or new), console lines, MFU, Dagster Pipes.

DeepSpeed has no MLflow monitor, so rank 0 logs itself. Metrics are buffered and sent with
`log_batch` every few steps: one HTTP/SQL round trip per flush instead of one per metric.
We use MlflowClient, not the fluent API: no process-global active run, and a run handed to us by a
parent (Dagster asset) through MLFLOW_RUN_ID is never terminated by us (the parent owns its status).
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

# Dense bf16 tensor-core peak FLOP/s per device (datasheets; sparsity figures halved). Matched as
# substrings of torch.cuda.get_device_name(), most specific first.
PEAK_BF16_FLOPS: list[tuple[str, float]] = [
    ("GH200", 989e12),
    ("H200 NVL", 835e12),   # the PCIe card: 600 W and lower clocks than the SXM (datasheet 1,671 sparse)
    ("H200", 989e12),       # SXM ("NVIDIA H200"): the H100 SXM's GH100 compute, more memory
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),       # SXM5 ("NVIDIA H100 80GB HBM3")
    ("H800", 989e12),
    ("B200", 2250e12),
    ("B100", 1750e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10G", 70e12),         # AWS g5 variant, lower clocks/power than the A10
    ("A10", 125e12),
    ("A6000", 155e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
    ("V100", 125e12),        # no bf16: fp16 tensor-core peak
    ("T4", 65e12),           # no bf16: fp16 tensor-core peak
]


def peak_flops(device_name: str | None) -> float | None:
    if not device_name:
        return None
    for key, flops in PEAK_BF16_FLOPS:
        if key.lower() in device_name.lower():
            return flops
    return None


def device_name() -> str:
    import torch
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    import platform
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


# What the logged MFU counts (banner line and MLflow param): the model's FLOPs per trained token
# (GPT.flops_per_token), not the hardware's. With activation checkpointing the forward of every block
# runs twice (~8·N instead of 6·N per token), and that recompute is NOT counted: MFU then reads ~25%
# lower than the device's actual utilization, as in nanoGPT / llm.c / PaLM's definition. Nor is the head
# matmul that backward reruns when the loss runs in checkpointed chunks (2·V·d per token, +9% at
# gpt2-124m): on CUDA the loss is unchunked wherever the logits fit (model.py loss_rows), so there is
# none; GPT.recompute_flops_per_token counts both recomputes (bench/train.py reports the HFU with them).
MFU_DEFINITION = ("model FLOPs (6N + attention) / dense bf16 peak; excludes recompute (activation "
                  "checkpointing, chunked-loss head)")


def mfu(tokens_per_s_per_device: float, flops_per_token: float, peak: float | None) -> float | None:
    """Model FLOPs utilization of one device (MFU_DEFINITION); None where the peak is unknown (CPU)."""
    if not peak:
        return None
    return tokens_per_s_per_device * flops_per_token / peak


def processed_throughput(positions: float, flops: float, step_s: float, world: int, peak: float | None) -> dict:
    """train/tokens_per_s and train/mfu of a step from what it processed, for the jobs whose rows are
    padded to their own micro-batch (RL, RLHF, the reward model), where the trainer's rows x context
    reads 3-10x high: `positions` through the training forward (all ranks) per second, and `flops`
    (every forward and backward of the step, all ranks; MFU_DEFINITION) per device over the peak."""
    return {"train/tokens_per_s": positions / step_s,
            "train/mfu": flops / step_s / world / peak if peak else None}


def step_line(step: int, total: int, loss: float, norm: float | None, lr: float, ms: float,
              tok_s: float, mfu_value: float | None) -> str:
    """llm.c-style: step 12/200 | loss 5.1234 | norm 0.91 | lr 3.0e-04 | 210 ms | 9,800 tok/s | MFU 41.2%"""
    parts = [f"step {step}/{total}", f"loss {loss:.4f}",
             f"norm {norm:.2f}" if norm is not None else "norm n/a",
             f"lr {lr:.1e}", f"{ms:.0f} ms", f"{tok_s:,.0f} tok/s"]
    if mfu_value is not None:
        parts.append(f"MFU {100 * mfu_value:.1f}%")
    return " | ".join(parts)


class Tracker:
    """MLflow logging from rank 0; a no-op elsewhere or when disabled."""

    def __init__(self, enabled: bool, out_dir: str | Path, experiment: str, run_name: str | None = None,
                 params: dict | None = None, tags: dict | None = None, flush_every: int = 10,
                 param_prefix: str = "pretrain"):
        self.enabled, self.flush_every = enabled, max(1, flush_every)
        self.param_prefix = param_prefix  # the job's stage: pretrain.train.lr, sft.train.lr, ...
        self.run_id = None
        self.owns_run = False
        self._buffer: list = []
        if not enabled:
            return
        from mlflow.tracking import MlflowClient
        out_dir = Path(out_dir).resolve()
        # Always explicit (environment.md): MLflow's default is ./mlflow.db and ./mlruns of whatever the
        # cwd is. Without MLFLOW_TRACKING_URI the run lives in the run directory. (No
        # mlflow.set_tracking_uri: it writes MLFLOW_TRACKING_URI into os.environ.)
        env_uri = os.environ.get("MLFLOW_TRACKING_URI")
        uri = env_uri or f"sqlite:///{out_dir / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=uri)
        self.tracking_uri = uri
        if os.environ.get("MLFLOW_RUN_ID"):
            self.run_id = os.environ["MLFLOW_RUN_ID"]
            self.client.get_run(self.run_id)  # fail early on a wrong id
        else:
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(
                experiment, artifact_location=None if env_uri else (out_dir / "mlartifacts").as_uri())
            self.run_id = self.client.create_run(exp_id, run_name=run_name, tags=tags or {}).info.run_id
            self.owns_run = True
        if tags and not self.owns_run:
            for k, v in tags.items():
                self.client.set_tag(self.run_id, k, str(v))
        if params:
            self.log_params(params)

    def log_params(self, params: dict) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Param
        items = [Param(f"{self.param_prefix}.{k}", str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            try:
                self.client.log_batch(self.run_id, params=items[i:i + 100])
            except Exception as e:  # a continued run may already hold a param with another value
                print(f"[tracking] warning: params not logged: {e}")

    def log_metrics(self, metrics: dict, step: int, flush: bool = False) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Metric
        ts = int(time.time() * 1000)
        self._buffer += [Metric(k, float(v), ts, step) for k, v in metrics.items() if v is not None]
        if flush or step % self.flush_every == 0:
            self.flush()

    def flush(self) -> None:
        if not self.enabled or not self._buffer:
            return
        for i in range(0, len(self._buffer), 1000):
            self.client.log_batch(self.run_id, metrics=self._buffer[i:i + 1000])
        self._buffer = []

    def log_text(self, text: str, artifact_file: str) -> None:
        if self.enabled:
            self.client.log_text(self.run_id, text, artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.enabled:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        if not self.enabled:
            return
        self.flush()
        if self.owns_run:
            self.client.set_terminated(self.run_id, status)


@contextlib.contextmanager
def dagster_pipes_session():
    """Yields the Dagster Pipes context when this process was launched through Pipes, else None.
    Imports dagster_pipes only (never dagster): the training image need not carry Dagster."""
    try:
        from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes
    except ImportError:
        yield None
        return
    if not PipesEnvVarParamsLoader().is_dagster_pipes_process():
        yield None
        return
    with open_dagster_pipes() as pipes:
        yield pipes
