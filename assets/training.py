"""The training group: pretraining launched through Dagster Pipes with the `deepspeed` launcher.

    token_shards + tokenizer -> base_model   lake/models/base/<run>/{checkpoints,export,samples,...}

Per-step curves go to MLflow (the trainer continues this asset's MLflow run via MLFLOW_RUN_ID);
Dagster gets the final figures through Pipes and guards them with a blocking check.
"""
import json
import math
import os
import sys
from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import Field

from assets.lineage import MLflowTracker
from assets.resources import LakeResource
from assets.tokens import _tokenizer_path, token_shards, tokenizer
from pipelines.io import dir_digest

# Jobs that train a model carry this tag: the instance's run queue (dagster_home/dagster.postgres.yaml,
# tag_concurrency_limits) admits one of them at a time, so two trainings never share one GPU box.
GPU_JOB_TAGS = {"crawl2chat/gpu": "1"}

ROOT = Path(__file__).resolve().parents[1]
LOSS_FALLS = "val_loss_finite_and_falling"
BASE_MODEL_NAME = "crawl2chat-base"
JOB_MODULES = {"rl": "training.rl.job", "rm": "training.rl.reward_model", "rlhf": "training.rl.rlhf"}


class TrainingLauncher(dg.ConfigurableResource):
    """How training processes start. `local`: this machine, its GPUs (or `processes` CPU ranks);
    `hostfile`: multi-node DeepSpeed over ssh with a DeepSpeed hostfile, through training/multinode.py
    (hosts probed first; Pipes variables and `env_vars` reach every host through the run's
    .deepspeed_env; Pipes channels are files in the run directory, which must be on the shared lake).
    On Kubernetes or Slurm the same command runs as the pod's or job step's entry point (see the README)."""

    mode: str = Field(default_factory=lambda: os.environ.get("CRAWL2CHAT_TRAIN_LAUNCHER", "local"))
    processes: int = Field(default_factory=lambda: int(os.environ.get("CRAWL2CHAT_TRAIN_PROCESSES", "1")))
    hostfile: Optional[str] = Field(default_factory=lambda: os.environ.get("CRAWL2CHAT_HOSTFILE"))
    ssh_config: Optional[str] = None   # ssh -F file for the probe and pdsh (default: ~/.ssh/config)
    # Variables every rank on every host gets, e.g. NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME, OMP_NUM_THREADS.
    env_vars: dict[str, str] = Field(default_factory=dict)
    # Each job's config file and --set overrides (training/configs/; `pretrain` keeps the plain names).
    config_file: str = Field(default_factory=lambda: os.environ.get(
        "CRAWL2CHAT_TRAIN_CONFIG", str(ROOT / "training" / "configs" / "tiny.yaml")))
    overrides: list[str] = Field(default_factory=lambda: _words("CRAWL2CHAT_TRAIN_OVERRIDES"))
    sft_config_file: str = Field(default_factory=lambda: os.environ.get(
        "CRAWL2CHAT_SFT_CONFIG", str(ROOT / "training" / "configs" / "sft.yaml")))
    sft_overrides: list[str] = Field(default_factory=lambda: _words("CRAWL2CHAT_SFT_OVERRIDES"))
    rl_config_file: str = Field(default_factory=lambda: os.environ.get(
        "CRAWL2CHAT_RL_CONFIG", str(ROOT / "training" / "configs" / "rl.yaml")))
    rl_overrides: list[str] = Field(default_factory=lambda: _words("CRAWL2CHAT_RL_OVERRIDES"))
    rlhf_config_file: str = Field(default_factory=lambda: os.environ.get(   # reward model and RLHF policy
        "CRAWL2CHAT_RLHF_CONFIG", str(ROOT / "training" / "configs" / "rlhf.yaml")))
    rlhf_overrides: list[str] = Field(default_factory=lambda: _words("CRAWL2CHAT_RLHF_OVERRIDES"))

    def job_config(self, job: str) -> tuple[str, list[str]]:
        """(config file, overrides) of a training job: pretrain | sft."""
        if job == "pretrain":
            return self.config_file, list(self.overrides)
        if job == "sft":
            return self.sft_config_file, list(self.sft_overrides)
        if job == "rl":
            return self.rl_config_file, list(self.rl_overrides)
        if job in ("rm", "rlhf"):
            return self.rlhf_config_file, list(self.rlhf_overrides)
        raise dg.Failure(f"unknown training job {job!r} (pretrain, sft, rl, rm or rlhf)")

    def load_config(self, job: str) -> dict:
        """The job's config exactly as the trainer will load it (thresholds for checks come from it)."""
        from training.config import load_config
        config_file, overrides = self.job_config(job)
        return load_config(config_file, overrides, job=job)

    def preflight(self) -> str:
        """hostfile mode, before launching: every host reachable over ssh, with this environment;
        returns the rendezvous address (the first host's). One-line dg.Failure otherwise. (The run
        directory's sharing is checked by the launch: the lake's marker file on every host.)"""
        from pipelines.errors import UserError
        from training import multinode
        if not self.hostfile:
            raise dg.Failure("TrainingLauncher(mode='hostfile') needs `hostfile` (or CRAWL2CHAT_HOSTFILE)")
        try:
            hosts = multinode.read_hostfile(self.hostfile)
            reports = multinode.probe(hosts, self.ssh_config)
        except UserError as e:
            raise dg.Failure(str(e)) from None
        addresses = reports[hosts[0]]["addresses"]
        if not addresses:
            raise dg.Failure(f"host {hosts[0]} has no address besides loopback")
        return addresses[0]

    def command(self, trainer_args: list[str], job: str = "pretrain", master_addr: str | None = None) -> list[str]:
        launcher = str(Path(sys.executable).parent / "deepspeed")
        if self.mode == "hostfile":
            if not self.hostfile:
                raise dg.Failure("TrainingLauncher(mode='hostfile') needs `hostfile` (or CRAWL2CHAT_HOSTFILE)")
            # The probe of the run directory (shared lake) runs in the launch itself; preflight()
            # already checked reachability and environments, so only the marker is looked at again.
            head = [sys.executable, "-m", "training.multinode", "launch", "--hostfile", self.hostfile,
                    *(["--ssh-config", self.ssh_config] if self.ssh_config else []),
                    *[f"--env={k}={v}" for k, v in sorted(self.env_vars.items())],
                    *(["--master-addr", master_addr] if master_addr else []), "--"]
        elif self.mode == "local":
            from pipelines.services import free_port
            # A free port, not the launcher's fixed 29500: two training runs on one machine (two assets,
            # a test beside a demo) would otherwise meet at the same rendezvous and one of them fail.
            head = [launcher, "--num_gpus", str(self.processes), "--master_port", str(free_port())]
        else:
            raise dg.Failure(f"unknown TrainingLauncher mode {self.mode!r} (local or hostfile)")
        config_file, overrides = self.job_config(job)
        extra = [a for o in overrides for a in ("--set", o)]
        return [*head, "--module", JOB_MODULES.get(job, f"training.{job}"), "--config", config_file, *trainer_args, *extra]

    def env(self) -> dict:
        if self.mode == "hostfile":
            return {}  # each host's ranks: its own cores (env_vars may set OMP_NUM_THREADS for all)
        # The CPU launcher counts its "devices" from LOCAL_SIZE. Each rank gets its share of this
        # machine's cores as torch threads: one rank uses them all (a fixed 1 thread left a 2-core demo
        # training at 3.1k tok/s instead of 7k), several never oversubscribe. OMP_NUM_THREADS wins if set.
        threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, len(os.sched_getaffinity(0)) // self.processes))
        return {"LOCAL_SIZE": str(self.processes), "OMP_NUM_THREADS": threads}


def _words(env_var: str) -> list[str]:
    return [s for s in os.environ.get(env_var, "").split() if s]


def launch(context: dg.AssetExecutionContext, launcher: TrainingLauncher, client: dg.PipesSubprocessClient,
           tracking_uri: str, run, job: str, trainer_args: list[str], out: Path) -> tuple[dg.MaterializeResult, list]:
    """Run a training job under the launcher through Pipes, continuing the asset's MLflow run; returns
    what the trainer reported and its per-step history (metrics.jsonl)."""
    master_addr = None
    if launcher.mode == "hostfile":
        master_addr = launcher.preflight()
        # Rank 0 may run on any host: the Pipes context and messages go through files in the run
        # directory on the shared lake (Dagster's file injector and reader for remote processes),
        # and the launch forwards the DAGSTER_PIPES_* variables naming them through .deepspeed_env.
        pipes_dir = out / ".pipes"
        pipes_dir.mkdir(parents=True, exist_ok=True)
        client = dg.PipesSubprocessClient(
            context_injector=dg.PipesFileContextInjector(str(pipes_dir / "context.json")),
            message_reader=dg.PipesFileMessageReader(str(pipes_dir / "messages.jsonl")))
    cmd = launcher.command([*trainer_args, "--out", str(out)], job=job, master_addr=master_addr)
    env = {**launcher.env(), "MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_RUN_ID": run.info.run_id,
           "PYTHONPATH": str(ROOT)}
    context.log.info("launching: " + " ".join(cmd))
    result = client.run(command=cmd, context=context, env=env, cwd=str(ROOT)).get_materialize_result()
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return result, history


def _token_shards_path(context: dg.AssetExecutionContext) -> Path:
    event = context.instance.get_latest_materialization_event(dg.AssetKey("token_shards"))
    if event is None or event.asset_materialization is None:
        raise dg.Failure("materialize `token_shards` first")
    return Path(event.asset_materialization.metadata["path"].value)


def unigram_entropy_nats(shards_root: Path) -> float:
    """Entropy of the training tokens' unigram distribution: the loss a model that ignores context
    would reach. A base model must get clearly below it."""
    import numpy as np

    from pipelines.shards import TokenShards
    ts = TokenShards(shards_root, "train")
    counts = np.bincount(ts.tokens(0, ts.num_tokens), minlength=ts.vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


@dg.asset(group_name="training", code_version="1", kinds={"deepspeed", "pytorch", "mlflow"},
          deps=[token_shards, tokenizer],
          check_specs=[dg.AssetCheckSpec(LOSS_FALLS, asset="base_model", blocking=True,
                                         description="final validation loss is finite and below the first")])
def base_model(context: dg.AssetExecutionContext, lake: LakeResource, launcher: TrainingLauncher,
               pipes_subprocess_client: dg.PipesSubprocessClient,
               mlflow_tracker: MLflowTracker) -> dg.MaterializeResult:
    """A GPT pretrained on the token shards with DeepSpeed ZeRO, exported as safetensors and
    registered in MLflow as `crawl2chat-base` (alias `candidate`)."""
    import mlflow

    shards, tok_dir = _token_shards_path(context), _tokenizer_path(context, lake)
    out = Path(lake.root) / "models" / "base" / context.run_id[:8]
    inputs = [("token_shards", str(shards), dir_digest(shards / "manifest.json"))]
    with mlflow_tracker.start_run(context, {"launcher": launcher.mode, "processes": launcher.processes,
                                            "config_file": launcher.config_file,
                                            "overrides": " ".join(launcher.overrides)}, inputs) as run:
        result, history = launch(context, launcher, pipes_subprocess_client, mlflow_tracker.tracking_uri, run,
                                 "pretrain", ["--data", str(shards), "--tokenizer", str(tok_dir)], out)
        vals = [h["val/loss"] for h in history if h.get("val/loss") is not None]
        first_train = history[0]["train/loss"]
        unigram = unigram_entropy_nats(shards)
        mlflow.log_metrics({"unigram_entropy_nats": unigram, "first_train_loss": first_train})
        export = out / "export"
        version = register(mlflow_tracker, run, export, BASE_MODEL_NAME, "crawl2chat pretrained base models")
    passed = bool(vals) and math.isfinite(vals[-1]) and (len(vals) == 1 or vals[-1] < vals[0])
    check = dg.AssetCheckResult(check_name=LOSS_FALLS, passed=passed,
                                metadata={"first_val_loss": vals[0] if vals else None,
                                          "final_val_loss": vals[-1] if vals else None})
    metadata = dict(result.metadata or {})
    metadata.update({"path": dg.MetadataValue.path(str(out)), "export": dg.MetadataValue.path(str(export)),
                     "first_train_loss": first_train, "ln_vocab": math.log(_vocab(export)),
                     "unigram_entropy_nats": unigram, "model_version": f"{BASE_MODEL_NAME}/{version}",
                     "mlflow_run": dg.MetadataValue.url(mlflow_tracker.run_url(run))})
    return dg.MaterializeResult(metadata=metadata, check_results=[check],
                                data_version=dg.DataVersion(dir_digest(export / "model.safetensors")[:32]))


def _vocab(export: Path) -> int:
    cfg = json.loads((export / "config.json").read_text())
    return cfg.get("vocab_size") or cfg.get("model", {}).get("vocab_size")


def register(tracker: MLflowTracker, run, export: Path, name: str, description: str, tags: dict | None = None,
             alias: str | None = "candidate") -> str:
    """Log the exported weights as run artifacts, register them as a version of model `name` (with
    lineage tags) and point `alias` at it; returns the version."""
    import mlflow
    from mlflow import MlflowClient
    mlflow.log_artifacts(str(export), artifact_path="model")
    client = MlflowClient(tracker.tracking_uri)
    try:
        client.create_registered_model(name, description=description)
    except mlflow.exceptions.MlflowException:
        pass  # already registered
    mv = client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                     tags={"format": "safetensors", **{k: str(v) for k, v in (tags or {}).items()}})
    if alias:
        client.set_registered_model_alias(name, alias, mv.version)  # "latest" is reserved
    return mv.version


training_assets = [base_model]
