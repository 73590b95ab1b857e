"""Multi-node training for real on one machine: two hosts made of namespaces (tests/netns_hosts.py:
own network namespace and address on a bridge, own hostname, own sshd, own node-local disk at the
same path), DeepSpeed's pdsh runner over ssh with 1 CPU rank (gloo) per host.

- the Dagster base_model asset in hostfile mode: a materialization with the trainer's metadata
  (reported through Pipes from rank 0 on another host), metrics in the asset's MLflow run, the export
  registered, checkpoints complete on the shared lake;
- one host's rank killed mid-save after a checkpoint, the rerun resumes from the newest checkpoint
  complete on both node-local disks (each holding its node's model states: DeepSpeed's node-local
  storage) and ends with the uninterrupted run's weights (pretraining at ZeRO-0, SFT at ZeRO-1);
- one-line errors: an unreachable host, a host with another environment (seen by the launcher's probe
  and by the ranks), a run directory or checkpoint directory that is not shared.
"""
import contextlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from netns_hosts import Hosts, ensure_tools
from training.checkpoint import marker_name
from engine_fixtures import tiny_export, tiny_tokenizer_dir  # noqa: F401 (fixtures: an export to fine-tune)
from test_pretrain import corpus  # noqa: F401 (fixture: tokenizer + shards of a synthetic corpus)

ROOT = Path(__file__).resolve().parents[1]
HOST_ENV = {"OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "eth0"}
TINY = ["model.n_layer=2", "model.n_embd=64", "model.n_head=2", "model.block_size=64",
        "train.steps=6", "train.batch_tokens=1024", "train.micro_batch=8", "train.warmup_steps=1",
        "train.zero_stage=0", "eval.every=3", "eval.val_tokens=512", "eval.sample_every=6",
        "eval.sample_tokens=8", "checkpoint.every=2", "checkpoint.keep=3"]


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    why = ensure_tools()
    if why:
        pytest.skip(f"multi-node tests: {why}")
    h = Hosts(tmp_path_factory.mktemp("hosts"))
    try:
        h.start()
    except (RuntimeError, OSError) as e:
        h.close()
        pytest.skip(f"multi-node tests: cannot make namespace hosts here ({e})")
    yield h
    h.close()


def node_local(hosts, name: str) -> list[str]:
    return [f"checkpoint.dir={hosts.node_local / name}", "checkpoint.node_local=true"]


def launch_cli(hosts, job_args: list[str], env: dict | None = None, ssh_config=None, hostfile=None,
               timeout=600, extra_launch=()) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "training.multinode", "launch", "--hostfile", str(hostfile or hosts.hostfile),
           "--ssh-config", str(ssh_config or hosts.ssh_config), *[f"--env={k}={v}" for k, v in HOST_ENV.items()],
           *extra_launch, "--", *job_args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def pretrain_args(corpus, out: Path, overrides: list[str], resume=False) -> list[str]:
    return ["--module", "training.pretrain", "--config", str(ROOT / "training/configs/tiny.yaml"),
            "--data", str(corpus), "--tokenizer", str(corpus / "tokenizer"), "--out", str(out),
            *(["--resume"] if resume else []), *[a for o in overrides for a in ("--set", o)]]


def weights(export: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(export / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    worst = max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)
    assert worst <= 1e-6, f"resumed weights differ from the uninterrupted run's by {worst}"


def one_line_error(r: subprocess.CompletedProcess) -> str:
    """The error line (pdsh prefixes a rank's lines with its host), and no traceback."""
    lines = [line for line in (r.stdout + r.stderr).splitlines() if "crawl2chat: error:" in line]
    assert r.returncode != 0 and len(lines) >= 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    return lines[0]


@contextlib.contextmanager
def other_deepspeed_on_hostb(hosts, tmp_path):
    """hostb's installed deepspeed says another version: a real difference of its Python environment,
    in hostb's own mount namespace only."""
    import deepspeed
    dist_info = next(Path(deepspeed.__file__).parents[1].glob("deepspeed-*.dist-info"))
    fake = tmp_path / "METADATA"
    fake.write_text((dist_info / "METADATA").read_text().replace(
        f"Version: {deepspeed.__version__}", "Version: 0.0.1"))
    hosts.bind("hostb", fake, dist_info / "METADATA")
    try:
        yield
    finally:
        hosts.unbind("hostb", dist_info / "METADATA")


# ---- errors before anything trains ---------------------------------------------------------------

def test_unreachable_host_other_environment_and_unshared_lake_are_one_line(hosts, tmp_path):
    import dagster as dg

    from assets.training import TrainingLauncher
    # a host whose sshd does not answer (hostb's address, a port nobody listens on)
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host ghost\n  HostName {hosts.addr['hostb']}\n  Port 2222\n" + hosts.ssh_config.read_text())
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("hosta slots=1\nghost slots=1\n")
    r = launch_cli(hosts, ["--module", "training.pretrain", "--out", str(tmp_path / "run")],
                   ssh_config=cfg, hostfile=hostfile, timeout=120)
    line = one_line_error(r)
    assert "host ghost cannot be reached over ssh" in line and "refused" in line
    launcher = TrainingLauncher(mode="hostfile", hostfile=str(hostfile), ssh_config=str(cfg))
    with pytest.raises(dg.Failure, match="host ghost cannot be reached over ssh") as e:
        launcher.preflight()
    assert "\n" not in str(e.value.description)

    import deepspeed
    with other_deepspeed_on_hostb(hosts, tmp_path):
        r = launch_cli(hosts, ["--module", "training.pretrain", "--out", str(tmp_path / "run")], timeout=120)
        line = one_line_error(r)
        assert f"host hostb runs another environment than this one: deepspeed 0.0.1 there, " \
               f"{deepspeed.__version__} here" in line
        with pytest.raises(dg.Failure, match="host hostb runs another environment") as e:
            TrainingLauncher(mode="hostfile", hostfile=str(hosts.hostfile), ssh_config=str(hosts.ssh_config)).preflight()
        assert "\n" not in str(e.value.description)
    assert not (tmp_path / "run" / ".crawl2chat-shared").exists()  # the lake marker is removed again

    # a run directory the hosts do not see (each host has its own disk at that path): the lake is not shared
    r = launch_cli(hosts, ["--module", "training.pretrain", "--out", str(hosts.node_local / "run")], timeout=120)
    line = one_line_error(r)
    assert f"does not see {hosts.node_local / 'run'}: the lake must be shared storage" in line


@pytest.mark.slow
@pytest.mark.extended
def test_ranks_compare_environments_without_the_launchers_probe(hosts, corpus, tmp_path):  # noqa: F811
    # `deepspeed --hostfile` called directly (here: the launch told to skip its probe): the ranks
    # compare their environments at start and stop with one line
    import deepspeed
    with other_deepspeed_on_hostb(hosts, tmp_path):
        r = launch_cli(hosts, pretrain_args(corpus, tmp_path / "run", TINY + ["log.mlflow=false"]),
                       extra_launch=["--skip-probe", "--master-addr", hosts.addr["hosta"]])
    line = one_line_error(r)
    assert f"rank 1 on host hostb runs another environment than rank 0 on hosta: deepspeed 0.0.1 there, " \
           f"{deepspeed.__version__} on rank 0" in line


# ---- the Dagster asset ------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.extended
def test_base_model_asset_in_hostfile_mode(hosts, corpus, tmp_path):  # noqa: F811
    import dagster as dg
    import mlflow

    from assets.lineage import MLflowTracker
    from assets.resources import LakeResource
    from assets.training import TrainingLauncher, base_model
    (tmp_path / "dagster_home").mkdir()
    instance = dg.DagsterInstance.local_temp(str(tmp_path / "dagster_home"))
    # token_shards and tokenizer as their assets would have reported them (their own tests run Spark)
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "token_shards", metadata={"path": dg.MetadataValue.path(str(corpus))}))
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "tokenizer", metadata={"path": dg.MetadataValue.path(str(corpus / "tokenizer"))}))
    tracker = MLflowTracker(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                            artifact_root=str(tmp_path / "mlartifacts"))
    launcher = TrainingLauncher(mode="hostfile", hostfile=str(hosts.hostfile), ssh_config=str(hosts.ssh_config),
                                env_vars=HOST_ENV, overrides=TINY)   # checkpoints on the shared lake
    result = dg.materialize([base_model], instance=instance, resources={
        "lake": LakeResource(root=str(tmp_path / "lake")), "launcher": launcher, "mlflow_tracker": tracker,
        "pipes_subprocess_client": dg.PipesSubprocessClient()})
    assert result.success
    meta = instance.get_latest_materialization_event(dg.AssetKey("base_model")).asset_materialization.metadata
    # reported by rank 0 through Pipes (context and messages in the run directory), then completed by the asset
    assert meta["step"].value == 6 and meta["world_size"].value == 2 and math.isfinite(meta["val_loss"].value)
    assert meta["model_version"].value.startswith("crawl2chat-base/")
    export = Path(meta["export"].value)
    assert (export / "model.safetensors").exists()
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["val_loss_finite_and_falling"]

    client = mlflow.MlflowClient(tracker.tracking_uri)
    version = client.get_model_version_by_alias("crawl2chat-base", "candidate")
    run = client.get_run(version.run_id)
    assert run.data.tags["dagster.asset_key"] == "base_model"
    assert "train/loss" in run.data.metrics and "val/loss" in run.data.metrics  # logged by rank 0 on hosta
    assert run.data.params["pretrain.world_size"] == "2"
    # checkpoints on shared storage: one model-states file (rank 0's), each rank's client state and marker
    tag = Path(meta["path"].value) / "checkpoints" / "step_00000006"
    names = sorted(p.name for p in tag.iterdir())
    assert {"mp_rank_00_model_states.pt", "client_state.rank00000.pt", "client_state.rank00001.pt",
            "COMPLETE.json", "COMPLETE.rank00001.json"} <= set(names), names


# ---- kill one host's rank, resume -----------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.extended
def test_killed_host_resumes_from_checkpoint_complete_on_both_disks(hosts, corpus, tmp_path):  # noqa: F811
    over = TINY + ["log.mlflow=false", "eval.sample_every=0"]
    full = launch_cli(hosts, pretrain_args(corpus, tmp_path / "full", over + node_local(hosts, "full")))
    assert full.returncode == 0, full.stderr[-3000:]

    run, ckpt = tmp_path / "run", over + node_local(hosts, "run")
    # hostb's rank is SIGKILLed in the middle of step 4's save, after the complete checkpoint of step 2
    killed = launch_cli(hosts, pretrain_args(corpus, run, ckpt), env={"CRAWL2CHAT_FAULT": "after_save:4:rank1"})
    assert killed.returncode != 0 and not (run / "export").exists()
    for host, rank in (("hosta", 0), ("hostb", 1)):
        tags = {p.name: sorted(q.name for q in p.iterdir()) for p in (hosts.disk[host] / "run").iterdir()}
        assert [n for n in tags["step_00000002"] if n.startswith("COMPLETE")] == [marker_name(rank)]  # its own
        assert not [n for n in tags["step_00000004"] if n.startswith("COMPLETE")]           # files, no marker
        # node-local storage: each disk holds its node's model states and only its own rank's client state
        assert "mp_rank_00_model_states.pt" in tags["step_00000002"]
        assert tags["step_00000002"].count(f"client_state.rank{rank:05d}.pt") == 1
        assert f"client_state.rank{1 - rank:05d}.pt" not in tags["step_00000002"]
    assert not (hosts.node_local / "run").exists()  # the path seen from here (no disk mounted there)

    rest = launch_cli(hosts, pretrain_args(corpus, run, ckpt, resume=True))
    assert rest.returncode == 0, rest.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"] == "step_00000002" and summary["step"] == 6 and summary["world_size"] == 2
    assert_same_weights(tmp_path / "full" / "export", run / "export")


@pytest.mark.slow
@pytest.mark.extended
def test_sft_in_hostfile_mode_resumes_after_a_killed_host(hosts, tiny_export, tmp_path):  # noqa: F811
    from test_sft import conversations

    from training.conversations.dataset import write_conversations
    data = tmp_path / "mixture"
    write_conversations([{**r, "split": "train"} for r in conversations(120, 0)], data / "train")
    write_conversations([{**r, "split": "val"} for r in conversations(12, 1)], data / "val")
    over = ["train.steps=4", "train.micro_batch=4", "train.batch_tokens=2048", "train.zero_stage=1",
            "eval.every=4", "eval.val_tokens=1024", "eval.sample_every=0", "eval.prompts=[]",
            "checkpoint.every=2", "log.mlflow=false"]

    def sft(out, name, resume=False, env=None):
        return launch_cli(hosts, ["--module", "training.sft", "--config", str(ROOT / "training/configs/sft.yaml"),
                                  "--data", str(data), "--init-from", str(tiny_export), "--out", str(out),
                                  *(["--resume"] if resume else []),
                                  *[a for o in over + node_local(hosts, name) for a in ("--set", o)]], env=env)
    full = sft(tmp_path / "full", "sft-full")
    assert full.returncode == 0, full.stderr[-3000:]
    killed = sft(tmp_path / "run", "sft-run", env={"CRAWL2CHAT_FAULT": "after_save:4:rank1"})
    assert killed.returncode != 0
    rest = sft(tmp_path / "run", "sft-run", resume=True)
    assert rest.returncode == 0, rest.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["resumed_from"] == "step_00000002" and summary["stage"] == "sft"
    assert_same_weights(tmp_path / "full" / "export", tmp_path / "run" / "export")


@pytest.mark.slow
@pytest.mark.extended
def test_checkpoint_dir_not_shared_is_one_line(hosts, corpus, tmp_path):  # noqa: F811
    # the node-local path, but the config says the checkpoint directory is shared
    over = TINY + ["log.mlflow=false", f"checkpoint.dir={hosts.node_local / 'notshared'}"]
    r = launch_cli(hosts, pretrain_args(corpus, tmp_path / "run", over))
    line = one_line_error(r)
    assert f"checkpoint directory {hosts.node_local / 'notshared'} is not shared: rank 1 on host hostb" in line
