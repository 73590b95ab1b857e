"""Checkpoint directory management around DeepSpeed's save_checkpoint/load_checkpoint.

Layout: <out>/checkpoints/step_00000050/ (DeepSpeed's files for every rank) + one marker per rank:
COMPLETE.json (rank 0's, which records the world size) and COMPLETE.rank00001.json, ... .

Why markers of our own: DeepSpeed's `latest` file is written by rank 0 *before* the final barrier of
save_checkpoint, so rank 0 can point `latest` at a tag whose other ranks are still writing, and a
process killed mid-save leaves a tag directory that looks like any other. We call save_checkpoint with
save_latest=False, wait for every rank to return from it, and then EACH rank fsyncs the files it sees
and writes its own marker atomically (temp file + rename): its rank, the world size, the files and
their sizes. A tag is complete only when the markers of all ranks 0..W-1 of the world that wrote it
are there. Why one per rank: on node-local disks (no shared filesystem) each node holds only its own
ranks' files, so no single rank can vouch for the others' writes; a node that lost its copy (or was
killed before its marker) leaves a tag that is not complete anywhere. The check is collective when
torch.distributed runs: the ranks exchange what their disks show (one all_gather_object) and decide
together. A tag without all markers is never loaded and is deleted by the next successful save.

A tag with a marker whose files no longer match it (truncated or lost after the save: a full disk, a
bad copy) is damaged, not unfinished: the resume skips it and moves it to
<out>/checkpoints/.quarantine/<tag>-<time> with a warning, where nothing lists it and the user can
inspect it; it is never deleted by us. Client state (step, the loader's position, a job's per-rank state such as RL rollouts) is saved by
EVERY rank in its own client_state.rankNNNNN.pt, listed in its marker: DeepSpeed keeps one client state,
rank 0's, in the model-states file, so each rank would get rank 0's state back. On node-local disks
(checkpoint.node_local) DeepSpeed writes its model-states file on each node's first rank
(use_node_local_storage), so every node holds what its ranks load.

A checkpoint written before per-rank markers (one
COMPLETE.json without "rank", written by rank 0 on a shared filesystem after all ranks had saved)
still counts as complete.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

MARKER = "COMPLETE.json"            # rank 0's marker (and the single marker of older checkpoints)
QUARANTINE = ".quarantine"
_TAG = re.compile(r"^step_(\d{8})$")
_RANK_MARKER = re.compile(r"^COMPLETE(?:\.rank(\d{5}))?\.json$")


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def marker_name(rank: int) -> str:
    return MARKER if rank == 0 else f"COMPLETE.rank{rank:05d}.json"


def _is_marker_file(name: str) -> bool:
    return name.startswith("COMPLETE.")  # markers and their .tmp files: not checkpoint data


def _tags(ckpt_dir: Path) -> list[tuple[int, Path]]:
    if not ckpt_dir.is_dir():
        return []
    out = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if p.is_dir() and (m := _TAG.match(p.name))]
    return sorted(out)


def _marker_files(tag_dir: Path) -> dict[int, Path]:
    """rank -> marker file present in this directory (this node's view)."""
    out = {}
    with contextlib.suppress(OSError):
        for p in tag_dir.iterdir():
            if m := _RANK_MARKER.match(p.name):
                out[int(m.group(1) or 0)] = p
    return out


def damage(tag_dir: Path) -> str | None:
    """What is wrong with a tag that has markers here: a file one of them lists missing or of another
    size, a marker unreadable, or markers of different worlds. None when the files match, or when
    there is no marker (unfinished)."""
    worlds = set()
    for rank, path in sorted(_marker_files(tag_dir).items()):
        try:
            marker = json.loads(path.read_text())
            worlds.add(int(marker["world_size"]))
            for rel, size in marker.get("files", {}).items():
                f = tag_dir / rel
                if not f.is_file():
                    return f"{rel} is missing"
                if f.stat().st_size != size:
                    return f"{rel} is {f.stat().st_size} bytes, {size} when it was saved"
        except (OSError, ValueError, AttributeError, KeyError, TypeError) as e:  # also: moved meanwhile
            return f"{path.name} cannot be read ({e})"
    if len(worlds) > 1:
        return f"markers of different world sizes {sorted(worlds)}"
    return None


def _view(tag_dir: Path) -> dict:
    """What this node's disk shows of a tag: the ranks whose markers are here, the world size
    rank 0's marker records (None without it; "legacy" for an old single marker), its damage."""
    why = damage(tag_dir)
    markers = _marker_files(tag_dir)
    world = None
    if why is None and 0 in markers:
        try:
            m0 = json.loads(markers[0].read_text())
            world = int(m0["world_size"]) if "rank" in m0 else "legacy"
        except (OSError, ValueError) as e:  # moved by another rank's quarantine meanwhile
            why = f"{MARKER} cannot be read ({e})"
    return {"ranks": sorted(markers), "world": world, "damage": why}


def _verdict(views: list[dict]) -> tuple[str, str | None]:
    """("complete" | "damaged" | "unfinished", why) from every rank's view of one tag."""
    for v in views:
        if v["damage"] is not None:
            return "damaged", v["damage"]
    worlds = {v["world"] for v in views} - {None}
    if "legacy" in worlds:
        return "complete", None  # rank 0 wrote it after every rank had saved (shared filesystem)
    if len(worlds) != 1:
        return "unfinished", None  # no rank 0 marker anywhere (or disagreeing ones: not ours to judge)
    (world,) = worlds
    seen = {r for v in views for r in v["ranks"]}
    return ("complete", None) if seen >= set(range(world)) else ("unfinished", None)


def is_complete(tag_dir: Path) -> bool:
    """This node's view: every rank's marker present and every file they list there with its size.
    (latest_complete combines the views of all ranks; on a shared filesystem they are the same.)"""
    return _verdict([_view(tag_dir)])[0] == "complete"


def _all_views(ckpt_dir: Path) -> dict[str, list[dict]]:
    """tag name -> the view of every rank (one all_gather_object when torch.distributed runs with
    more than one rank; else this process's view). Collective: every rank calls it."""
    local = {p.name: _view(p) for _, p in _tags(ckpt_dir)}
    gathered = [local]
    try:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, local)
    except ImportError:
        pass
    names = sorted({n for g in gathered for n in g})
    return {n: [g[n] for g in gathered if n in g] for n in names}


def quarantine(tag_dir: Path, why: str) -> Path | None:
    """Move a damaged tag to <ckpt_dir>/.quarantine/<tag>-<time> (None if another rank did)."""
    dest = tag_dir.parent / QUARANTINE / f"{tag_dir.name}-{time.strftime('%Y%m%dT%H%M%S')}"
    dest.parent.mkdir(exist_ok=True)
    try:
        os.rename(tag_dir, dest)
    except FileNotFoundError:
        return None  # every rank looks; the first one moves it
    log.warning("checkpoint %s is damaged (%s): skipped, and moved to %s for inspection", tag_dir, why, dest)
    return dest


def latest_complete(ckpt_dir: str | Path) -> tuple[int, str] | None:
    """(step, tag) of the newest checkpoint complete in the views of all ranks, or None. Damaged
    tags on the way are quarantined (each node moves its own copy); unfinished ones are left to
    prune(). Collective under torch.distributed: every rank calls it and gets the same answer."""
    ckpt_dir = Path(ckpt_dir)
    for name, views in reversed(list(_all_views(ckpt_dir).items())):
        state, why = _verdict(views)
        if state == "damaged":
            if (ckpt_dir / name).is_dir():
                quarantine(ckpt_dir / name, why)
        elif state == "complete":
            return int(_TAG.match(name).group(1)), name
    return None


def _fsync_tree(root: Path) -> dict[str, int]:
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not _is_marker_file(p.name):
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            files[str(p.relative_to(root))] = p.stat().st_size
    return files


def mark_complete(tag_dir: Path, info: dict, rank: int = 0) -> None:
    """Every rank, after all ranks returned from save_checkpoint (a barrier): fsync the files this
    rank sees, then write its marker last (rank, info's world_size, those files and sizes)."""
    files = _fsync_tree(tag_dir)
    final = tag_dir / marker_name(rank)
    tmp = final.with_name(final.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump({**info, "rank": rank, "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    dfd = os.open(tag_dir, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def prune(ckpt_dir: str | Path, keep: int, complete: set[str] | None = None) -> list[str]:
    """Keep the newest `keep` complete tags; delete older complete ones and every incomplete tag
    older than the newest complete one (leftovers of killed saves). `complete`: the tags all ranks
    agree are complete (save() passes it; default: this node's view). Returns the deleted names."""
    tags = _tags(Path(ckpt_dir))
    done = [(s, p) for s, p in tags if (p.name in complete if complete is not None else is_complete(p))]
    if not done:
        return []
    kept = {p for _, p in done[-max(1, keep):]}
    newest = done[-1][0]
    deleted = []
    for step, path in tags:
        if path in kept or step > newest:
            continue  # a newer incomplete tag may be another live writer's: leave it
        shutil.rmtree(path, ignore_errors=True)
        deleted.append(path.name)
    return deleted


def client_state_name(rank: int) -> str:
    return f"client_state.rank{rank:05d}.pt"


def load(engine, ckpt_dir: str | Path, tag: str) -> dict:
    """Collective: load tag into the engine; returns THIS rank's client state (older checkpoints
    without per-rank files: the one DeepSpeed kept)."""
    import torch
    load_path, client = engine.load_checkpoint(str(ckpt_dir), tag=tag)
    if load_path is None:
        raise RuntimeError(f"DeepSpeed could not load {Path(ckpt_dir) / tag}")
    own = Path(ckpt_dir) / tag / client_state_name(engine.global_rank)
    if own.is_file():
        client = torch.load(own, map_location="cpu", weights_only=False)
    return client


def save(engine, ckpt_dir: str | Path, step: int, client_state: dict, keep: int, barrier) -> str:
    """Collective: every rank calls it. Returns the tag written. Directory work (the stale tag, the
    prune) is done by the first rank of each node, so node-local disks are kept too; on a shared
    filesystem those ranks race harmlessly (rmtree ignores what another already removed)."""
    import torch.distributed as dist
    ckpt_dir, tag = Path(ckpt_dir), tag_for(step)
    node_first = int(os.environ.get("LOCAL_RANK", 0)) == 0
    if node_first and (ckpt_dir / tag).exists():
        shutil.rmtree(ckpt_dir / tag, ignore_errors=True)  # a stale partial save of the step (we resumed before it)
    barrier()
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client_state, save_latest=False)
    import torch
    torch.save(client_state, ckpt_dir / tag / client_state_name(engine.global_rank))
    _fault_point("after_save", step, engine.global_rank)
    barrier()  # every rank has returned from save_checkpoint: its files are written
    mark_complete(ckpt_dir / tag, {"step": step, "tag": tag, "world_size": dist.get_world_size()},
                  engine.global_rank)
    barrier()  # every marker is written
    views = _all_views(ckpt_dir)
    if node_first:
        prune(ckpt_dir, keep, {n for n, v in views.items() if _verdict(v)[0] == "complete"})
    barrier()
    return tag


def _fault_point(name: str, step: int, rank: int = 0) -> None:
    """Fault injection for the kill-mid-save tests: CRAWL2CHAT_FAULT=after_save:<step> makes the
    process die (as a SIGKILL would) after DeepSpeed wrote its files but before the marker;
    after_save:<step>:rank<r> kills only rank r (one host of a multi-node run), with a real SIGKILL."""
    spec = os.environ.get("CRAWL2CHAT_FAULT", "")
    if spec == f"{name}:{step}":
        os._exit(137)
    if spec == f"{name}:{step}:rank{rank}":
        import signal
        os.kill(os.getpid(), signal.SIGKILL)
