"""Checkpoint markers on plain files (no DeepSpeed needed): a tag whose files no longer match its
completion marker is skipped on resume and moved to a hidden quarantine, never deleted; an
unfinished tag (no marker) is left to prune()."""
from __future__ import annotations

import logging
from pathlib import Path

from training import checkpoint as ckpt


def _save(ckpt_dir: Path, step: int, size: int = 1000) -> Path:
    """What save() leaves on disk: every rank's files, then rank 0's marker."""
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
