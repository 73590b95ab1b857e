"""What a cluster job ships to its executors (pipelines/spark/ship.py) comes only from this user's
private cache, with the bytes the driver built: a zip planted under a predictable name in /tmp, or
planted or damaged in the cache, is never handed to Spark. The real cluster imports it in
tests/test_production_shape.py."""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
import zipfile
from pathlib import Path

import pytest

from pipelines.errors import UserError
from pipelines.spark import ship


def _planted_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("pipelines/__init__.py", "import os; os.environ['PLANTED'] = '1'\n")
    return buf.getvalue()


def _old_name(src: Path, stem: str) -> Path:
    """Where the previous version looked for the zip: /tmp, named by a hash of public source."""
    files = sorted(p for p in src.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    digest = hashlib.sha256()
    for p in files:
        digest.update(str(p.relative_to(src)).encode() + b"\0" + p.read_bytes())
    return Path(tempfile.gettempdir()) / f"{stem}-{digest.hexdigest()[:16]}.zip"


def _names(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as z:
        return set(z.namelist())


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "crawl2chat" / "spark-ship"


def test_a_zip_planted_in_tmp_or_in_the_cache_is_never_shipped(cache):
    planted = _old_name(ship._PACKAGE, "crawl2chat-code")
    planted.write_bytes(_planted_zip())
    try:
        shipped = ship._zip_dir(ship._PACKAGE, "crawl2chat-code", arcroot="pipelines")
    finally:
        planted.unlink()
    assert shipped.parent == cache and os.stat(cache).st_mode & 0o777 == 0o700
    assert "pipelines/spark/ship.py" in _names(shipped)
    ours = shipped.read_bytes()
    assert shipped.name == f"crawl2chat-code-{hashlib.sha256(ours).hexdigest()[:16]}.zip"
    # the same bytes again, whatever the files' times: the name is stable across runs
    assert ship._zip_dir(ship._PACKAGE, "crawl2chat-code", arcroot="pipelines") == shipped
    # planted (or damaged) under its own name in the cache: the hash check replaces it before use
    shipped.write_bytes(_planted_zip())
    assert ship._zip_dir(ship._PACKAGE, "crawl2chat-code", arcroot="pipelines") == shipped
    assert shipped.read_bytes() == ours
    # a symlink there is replaced by a file, never followed
    shipped.unlink()
    elsewhere = cache.parent / "elsewhere.zip"
    elsewhere.write_bytes(ours)
    shipped.symlink_to(elsewhere)
    assert ship._zip_dir(ship._PACKAGE, "crawl2chat-code", arcroot="pipelines") == shipped
    assert not shipped.is_symlink() and shipped.read_bytes() == ours


def test_a_cache_directory_others_can_write_or_own_is_refused(cache):
    cache.mkdir(parents=True)
    cache.chmod(0o777)
    with pytest.raises(UserError, match="mode 777"):
        ship.cache_dir()
    cache.chmod(0o700)
    assert ship.cache_dir() == cache
    if os.geteuid() == 0:
        os.chown(cache, 65534, 65534)
        with pytest.raises(UserError, match="owned by uid 65534"):
            ship.cache_dir()
    cache.rmdir()
    cache.symlink_to(cache.parent)
    with pytest.raises(UserError, match="not a directory"):
        ship.cache_dir()
