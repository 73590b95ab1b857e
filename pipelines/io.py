"""Atomic writes: a killed run never leaves a half output that looks complete, and an output
replaces only what the project itself wrote there.

Everything is written to a hidden temporary name beside the target and renamed into place; readers
ignore names starting with '.' or '_' (as Spark and Hadoop do).

A directory output is built in a staging directory beside it (`staged(final, kind=...)`), swapped
in when complete and removed on error. A process killed with SIGKILL runs no cleanup, so each staging
directory is paired with a lock file its writer holds (flock: the kernel releases it when the
process dies, however it dies); the next writer of the same output removes every staging
directory whose lock is free. A concurrent live writer keeps its lock, and its work.

The swap writes a hidden marker (`.crawl2chat-output.json`: kind, writer version, time) into the
output. A target may be replaced only when it is absent, an empty directory, or carries the marker
of the same kind; anything else (a user's directory, a regular file, a symlink) is refused with
OutputExistsError, before any work and again at the swap, unless `force=True`. Only the marker
makes a directory the project's: no guess from its files (a user's `train.parquet`, a
Hive-partitioned tree or a lone `config.json` looked like old outputs and were replaced). Outputs
written before markers existed are marked once with `crawl2chat adopt DIR` (pipelines/adopt.py). A
read-only, full or otherwise unwritable output location becomes an OutputError naming the path.
"""
from __future__ import annotations

import errno
import fcntl
import glob
import json
import logging
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.document import Document
from pipelines.errors import OutputError, OutputExistsError

log = logging.getLogger(__name__)

MARKER = ".crawl2chat-output.json"

def tmp_sibling(path: Path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def atomic_write_bytes(path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_sibling(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# ------------------------------------------------------------------------------------------------
# What may be replaced

def _marker_kind(path: Path) -> str | None:
    """The kind recorded in a directory's output marker (None: no readable marker)."""
    try:
        kind = None if (path / MARKER).is_symlink() else json.loads((path / MARKER).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


def _refusal(final: Path, kind: str) -> str | None:
    """Why `final` must not be replaced by a `kind` output without force (None: it may be)."""
    if final.is_symlink():
        return "is a symbolic link"
    if not final.exists():
        return None
    if not final.is_dir():
        return "is a file, not a directory crawl2chat wrote"
    if (final / MARKER).exists():
        written = _marker_kind(final)
        if written == kind:
            return None
        if written is None:
            return f"has an unreadable {MARKER}"
        return f"holds a crawl2chat {written!r} output, not {kind!r}"
    if not any(final.iterdir()):
        return None
    return (f"exists and was not written by crawl2chat (it has no {MARKER}; an output of a crawl2chat "
            f"older than markers: run `crawl2chat adopt {final}` once)")


def check_output_target(final, kind: str, force: bool = False) -> None:
    """Raise OutputExistsError unless `final` may be replaced by a `kind` output."""
    final = Path(final)
    why = None if force else _refusal(final, kind)
    if why is not None:
        raise OutputExistsError(f"{final} {why}; crawl2chat replaces only outputs it wrote. Move it "
                                f"away or choose another output path, or pass --force to replace it")


@lru_cache(maxsize=1)
def _writer_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return f"crawl2chat {version('crawl2chat')}"
    except PackageNotFoundError:
        return "crawl2chat (not installed)"


def write_marker(directory: Path, kind: str) -> None:
    """Mark `directory` as crawl2chat's `kind` output (staged() does it at the swap; adopt for old outputs)."""
    atomic_write_text(directory / MARKER, json.dumps({
        "kind": kind, "writer": _writer_version(),
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1) + "\n")


# ------------------------------------------------------------------------------------------------
# Unwritable output locations

_OUTPUT_ERRNOS = {
    errno.EACCES: "choose an output location you can write to, or fix its permissions",
    errno.EPERM: "choose an output location you can write to, or fix its permissions",
    errno.EROFS: "choose an output location on a writable file system",
    errno.ENOSPC: "free space on its file system or choose another output location",
    errno.EDQUOT: "free space (your disk quota is used up) or choose another output location",
    errno.ENOTDIR: "a part of the path is a file, not a directory: choose another output location",
    errno.EBUSY: "it is busy (a mount point?): choose a path inside it",
}


def _concerns_output(name, final: Path) -> bool:
    """Whether a path from an OSError is the output, one of its parents, or one of the hidden
    names beside it that this module creates (staging, lock, previous output)."""
    p = Path(os.path.abspath(os.fsdecode(name)))
    final = Path(os.path.abspath(final))
    if p == final or p in final.parents:
        return True
    ours = f".{final.name}."
    return any(q.parent == final.parent and q.name.startswith(ours) for q in (p, *p.parents))


def _as_output_error(e: OSError, final: Path) -> OutputError | None:
    code, reason = e.errno, e.strerror or str(e)
    names = [n for n in (e.filename, e.filename2) if n is not None]
    if code == errno.EEXIST and names and not Path(os.fsdecode(names[0])).is_dir():
        code, reason = errno.ENOTDIR, os.strerror(errno.ENOTDIR)  # mkdir where a file is
    advice = _OUTPUT_ERRNOS.get(code)
    if advice is None:
        return None
    if names:
        if not any(_concerns_output(n, final) for n in names):
            return None  # e.g. an unreadable input: not the output's problem
        reason = f"{os.fsdecode(names[0])}: {reason}"
    elif code not in (errno.ENOSPC, errno.EDQUOT):
        return None  # a failed write() names no file; inside staged() a full disk is the output's
    return OutputError(f"cannot write {final} ({reason}); {advice}")


@contextmanager
def _output_errors(final: Path) -> Iterator[None]:
    """OSErrors about the output location become one OutputError naming it (the one place)."""
    try:
        yield
    except OSError as e:
        err = _as_output_error(e, Path(final))
        if err is None:
            raise
        raise err from e


# ------------------------------------------------------------------------------------------------
# The swap

def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def replace_dir(staging: Path, final: Path, *, kind: str, force: bool = False) -> None:
    """Mark a fully written staging directory as a `kind` output and swap it into place. The
    previous target is moved aside first and removed only once the new output is in place."""
    staging, final = Path(staging), Path(final)
    with _output_errors(final):
        check_output_target(final, kind, force)  # again: something may have appeared meanwhile
        write_marker(staging, kind)
        final.parent.mkdir(parents=True, exist_ok=True)
        old = final.with_name(f".{final.name}.old.{uuid.uuid4().hex[:8]}")
        moved = os.path.lexists(final)
        if moved:
            os.replace(final, old)
        try:
            os.replace(staging, final)
        except BaseException:
            if moved:
                os.replace(old, final)  # put the previous output back
            raise
    if moved:
        try:
            _remove(old)
        except OSError as e:
            log.warning("%s is in place, but the previous one, moved aside to %s, could not be "
                        "removed (%s): remove it by hand", final, old, e)


_LOCKS: dict[Path, int] = {}  # claimed directory -> fd of its held lock file
_CLAIM_KINDS = ("staging", "scratch")


def _claim(final: Path, kind: str) -> Path:
    """A new hidden directory beside `final`, locked by this process until _release()."""
    with _output_errors(final):
        sweep_stale(final)
        d = final.with_name(f".{final.name}.{kind}.{uuid.uuid4().hex[:8]}")
        d.parent.mkdir(parents=True, exist_ok=True)
        # Lock first, directory second: a directory without a held lock is never a live one.
        fd = os.open(f"{d}.lock", os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _LOCKS[d] = fd
        try:
            d.mkdir()
        except BaseException:
            _release(d)
            raise
    return d


def _release(d: Path) -> None:
    fd = _LOCKS.pop(d, None)
    if fd is not None:
        Path(f"{d}.lock").unlink(missing_ok=True)
        os.close(fd)


def sweep_stale(final: Path) -> list[Path]:
    """Remove what killed writers of `final` left beside it: staging and scratch directories
    whose lock nobody holds, and the previous output a swap was about to delete. Only these
    hidden names, which this module creates, are ever touched."""
    final = Path(final)
    if not final.parent.is_dir():
        return []
    removed = []
    for kind in (*_CLAIM_KINDS, "old"):
        for d in final.parent.glob(f".{glob.escape(final.name)}.{kind}.*"):
            if d.suffix == ".lock" or d in _LOCKS:
                continue
            if kind != "old" and not _lock_is_free(Path(f"{d}.lock")):
                continue
            try:
                _remove(d)
                Path(f"{d}.lock").unlink(missing_ok=True)
            except OSError as e:
                log.warning("could not remove %s, left by an earlier writer of %s (%s)", d, final, e)
                continue
            removed.append(d)
    return removed


def _lock_is_free(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops the probe's lock, if it got one


@contextmanager
def scratch(final, kind: str = "scratch") -> Iterator[Path]:
    """A temporary directory beside `final` (same filesystem, visible to a cluster's executors
    when `final` is), removed when the block ends."""
    d = _claim(Path(final), kind)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)  # already gone when staged() swapped it in
        _release(d)


@contextmanager
def staged(final, *, kind: str, force: bool = False) -> Iterator[Path]:
    """Build the directory `final`, a `kind` output, in a staging directory: swapped into place
    when the block ends normally, removed when it raises.

    Refused up front (OutputExistsError), before any work, when `final` holds something crawl2chat
    did not write (see check_output_target), unless `force`. OSErrors that say the output location
    is unwritable or full, raised here or in the block, become an OutputError naming it."""
    final = Path(final)
    if final.name in ("", ".", ".."):
        final = Path(os.path.abspath(final))
    if not final.name:
        raise OutputError(f"cannot write {final}: the output must be a directory below the root")
    with _output_errors(final):
        check_output_target(final, kind, force)  # before any work
        with scratch(final, "staging") as d:
            yield d
            replace_dir(d, final, kind=kind, force=force)


class ParquetSink:
    """Streams documents into one Parquet file, written under a temporary name until close()."""

    def __init__(self, path, batch_size: int = 1000, extra: dict | None = None):
        self.path = Path(path)
        self.batch_size = batch_size
        self.extra = extra or {}
        self._rows: list[dict] = []
        self._writer: pq.ParquetWriter | None = None
        self._tmp = tmp_sibling(self.path)
        self._schema = None
        self.count = 0

    def write(self, doc: Document, **extra) -> None:
        row = doc.to_row()
        row.update(self.extra)
        row.update(extra)
        self._rows.append(row)
        self.count += 1
        if len(self._rows) >= self.batch_size:
            self._flush()

    def write_table(self, table: pa.Table) -> None:
        """Rows that are already Arrow (plus the sink's `extra` columns), after any buffered docs."""
        if not table.num_rows:
            return
        self._flush()
        for name, value in self.extra.items():
            table = table.append_column(name, pa.array([value] * table.num_rows))
        self._write(table)
        self.count += table.num_rows

    def _flush(self) -> None:
        if not self._rows:
            return
        self._write(pa.Table.from_pylist(self._rows))
        self._rows = []

    def _write(self, table: pa.Table) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._schema = _schema_for(table)
            self._writer = pq.ParquetWriter(self._tmp, self._schema, compression="zstd")
        self._writer.write_table(_conform(table, self._schema))

    def close(self) -> Path | None:
        """Finish the file and rename it into place; no rows written means no file."""
        self._flush()
        if self._writer is None:
            return None
        self._writer.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        Path(self._tmp).unlink(missing_ok=True)


# Known column types, so a first batch whose column is all None still gets the right type.
KNOWN_TYPES = {"text": pa.string(), "id": pa.string(), "dump": pa.string(), "url": pa.string(),
               "date": pa.string(), "file_path": pa.string(), "language": pa.string(),
               "language_score": pa.float64(), "minhash_cluster_id": pa.string(),
               "minhash_cluster_size": pa.int64(), "token_count": pa.int64(),
               "stage": pa.string(), "reason": pa.string()}


def _schema_for(table: pa.Table) -> pa.Schema:
    fields = []
    for f in table.schema:
        t = KNOWN_TYPES.get(f.name, pa.string() if pa.types.is_null(f.type) else f.type)
        fields.append(pa.field(f.name, t))
    return pa.schema(fields)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    cols = []
    for f in schema:
        if f.name in table.column_names and not pa.types.is_null(table.schema.field(f.name).type):
            cols.append(table.column(f.name).cast(f.type))
        else:
            cols.append(pa.nulls(len(table), f.type))
    return pa.Table.from_arrays(cols, schema=schema)


class RemovedWriter:
    """The removed-documents sink: one Parquet file per stage under `root/<stage>/<part>.parquet`."""

    def __init__(self, root, part: str = "part-00000"):
        self.root = Path(root)
        self.part = part
        self._sinks: dict[str, ParquetSink] = {}

    def __call__(self, doc: Document, stage: str, reason: str) -> None:
        sink = self._sinks.get(stage)
        if sink is None:
            sink = self._sinks[stage] = ParquetSink(self.root / stage / f"{self.part}.parquet")
        sink.write(doc, stage=stage, reason=reason)

    def close(self) -> list[Path]:
        return [p for s in self._sinks.values() if (p := s.close()) is not None]


def parquet_files(*paths) -> list[Path]:
    """The data files of Parquet datasets, in the order given: a file itself, or the visible
    *.parquet files under a directory in name order (hidden temporaries and Spark's
    _SUCCESS/_temporary skipped); a path that does not exist has none."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += sorted(p for p in path.rglob("*.parquet") if not _hidden(p.relative_to(path)))
    return files


def read_documents(paths: Iterable) -> Iterable[Document]:
    """Documents from Parquet files or directories of them (hidden/temporary names skipped)."""
    for f in parquet_files(*paths):
        for batch in pq.ParquetFile(f).iter_batches(batch_size=1000):
            for row in batch.to_pylist():
                yield Document.from_row(row)


def _hidden(rel: Path) -> bool:
    return any(part.startswith((".", "_")) for part in rel.parts)


def dir_digest(path) -> str:
    """A content digest of a dataset folder (or file): sha256 over each visible file's relative name
    and bytes, in name order. Used as the Dagster data version and the MLflow dataset digest."""
    import hashlib
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path)))
    for f in files:
        h.update(str(f.relative_to(path) if f != path else f.name).encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def count_rows(path) -> int:
    path = Path(path)
    if not path.exists():
        return 0
    return sum(pq.ParquetFile(f).metadata.num_rows for f in parquet_files(path))


def sample_rows(path, n: int = 3, columns=None) -> list[dict]:
    """The first n rows of a Parquet dataset (folder or file), for reports."""
    out: list[dict] = []
    for doc in read_documents([path]) if Path(path).exists() else ():
        out.append(doc.to_row() if columns is None else {c: doc.to_row().get(c) for c in columns})
        if len(out) >= n:
            break
    return out
