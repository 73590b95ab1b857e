"""Staged directory outputs: swapped in whole, removed on error, and what a killed writer leaves
is swept by the next writer while a live writer's work is left alone. They replace only what the
project marked as its own (old outputs are adopted once), refuse anything else unless forced, and
an unwritable output location is one clear error."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.errors import OutputError, OutputExistsError, UserError
from pipelines.document import Document
from pipelines.io import MARKER, ParquetSink, dir_digest, parquet_files, read_documents, scratch, staged

ROOT = Path(__file__).resolve().parents[1]

WRITER = """
import os, signal, sys, time
from pathlib import Path
from pipelines.io import staged
with staged(Path(sys.argv[1]), kind="clean_text") as d:
    (d / "part-00000.parquet").write_text("half")
    print("WRITING", flush=True)
    if sys.argv[2] == "die":
        os.kill(os.getpid(), signal.SIGKILL)  # no finally block, no atexit
    time.sleep(60)
"""


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def _writer(final: Path, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(final), mode], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "WRITING"
    return proc


def test_staged_swaps_in_whole_and_discards_on_error(tmp_path):
    final = tmp_path / "out"
    with staged(final, kind="clean_text") as d:
        (d / "a.txt").write_text("one")
        assert not final.exists()
    assert (final / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError):
        with staged(final, kind="clean_text") as d:
            (d / "a.txt").write_text("two")
            raise RuntimeError("stage failed")
    assert (final / "a.txt").read_text() == "one"  # the previous output is untouched
    assert _hidden(tmp_path) == []


def test_killed_writer_is_swept_live_writer_is_not(tmp_path):
    final = tmp_path / "out"
    dead = _writer(final, "die")
    dead.wait()
    assert dead.returncode == -9
    assert any(".staging." in n for n in _hidden(tmp_path))  # what SIGKILL left behind

    live = _writer(final, "live")
    try:
        time.sleep(0.2)
        with staged(final, kind="clean_text") as d:
            (d / "a.txt").write_text("mine")
        left = _hidden(tmp_path)
        # the dead writer's staging dir and lock are gone; the live one's are still there
        assert len([n for n in left if n.endswith(".lock")]) == 1
        assert len([n for n in left if ".staging." in n and not n.endswith(".lock")]) == 1
        assert (final / "a.txt").read_text() == "mine"
    finally:
        live.kill()
        live.wait()
    with scratch(final) as s:  # the next claim sweeps the now dead one too
        assert s.is_dir()
    assert _hidden(tmp_path) == []


# ------------------------------------------------------------------------------------------------
# Replace only what the project wrote

def _write(d: Path, text: str) -> None:
    pq.write_table(pa.table({"id": ["a"], "text": [text]}), d / "part-00000.parquet")


def _texts(path: Path) -> list[str]:
    return [doc.text for doc in read_documents([path])]


def test_refuses_a_directory_it_did_not_write(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "thesis.tex").write_text("years of work")
    ran = []
    with pytest.raises(OutputExistsError, match="pass --force to replace it") as e:
        with staged(final, kind="clean_text") as d:
            ran.append(d)  # never: refused before any work
    assert str(final) in str(e.value) and not ran
    assert sorted(p.name for p in final.iterdir()) == ["thesis.tex"]
    assert (final / "thesis.tex").read_text() == "years of work"
    assert _hidden(tmp_path) == []


def test_refuses_a_regular_file_and_a_symlink(tmp_path):
    f = tmp_path / "out"
    f.write_text("a file of mine")
    with pytest.raises(OutputExistsError, match=str(f)):
        with staged(f, kind="process"):
            pass
    assert f.read_text() == "a file of mine"
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / MARKER).write_text(json.dumps({"kind": "process"}))  # even one pointing at an output
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(OutputExistsError, match="symbolic link"):
        with staged(link, kind="process"):
            pass
    assert link.is_symlink() and (target / MARKER).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "link", "out"]


def test_force_replaces_a_file_and_a_directory(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with staged(f, kind="process", force=True) as d:
        _write(d, "new")
    assert f.is_dir() and _texts(f) == ["new"]
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with staged(user, kind="process", force=True) as d:
        _write(d, "forced")
    assert sorted(p.name for p in user.iterdir()) == [MARKER, "part-00000.parquet"]
    assert _hidden(tmp_path) == []  # the previous ones are removed, not parked under hidden names
    link = tmp_path / "link"
    link.symlink_to(user)
    with staged(link, kind="process", force=True) as d:
        _write(d, "over the link")
    assert not link.is_symlink() and _texts(link) == ["over the link"]
    assert _texts(user) == ["forced"]  # replacing a symlink never touches what it pointed at


def test_replaces_its_own_output_and_an_empty_dir_without_force(tmp_path):
    final = tmp_path / "out"
    final.mkdir()  # empty: fine
    with staged(final, kind="clean_text") as d:
        _write(d, "one")
    marker = json.loads((final / MARKER).read_text())
    assert marker["kind"] == "clean_text" and marker["writer"].startswith("crawl2chat") and marker["written"]
    with staged(final, kind="clean_text") as d:
        _write(d, "two")
    assert _texts(final) == ["two"]
    # The same directory as another kind of output is a mistake (a path typed wrong), not a re-run.
    with pytest.raises(OutputExistsError, match="'clean_text' output, not 'token_shards'"):
        with staged(final, kind="token_shards"):
            pass
    assert _texts(final) == ["two"]


def test_refused_at_the_swap_when_something_appeared_meanwhile(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(OutputExistsError):
        with staged(final, kind="clean_text") as d:
            _write(d, "mine")
            final.mkdir()
            (final / "report.docx").write_text("saved meanwhile by the user")
    assert sorted(p.name for p in final.iterdir()) == ["report.docx"]
    assert _hidden(tmp_path) == []  # the staging directory went


def _write_old(d: Path, text: str) -> None:
    """A Parquet part as crawl2chat wrote it before markers (every document column)."""
    sink = ParquetSink(d / "part-00000.parquet")
    sink.write(Document(text=text, id=text, metadata={"url": "https://example.com/"}))
    sink.close()


def test_an_unmarked_directory_is_never_replaced_whatever_its_files(tmp_path):
    """Only the marker makes a directory the project's: a directory that merely looks like an old
    output (a user's Parquet parts, a lone config.json) is refused, untouched."""
    old = tmp_path / "lake" / "crawls" / "C" / "clean"
    old.mkdir(parents=True)
    _write_old(old, "written by 0.0")
    before = dir_digest(old)
    with pytest.raises(OutputExistsError, match=f"crawl2chat adopt {old}"):
        with staged(old, kind="clean_text") as d:
            _write(d, "rewritten")
    assert dir_digest(old) == before and not (old / MARKER).exists()
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "config.json").write_text("{}")
    with pytest.raises(OutputExistsError):
        with staged(alone, kind="process"):
            pass
    assert [p.name for p in alone.iterdir()] == ["config.json"]


def test_adopt_marks_an_old_lake_once_and_refuses_what_crawl2chat_never_wrote(tmp_path):
    from pipelines.adopt import adopt
    lake = tmp_path / "lake"
    clean, filtered = lake / "crawls" / "C" / "clean", lake / "crawls" / "C" / "filtered" / "00000-00001"
    shards = lake / "tokens" / "v1"
    for d in (clean, filtered, shards / "train"):
        d.mkdir(parents=True)
    _write_old(clean, "clean")
    _write_old(filtered, "filtered")
    for name in ("manifest.json", "train/shard_00000.bin", "train/shard_00000.idx"):
        (shards / name).write_bytes(b"old")
    assert sorted((p.relative_to(lake).as_posix(), k) for p, k in adopt(lake)) == [
        ("crawls/C/clean", "clean_text"), ("crawls/C/filtered/00000-00001", "filtered_text"),
        ("tokens/v1", "token_shards")]
    with staged(clean, kind="clean_text") as d:  # now the project's: replaced as any marked output
        _write(d, "rewritten")
    assert _texts(clean) == ["rewritten"]
    assert adopt(lake) == []  # once is enough: marked outputs are left as they are
    # a lake holding anything its outputs never held is refused whole, and nothing is marked
    other = tmp_path / "other"
    (other / "crawls" / "C" / "clean").mkdir(parents=True)
    (other / "crawls" / "C" / "deduped").mkdir(parents=True)
    _write_old(other / "crawls" / "C" / "deduped", "d")
    _write_old(other / "crawls" / "C" / "clean", "c")
    (other / "crawls" / "C" / "clean" / "README.md").write_text("my notes")
    with pytest.raises(UserError, match="README.md, which a clean_text output never held"):
        adopt(other)
    assert not list(other.rglob(MARKER))
    # Parquet that is not crawl2chat's documents (a user's dataset), or no recognisable output
    user = tmp_path / "user"
    user.mkdir()
    pq.write_table(pa.table({"question": ["q"], "answer": ["a"]}), user / "part-00000.parquet")
    with pytest.raises(UserError, match="lacks crawl2chat's document columns"):
        adopt(user, "clean_text")
    with pytest.raises(UserError, match="neither a lake"):
        adopt(user)
    assert sorted(p.name for p in user.iterdir()) == ["part-00000.parquet"]


def test_marker_is_invisible_to_readers_and_digests(tmp_path):
    plain, marked = tmp_path / "plain", tmp_path / "marked"
    plain.mkdir()
    _write(plain, "same")
    with staged(marked, kind="clean_text") as d:
        _write(d, "same")
    assert (marked / MARKER).is_file()
    assert [p.name for p in parquet_files(marked)] == ["part-00000.parquet"]
    assert dir_digest(marked) == dir_digest(plain)  # Dagster data versions unchanged
    assert _texts(marked) == ["same"]


# ------------------------------------------------------------------------------------------------
# Unwritable output locations (root ignores permission bits: a read-only mount is the real thing)

def _mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if p.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.decode().strip()}")


@pytest.fixture
def read_only_dir(tmp_path):
    d = tmp_path / "ro"
    if os.geteuid() != 0:  # an ordinary user: permission bits are enough
        d.mkdir()
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    _mount_tmpfs(d, "ro,size=64k")
    yield d
    subprocess.run(["umount", str(d)], check=True)


@pytest.fixture
def full_dir(tmp_path):
    d = tmp_path / "full"
    _mount_tmpfs(d, "size=64k")
    yield d
    subprocess.run(["umount", str(d)], check=True)


def test_read_only_output_location_is_a_user_error(read_only_dir):
    final = read_only_dir / "lake" / "out"
    with pytest.raises(UserError, match=f"cannot write {final}") as e:
        with staged(final, kind="process"):
            pass
    assert isinstance(e.value, OutputError) and str(read_only_dir / "lake") in str(e.value)


def test_full_output_location_is_a_user_error_and_leaves_nothing(full_dir):
    final = full_dir / "out"
    with pytest.raises(OutputError, match=f"cannot write {final}.*No space left.*free space"):
        with staged(final, kind="clean_text") as d:
            (d / "big.bin").write_bytes(b"\0" * (1 << 20))  # 1 MiB into 64 KiB
    assert list(full_dir.iterdir()) == []


def test_a_file_where_a_parent_directory_should_be(tmp_path):
    (tmp_path / "lake").write_text("not a directory")
    with pytest.raises(OutputError, match="not a directory"):
        with staged(tmp_path / "lake" / "crawls" / "out", kind="clean_text"):
            pass


def test_input_errors_inside_the_block_are_not_blamed_on_the_output(tmp_path):
    with pytest.raises(FileNotFoundError):
        with staged(tmp_path / "out", kind="clean_text"):
            open(tmp_path / "missing-input.warc.gz", "rb")


# ------------------------------------------------------------------------------------------------
# The CLI: `crawl2chat process --out DIR` on a DIR the user owns

CLI = Path(sys.executable).parent / "crawl2chat"


@pytest.fixture(scope="module")
def small_warc(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("crawl") / "crawl"
    p = subprocess.run([str(CLI), "sample-crawl", "--out", str(out), "--pages", "20", "--files", "1"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return Path(json.loads(p.stdout)["warc_files"][0])


def _process(warc: Path, out: Path, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), "process", str(warc), "--out", str(out), *extra], cwd=out.parent,
                          capture_output=True, text=True, timeout=300)


def test_cli_refuses_a_user_directory(small_warc, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    p = _process(small_warc, out)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crawl2chat: error: ") and "--force" in lines[0]
    assert str(out) in lines[0] and "Traceback" not in p.stderr
    assert sorted(x.name for x in out.iterdir()) == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"


@pytest.mark.slow  # the whole pipeline on 20 pages: ~10 s
def test_cli_force_replaces_it(small_warc, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    p = _process(small_warc, out, "--force")
    assert p.returncode == 0, p.stderr[-3000:]
    assert not (out / "notes.txt").exists() and (out / "stats.json").is_file()
    assert json.loads((out / MARKER).read_text())["kind"] == "process"
