"""What executors need from the driver's disk, sent the way a cluster needs it.

In local mode the executors are threads of the driver's JVM and see its files. On a cluster (any
other master, or Spark Connect, whose server may run anywhere) they do not, so:

- the project code goes as a zip of the `pipelines` package through `--py-files`
  (SparkContext.addPyFile; Connect: addArtifacts(pyfile=True)); executors put it first on
  sys.path, so they run the driver's code even if their image holds an older copy;
- the LID model and the URL block lists named by the data config (or the bundled defaults)
  go as Spark files (addFile / addArchive; Connect: addArtifacts(file= / archive=True)), and the
  config an executor receives names them `sparkfiles:<name>`, which `resolve_shipped` turns
  into the executor's local copy (SparkFiles.get).

Third-party packages (trafilatura, fastText, presidio, pyarrow) are not shipped: every node runs
the project's environment (the same image), at the path PYSPARK_PYTHON names. The lake itself
is shared storage (the same path on every node) by design: the executors write the outputs the
driver then swaps into place.

What is shipped is imported by every executor, so nobody else may choose its bytes: the zips are
built in memory, reproducibly (sorted names, fixed timestamps), and kept in a private per-user
cache directory (`cache_dir()`: 0700, owned by this user, else refused), each named by the hash of
its own bytes, created with O_EXCL beside its final name and renamed into place, and hashed again
before every use. A shared /tmp would let any local user (or a sandboxed tool) plant a zip under
the predictable name that the next cluster job imports.
"""
from __future__ import annotations

import copy
import hashlib
import io
import os
import stat
import zipfile
from pathlib import Path

from pipelines.errors import UserError

PREFIX = "sparkfiles:"
_PACKAGE = Path(__file__).resolve().parents[1]  # pipelines/
_SHIPPED: set[tuple[str, str]] = set()          # (session, name) already added


def is_cluster(spark) -> bool:
    """True unless this is a classic session on a local master."""
    if is_connect(spark):
        return True
    return not spark.sparkContext.master.startswith("local")


def ship_code(spark) -> None:
    """Send the driver's `pipelines` package to the executors (a no-op in local mode)."""
    if is_cluster(spark):
        _add(spark, _zip_dir(_PACKAGE, "crawl2chat-code", arcroot="pipelines"), "pyfile")


def config_for_executors(spark, cfg: dict) -> dict:
    """`cfg` with the LID model and the block lists shipped and named `sparkfiles:<name>`; the
    same dict in local mode."""
    if not is_cluster(spark):
        return cfg
    from pipelines.lid import bundled_model_path
    from pipelines.url_filter import DEFAULT_BLOCKLIST_DIR
    cfg = copy.deepcopy(cfg)
    language = cfg.setdefault("language", {})
    model = Path(language.get("model_path") or bundled_model_path()).resolve()
    language["model_path"] = PREFIX + _add(spark, model, "file")
    url_filter = cfg.setdefault("url_filter", {})
    blocklists = Path(url_filter.get("blocklist_dir") or DEFAULT_BLOCKLIST_DIR).resolve()
    url_filter["blocklist_dir"] = PREFIX + _add(spark, _zip_dir(blocklists, "crawl2chat-blocklists"), "archive")
    return cfg


def resolve_shipped(value):
    """On an executor: every `sparkfiles:<name>` string inside `value` becomes the local path."""
    if isinstance(value, dict):
        return {k: resolve_shipped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_shipped(v) for v in value]
    if isinstance(value, str) and value.startswith(PREFIX):
        from pyspark import SparkFiles
        return SparkFiles.get(value[len(PREFIX):])
    return value


def is_connect(spark) -> bool:
    """A Spark Connect session (the client of a server that may run anywhere)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def _add(spark, path: Path, kind: str) -> str:
    """Add `path` to the session once as a py-file, file or archive; returns the name executors
    find it under (SparkFiles.get(name); an archive unpacks into a folder of that name)."""
    session = spark.session_id if is_connect(spark) else spark.sparkContext.applicationId
    if (session, path.name) not in _SHIPPED:
        if is_connect(spark):
            spark.addArtifacts(str(path), pyfile=kind == "pyfile", file=kind == "file", archive=kind == "archive")
        elif kind == "pyfile":
            spark.sparkContext.addPyFile(str(path))
        elif kind == "archive":
            spark.sparkContext.addArchive(str(path))
        else:
            spark.sparkContext.addFile(str(path))
        _SHIPPED.add((session, path.name))
    return path.name


def cache_dir() -> Path:
    """This user's private folder for shipped files ($XDG_CACHE_HOME or ~/.cache, then
    crawl2chat/spark-ship), created 0700; UserError if it is a symlink, not a directory, owned by
    another user or open to others: whoever can write there chooses the code executors import."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = base / "crawl2chat" / "spark-ship"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError as e:
        raise UserError(f"{path}: cannot create the private cache for Spark's shipped code ({e.strerror}); "
                        "set XDG_CACHE_HOME to a folder of yours") from None
    why = ("is not a directory (a symlink?)" if not stat.S_ISDIR(st.st_mode)
           else f"is owned by uid {st.st_uid}, not by you (uid {os.geteuid()})" if st.st_uid != os.geteuid()
           else f"has mode {st.st_mode & 0o777:o}: others may write or read it" if st.st_mode & 0o077
           else None)
    if why:
        raise UserError(f"{path} {why}; refusing to ship code from it. Remove it (or `chmod 700` it if "
                        "it is yours) or set XDG_CACHE_HOME to a private folder")
    return path


def _zip_bytes(src: Path, arcroot: str) -> bytes:
    """A zip of `src` (no caches) that depends only on the files' names and contents."""
    files = sorted(p for p in src.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in files:
            info = zipfile.ZipInfo(str(Path(arcroot) / p.relative_to(src)), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, p.read_bytes())
    return buf.getvalue()


def _holds(path: Path, digest: str) -> bool:
    """`path` is a regular file of ours whose bytes hash to `digest` (not a link to one)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            return False
        return hashlib.file_digest(f, "sha256").hexdigest() == digest


def _zip_dir(src: Path, stem: str, arcroot: str = "") -> Path:
    """A zip of `src` in cache_dir(), named by the hash of its bytes so a changed folder is a new
    file (Spark refuses to re-add a name with other content), and checked against that hash
    before it is handed to Spark."""
    data = _zip_bytes(src, arcroot)
    digest = hashlib.sha256(data).hexdigest()
    out = cache_dir() / f"{stem}-{digest[:16]}.zip"
    if not _holds(out, digest):
        tmp = out.with_name(f".{out.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, out)  # whatever was there (not ours, or damaged) is replaced whole
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if not _holds(out, digest):
            raise UserError(f"{out}: changed while it was written; is another process writing {out.parent}?")
    return out
