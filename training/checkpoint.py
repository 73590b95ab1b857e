"""Checkpoint directory management around DeepSpeed's save_checkpoint/load_checkpoint.

Layout: <out>/checkpoints/step_00000050/ (DeepSpeed's files for every rank) + COMPLETE.json.

Why a marker of our own: DeepSpeed's `latest` file is written by rank 0 *before* the final barrier of
save_checkpoint, so rank 0 can point `latest` at a tag whose other ranks are still writing, and a
process killed mid-save leaves a tag directory that looks like any other. We call save_checkpoint with
save_latest=False, wait for every rank to return from it, fsync the files, and only then rank 0 writes
COMPLETE.json atomically (temp file + rename). A tag without that marker is never loaded and is deleted
by the next successful save.

A tag whose marker is there but whose files no longer match it (truncated or lost after the save: a
full disk, a bad copy) is damaged, not unfinished: the resume skips it and moves it to
<out>/checkpoints/.quarantine/<tag>-<time> with a warning, where nothing lists it and the user can
inspect it; it is never deleted by us.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

MARKER = "COMPLETE.json"
QUARANTINE = ".quarantine"
_TAG = re.compile(r"^step_(\d{8})$")


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def _tags(ckpt_dir: Path) -> list[tuple[int, Path]]:
    if not ckpt_dir.is_dir():
        return []
    out = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if p.is_dir() and (m := _TAG.match(p.name))]
    return sorted(out)


def damage(tag_dir: Path) -> str | None:
    """What is wrong with a tag that has a marker: a file it lists missing or of another size, or
    the marker unreadable. None when the files match it, or when there is no marker (unfinished)."""
    if not (tag_dir / MARKER).exists():
        return None
    try:
        marker = json.loads((tag_dir / MARKER).read_text())
        for rel, size in marker.get("files", {}).items():
            f = tag_dir / rel
            if not f.is_file():
                return f"{rel} is missing"
            if f.stat().st_size != size:
                return f"{rel} is {f.stat().st_size} bytes, {size} when it was saved"
    except (OSError, ValueError, AttributeError) as e:  # also: another rank moved it meanwhile
        return f"{MARKER} cannot be read ({e})"
    return None


def is_complete(tag_dir: Path) -> bool:
    """Marker present and every file it lists still there with its recorded size."""
    return (tag_dir / MARKER).is_file() and damage(tag_dir) is None


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
    """(step, tag) of the newest complete checkpoint, or None. Damaged tags on the way are
    quarantined; unfinished ones (no marker) are left to prune()."""
    for step, path in reversed(_tags(Path(ckpt_dir))):
        if (why := damage(path)) is not None:
            quarantine(path, why)
        elif is_complete(path):
            return step, path.name
    return None


def _fsync_tree(root: Path) -> dict[str, int]:
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MARKER:
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            files[str(p.relative_to(root))] = p.stat().st_size
    return files


def mark_complete(tag_dir: Path, info: dict) -> None:
    """Rank 0, after all ranks returned from save_checkpoint (a barrier): write the marker last."""
    files = _fsync_tree(tag_dir)
    tmp = tag_dir / (MARKER + ".tmp")
    with open(tmp, "w") as f:
        json.dump({**info, "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, tag_dir / MARKER)
    dfd = os.open(tag_dir, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def prune(ckpt_dir: str | Path, keep: int) -> list[str]:
    """Keep the newest `keep` complete tags; delete older complete ones and every incomplete tag
    older than the newest complete one (leftovers of killed saves). Returns the deleted tag names."""
    tags = _tags(Path(ckpt_dir))
    complete = [(s, p) for s, p in tags if is_complete(p)]
    if not complete:
        return []
    kept = {p for _, p in complete[-max(1, keep):]}
    newest = complete[-1][0]
    deleted = []
    for step, path in tags:
        if path in kept or step > newest:
            continue  # a newer incomplete tag may be another live writer's: leave it
        shutil.rmtree(path, ignore_errors=True)
        deleted.append(path.name)
    return deleted


def save(engine, ckpt_dir: str | Path, step: int, client_state: dict, keep: int, barrier) -> str:
    """Collective: every rank calls it. Returns the tag written."""
    ckpt_dir, tag = Path(ckpt_dir), tag_for(step)
    if engine.global_rank == 0 and (ckpt_dir / tag).exists():
        shutil.rmtree(ckpt_dir / tag)  # a stale partial save of the same step (we resumed before it)
    barrier()
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client_state, save_latest=False)
    _fault_point("after_save", step)
    barrier()  # every rank has returned from save_checkpoint: its files are written
    if engine.global_rank == 0:
        import torch.distributed as dist
        mark_complete(ckpt_dir / tag, {"step": step, "tag": tag, "world_size": dist.get_world_size()})
        prune(ckpt_dir, keep)
    barrier()
    return tag


def _fault_point(name: str, step: int) -> None:
    """Fault injection for the kill-mid-save test: CRAWL2CHAT_FAULT=after_save:<step> makes the
    process die (as a SIGKILL would) after DeepSpeed wrote its files but before the marker."""
    spec = os.environ.get("CRAWL2CHAT_FAULT", "")
    if spec == f"{name}:{step}":
        os._exit(137)
