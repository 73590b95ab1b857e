"""Multi-node training over ssh: the checks before and at the start of a run across hosts, and the
launch that carries what the ranks need to every host.

    python -m training.multinode launch --hostfile hostfile [--ssh-config F] [--env K=V ...] -- \
        --module training.pretrain --config ... --data ... --out lake/models/base/run1 [--resume]

Before launching, one ssh per host (in parallel) runs `python -m training.multinode fingerprint` there:
a host that cannot be reached, whose Python environment differs from this one (python, torch,
deepspeed, the crawl2chat commit), or that does not see the run directory (a marker file the launcher
just wrote there: the lake must be shared storage mounted at the same path everywhere) stops the
launch with one line. Then DeepSpeed's pdsh runner starts the ranks. It forwards only MLFLOW*,
PYTHON*, NCCL*, UCX*, MV2* of the launcher's environment, plus what a `.deepspeed_env` file lists
(DS_ENV_FILE names it): we write one into the run directory with the Dagster Pipes variables (rank 0
may run on another host; the asset's Pipes channels are files in the shared run directory), the
project's CRAWL2CHAT_* settings, GLOO_*/NCCL_*/OMP_* and --env values.

At the start of a run (trainer.run, also when `deepspeed --hostfile` is called directly) the ranks
compare their fingerprints (check_world), and when they span several hosts, every rank checks that it
sees a file rank 0 wrote into the checkpoint directory unless checkpoint.node_local says each node
keeps its own.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import importlib.metadata
import json
import os
import platform
import secrets
import shlex
import socket
import subprocess
import sys
from pathlib import Path

from pipelines.errors import ConfigError, UserError

ROOT = Path(__file__).resolve().parents[1]
ENV_FILE = ".deepspeed_env"
SHARED_MARKER = ".crawl2chat-shared"
# Variables the ranks on other hosts need and DeepSpeed's runner does not forward by itself.
FORWARD_PREFIXES = ("DAGSTER_PIPES_", "CRAWL2CHAT_", "GLOO_", "NCCL_", "OMP_", "TORCH_")
SAME_ENVIRONMENT = "every host needs the same Python environment and crawl2chat checkout"


class UnreachableHost(UserError):
    exit_code = 3


def git_commit(root: Path = ROOT) -> str | None:
    # safe.directory: the checkout may belong to another user than the one ssh logs in as.
    r = subprocess.run(["git", "-c", "safe.directory=*", "-C", str(root), "rev-parse", "HEAD"],
                       capture_output=True, text=True)
    return r.stdout.strip() or None if r.returncode == 0 else None


def fingerprint() -> dict:
    """What must be equal on every host. Versions from the installed metadata: no torch import."""
    def version(pkg):
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None
    return {"python": platform.python_version(), "torch": version("torch"), "deepspeed": version("deepspeed"),
            "crawl2chat commit": git_commit()}


def mismatch(here: dict, there: dict, here_name: str = "here") -> str | None:
    """'deepspeed 0.0.0 there, 0.19.8 here' for the first differing entry, else None."""
    for key in here:
        if here[key] != there.get(key):
            return f"{key} {there.get(key)} there, {here[key]} {here_name}"
    return None


def read_hostfile(path: str | Path) -> list[str]:
    """Host names of a DeepSpeed hostfile ('host slots=N' lines; # comments)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise ConfigError(f"hostfile {path}: {e.strerror or e}") from None
    hosts = []
    for n, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].startswith("slots="):
            raise ConfigError(f"hostfile {path}, line {n}: expected 'HOST slots=N', got {line!r}")
        hosts.append(parts[0])
    if not hosts:
        raise ConfigError(f"hostfile {path} lists no host")
    return hosts


def ssh_command(host: str, remote: str, ssh_config: str | None = None) -> list[str]:
    return ["ssh", *(["-F", ssh_config] if ssh_config else []), "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=10", host, remote]


def _probe_one(host: str, ssh_config: str | None, marker: Path | None, token: str | None) -> dict:
    remote = f"cd {shlex.quote(str(ROOT))} && {shlex.quote(sys.executable)} -m training.multinode fingerprint"
    if marker is not None:
        remote += f" --marker {shlex.quote(str(marker))} {token}"
    try:
        r = subprocess.run(ssh_command(host, remote, ssh_config), capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise UnreachableHost(f"host {host}: no answer over ssh within 120 s") from None
    why = (r.stderr.strip().splitlines() or ["no message"])[-1]
    if r.returncode == 255:  # ssh's own failure: resolve, connect, authenticate
        raise UnreachableHost(f"host {host} cannot be reached over ssh: {why}")
    if r.returncode != 0:
        raise ConfigError(f"host {host}: {sys.executable} -m training.multinode failed there ({why}); "
                          f"{SAME_ENVIRONMENT}")
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ConfigError(f"host {host}: unexpected answer to the environment check: {r.stdout[-200:]!r}") from None


def probe(hosts: list[str], ssh_config: str | None = None, run_dir: Path | None = None) -> dict[str, dict]:
    """Every host's report (in parallel), or the first problem as a UserError of one line: a host
    that cannot be reached, runs another environment, or does not see `run_dir`."""
    marker = token = None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        marker, token = run_dir / SHARED_MARKER, secrets.token_hex(8)
        marker.write_text(token)
    before = fingerprint()
    try:
        with concurrent.futures.ThreadPoolExecutor(max(1, len(hosts))) as pool:
            futures = [pool.submit(_probe_one, h, ssh_config, marker, token) for h in hosts]
            reports = dict(zip(hosts, [f.result() for f in futures]))
    finally:
        if marker is not None:
            marker.unlink(missing_ok=True)
    # Before and after the hosts answered: a commit made in the checkout meanwhile is not a difference.
    after = fingerprint()
    for host, rep in reports.items():
        if rep["fingerprint"] not in (before, after) and (why := mismatch(after, rep["fingerprint"])):
            raise ConfigError(f"host {host} runs another environment than this one: {why}; {SAME_ENVIRONMENT}")
        if marker is not None and not rep["marker"]:
            raise ConfigError(f"host {host} does not see {run_dir}: the lake must be shared storage mounted "
                              "at the same path on every host")
    return reports


def check_world(rank: int, world: int, ckpt_dir: Path, node_local: bool) -> None:
    """Collective at the start of a run whose ranks span several hosts: every rank's fingerprint
    equals rank 0's, and every rank sees a file rank 0 wrote into ckpt_dir unless
    checkpoint.node_local. Every rank raises the same one-line ConfigError."""
    if world == 1:
        return
    import torch.distributed as dist
    mine = {"host": socket.gethostname(), "fingerprint": fingerprint()}
    everyone: list = [None] * world
    dist.all_gather_object(everyone, mine)
    first = everyone[0]
    if len({o["host"] for o in everyone}) == 1:
        return  # one machine: one checkout and venv (and a commit made meanwhile must not fail the run)
    for r, other in enumerate(everyone):
        if why := mismatch(first["fingerprint"], other["fingerprint"], "on rank 0"):
            raise ConfigError(f"rank {r} on host {other['host']} runs another environment than rank 0 on "
                              f"{first['host']}: {why}; {SAME_ENVIRONMENT}")
    if node_local:
        return
    token = [secrets.token_hex(8)]
    dist.broadcast_object_list(token, src=0)
    marker = ckpt_dir / f"{SHARED_MARKER}-{token[0]}"
    if rank == 0:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(token[0])
    dist.barrier()
    try:
        seen = marker.read_text() == token[0]
    except OSError:
        seen = False
    views: list = [None] * world
    dist.all_gather_object(views, seen)
    dist.barrier()  # everyone has looked
    if rank == 0:
        marker.unlink(missing_ok=True)
    if not all(views):
        r = views.index(False)
        raise ConfigError(f"checkpoint directory {ckpt_dir} is not shared: rank {r} on host {everyone[r]['host']} "
                          f"does not see the file rank 0 wrote there on {first['host']}; put it on storage every "
                          "host mounts at the same path, or set checkpoint.node_local=true for per-node disks")


def write_env_file(path: Path, extra: dict[str, str]) -> dict[str, str]:
    """The .deepspeed_env DeepSpeed's runner reads (one KEY=VALUE a line): the forwarded variables of
    this environment and `extra`. Private (0600): it may carry tokens."""
    values = {k: v for k, v in os.environ.items() if k.startswith(FORWARD_PREFIXES)}
    values.update(extra)
    for k, v in values.items():
        if "\n" in v or not k.isidentifier():
            raise ConfigError(f"variable {k!r} cannot be passed to the other hosts (a name, a one-line value)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(f"{k}={v}\n" for k, v in sorted(values.items()))
    return values


def _run_dir(ds_args: list[str]) -> Path:
    for i, a in enumerate(ds_args):
        if a == "--out" and i + 1 < len(ds_args):
            return Path(ds_args[i + 1]).resolve()
        if a.startswith("--out="):
            return Path(a.split("=", 1)[1]).resolve()
    raise ConfigError("multinode launch: the job's arguments need --out (the run directory on the shared lake)")


def launch(hostfile: str, ds_args: list[str], ssh_config: str | None = None, env: dict[str, str] | None = None,
           master_addr: str | None = None, master_port: int | None = None, probe_hosts: bool = True) -> None:
    """Probe the hosts, write the run's .deepspeed_env, and exec DeepSpeed's runner (never returns)."""
    from pipelines.services import free_port
    hosts = read_hostfile(hostfile)
    run_dir = _run_dir(ds_args)
    if probe_hosts:
        reports = probe(hosts, ssh_config, run_dir)
        master_addr = master_addr or (reports[hosts[0]]["addresses"] or [None])[0]
    if not master_addr:
        raise ConfigError(f"host {hosts[0]} has no address besides loopback: pass --master-addr")
    env_file = run_dir / ENV_FILE
    write_env_file(env_file, env or {})
    os.environ["DS_ENV_FILE"] = str(env_file)  # an absolute path: DeepSpeed's join(~ or ., name) keeps it
    if ssh_config:  # pdsh's ssh module appends these to every ssh it runs
        os.environ["PDSH_SSH_ARGS_APPEND"] = f"{os.environ.get('PDSH_SSH_ARGS_APPEND', '')} -F {ssh_config}".strip()
    deepspeed = str(Path(sys.executable).parent / "deepspeed")
    cmd = [deepspeed, "--hostfile", str(hostfile), "--no_ssh_check", "--master_addr", master_addr,
           "--master_port", str(master_port or free_port()), *ds_args]
    print("[multinode] " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    os.execv(deepspeed, cmd)


def _addresses() -> list[str]:
    r = subprocess.run(["hostname", "-I"], capture_output=True, text=True)
    return r.stdout.split() if r.returncode == 0 else []


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m training.multinode", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    fp = sub.add_parser("fingerprint", help="this host's environment, addresses, and whether it sees a marker (JSON)")
    fp.add_argument("--marker", nargs=2, metavar=("PATH", "TOKEN"))
    ln = sub.add_parser("launch", help="probe the hosts, then deepspeed --hostfile with the run's .deepspeed_env")
    ln.add_argument("--hostfile", required=True)
    ln.add_argument("--ssh-config", help="ssh client config (-F) for the probe and pdsh")
    ln.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="passed to every rank")
    ln.add_argument("--master-addr", help="rendezvous address (default: the first host's first address)")
    ln.add_argument("--master-port", type=int)
    ln.add_argument("--skip-probe", action="store_true", help="the caller probed the hosts (with --master-addr)")
    ln.add_argument("ds_args", nargs=argparse.REMAINDER, help="-- then deepspeed's arguments: --module ...")
    args = ap.parse_args(argv)
    if args.cmd == "fingerprint":
        seen = None
        if args.marker:
            try:
                seen = Path(args.marker[0]).read_text() == args.marker[1]
            except OSError:
                seen = False
        print(json.dumps({"host": socket.gethostname(), "addresses": _addresses(), "fingerprint": fingerprint(),
                          "marker": seen}))
        return
    ds_args = args.ds_args[1:] if args.ds_args[:1] == ["--"] else args.ds_args
    env = {}
    for kv in args.env:
        if "=" not in kv:
            raise ConfigError(f"--env {kv!r} is not KEY=VALUE")
        k, v = kv.split("=", 1)
        env[k] = v
    launch(args.hostfile, ds_args, args.ssh_config, env, args.master_addr, args.master_port,
           probe_hosts=not args.skip_probe)


if __name__ == "__main__":
    from training.job_cli import cli_main
    cli_main(main)
