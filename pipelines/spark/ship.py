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
"""
from __future__ import annotations

import copy
import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

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


def _zip_dir(src: Path, stem: str, arcroot: str = "") -> Path:
    """A zip of `src` (no caches), named by its content hash so a changed folder is a new file:
    Spark refuses to re-add a name with other content."""
    files = sorted(p for p in src.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    digest = hashlib.sha256()
    for p in files:
        digest.update(str(p.relative_to(src)).encode() + b"\0" + p.read_bytes())
    out = Path(tempfile.gettempdir()) / f"{stem}-{digest.hexdigest()[:16]}.zip"
    if not out.exists():
        tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for p in files:
                z.write(p, str(Path(arcroot) / p.relative_to(src)))
        tmp.replace(out)
    return out
