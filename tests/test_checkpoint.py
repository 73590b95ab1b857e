"""Checkpoint markers on plain files (no DeepSpeed needed): a tag whose files no longer match its
completion marker is skipped on resume and moved to a hidden quarantine, never deleted; an
unfinished tag (no marker) is left to prune(); a tag is complete only with every rank's marker,
also when each node keeps its own ranks' files on a local disk; old single-marker tags still load."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from training import checkpoint as ckpt


def _save(ckpt_dir: Path, step: int, size: int = 1000) -> Path:
    """What save() leaves on disk for a world of one: the rank's files, then its marker."""
    tag = ckpt_dir / ckpt.tag_for(step)
    (tag / "global_step").mkdir(parents=True)
    (tag / "mp_rank_00_model_states.pt").write_bytes(b"m" * size)
    (tag / "global_step" / "zero_pp_rank_0_optim_states.pt").write_bytes(b"o" * size)
    ckpt.mark_complete(tag, {"step": step, "tag": tag.name, "world_size": 1})
    return tag


def _listed(ckpt_dir: Path) -> list[str]:
    return sorted(p.name for p in ckpt_dir.iterdir() if not p.name.startswith("."))


def test_truncated_tag_is_skipped_and_quarantined(tmp_path, caplog):
    cdir = tmp_path / "checkpoints"
    _save(cdir, 2)
    bad = _save(cdir, 4)
    victim = bad / "global_step" / "zero_pp_rank_0_optim_states.pt"
    victim.write_bytes(victim.read_bytes()[:10])  # the disk filled up after the marker was written
    with caplog.at_level(logging.WARNING, logger="training.checkpoint"):
        assert ckpt.latest_complete(cdir) == (2, "step_00000002")
    assert _listed(cdir) == ["step_00000002"]
    [moved] = (cdir / ckpt.QUARANTINE).iterdir()
    assert moved.name.startswith("step_00000004-")
    assert victim.relative_to(bad) in [p.relative_to(moved) for p in moved.rglob("*")]  # kept whole
    assert (moved / "global_step" / "zero_pp_rank_0_optim_states.pt").stat().st_size == 10
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert str(moved) in warning and "zero_pp_rank_0_optim_states.pt is 10 bytes, 1000" in warning
    # Quarantined tags are out of every listing: a later save and prune do not see them.
    _save(cdir, 6)
    assert ckpt.prune(cdir, keep=1) == ["step_00000002"]
    assert ckpt.latest_complete(cdir) == (6, "step_00000006") and moved.is_dir()


def test_missing_file_or_unreadable_marker_is_damage(tmp_path):
    cdir = tmp_path / "checkpoints"
    _save(cdir, 1)
    a = _save(cdir, 2)
    (a / "mp_rank_00_model_states.pt").unlink()
    b = _save(cdir, 3)
    (b / ckpt.MARKER).write_text("{not json")
    assert ckpt.damage(a) == "mp_rank_00_model_states.pt is missing"
    assert "cannot be read" in ckpt.damage(b)
    assert ckpt.latest_complete(cdir) == (1, "step_00000001")
    assert sorted(p.name.split("-")[0] for p in (cdir / ckpt.QUARANTINE).iterdir()) == \
        ["step_00000002", "step_00000003"]


def test_unfinished_tag_is_not_quarantined(tmp_path):
    """No marker: a save that died half way (or a live writer's); prune() owns those."""
    cdir = tmp_path / "checkpoints"
    _save(cdir, 1)
    partial = _save(cdir, 2)
    (partial / ckpt.MARKER).unlink()
    assert ckpt.damage(partial) is None and not ckpt.is_complete(partial)
    assert ckpt.latest_complete(cdir) == (1, "step_00000001")
    assert _listed(cdir) == ["step_00000001", "step_00000002"] and not (cdir / ckpt.QUARANTINE).exists()


def test_a_tag_another_rank_already_moved(tmp_path):
    cdir = tmp_path / "checkpoints"
    bad = _save(cdir, 5)
    (bad / "mp_rank_00_model_states.pt").write_bytes(b"")
    assert ckpt.quarantine(bad, "test") is not None
    assert ckpt.quarantine(bad, "test") is None  # the second rank finds it gone: no error


def _save_world(ckpt_dir: Path, step: int, world: int, nodes: int = 1) -> list[Path]:
    """save() on a world of `world` ranks spread over `nodes` node-local disks (one directory per
    node): each rank writes its optimizer file and then its own marker on its node's disk."""
    tags = [ckpt_dir / f"node{n}" / ckpt.tag_for(step) for n in range(nodes)]
    for rank in range(world):
        tag = tags[rank % nodes]
        tag.mkdir(parents=True, exist_ok=True)
        (tag / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").write_bytes(b"o" * 100)
    for rank in range(world):
        ckpt.mark_complete(tags[rank % nodes], {"step": step, "tag": tags[0].name, "world_size": world}, rank)
    return tags


def test_a_tag_missing_one_ranks_marker_is_not_complete(tmp_path):
    [tag] = _save_world(tmp_path, 3, world=4)
    assert sorted(p.name for p in tag.glob("COMPLETE*")) == [
        "COMPLETE.json", "COMPLETE.rank00001.json", "COMPLETE.rank00002.json", "COMPLETE.rank00003.json"]
    assert json.loads((tag / ckpt.MARKER).read_text())["world_size"] == 4
    assert ckpt.is_complete(tag)
    (tag / ckpt.marker_name(2)).unlink()  # rank 2 died after rank 0 had written its marker
    assert not ckpt.is_complete(tag) and ckpt.damage(tag) is None  # unfinished, not damaged
    assert ckpt.latest_complete(tmp_path / "node0") is None
    (tag / ckpt.MARKER).unlink()  # without rank 0's marker the world size is unknown: not complete
    ckpt.mark_complete(tag, {"step": 3, "tag": tag.name, "world_size": 4}, 2)
    assert not ckpt.is_complete(tag)


def test_node_local_disks_are_complete_only_together(tmp_path):
    """Two nodes, two ranks each: neither disk alone holds every marker; the views of all ranks
    (what latest_complete all-gathers) together do. A node that lost its copy leaves it unfinished."""
    node0, node1 = _save_world(tmp_path, 5, world=4, nodes=2)
    assert sorted(p.name for p in node1.glob("COMPLETE*")) == ["COMPLETE.rank00001.json", "COMPLETE.rank00003.json"]
    assert not ckpt.is_complete(node0) and not ckpt.is_complete(node1)
    v0, v1 = ckpt._view(node0), ckpt._view(node1)
    assert v0 == {"ranks": [0, 2], "world": 4, "damage": None} and v1["world"] is None
    assert ckpt._verdict([v0, v1]) == ("complete", None)
    assert ckpt._verdict([v0]) == ("unfinished", None)          # node 1's disk gone
    (node1 / "zero_pp_rank_3_mp_rank_00_optim_states.pt").write_bytes(b"")
    state, why = ckpt._verdict([v0, ckpt._view(node1)])
    assert state == "damaged" and "zero_pp_rank_3_mp_rank_00_optim_states.pt is 0 bytes, 100" in why
    # prune() decides with the agreed set, not the node's own view
    _save_world(tmp_path, 7, world=4, nodes=2)
    assert ckpt.prune(tmp_path / "node1", keep=1, complete={"step_00000007"}) == ["step_00000005"]


def test_a_single_marker_checkpoint_from_before_per_rank_markers_still_loads(tmp_path):
    tag = tmp_path / ckpt.tag_for(2)
    tag.mkdir()
    (tag / "mp_rank_00_model_states.pt").write_bytes(b"m" * 10)
    # What the old rank-0-only mark_complete wrote for a world of 2 on a shared filesystem: no "rank".
    (tag / ckpt.MARKER).write_text(json.dumps({"step": 2, "tag": tag.name, "world_size": 2,
                                               "files": {"mp_rank_00_model_states.pt": 10}}))
    assert ckpt.is_complete(tag) and ckpt.latest_complete(tmp_path) == (2, tag.name)
    (tag / "mp_rank_00_model_states.pt").write_bytes(b"m")
    assert not ckpt.is_complete(tag) and "1 bytes, 10" in ckpt.damage(tag)
