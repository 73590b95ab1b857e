"""Common Crawl client against a local HTTP server that serves a crawl in the bucket layout:
listing, Range resume after a dropped connection, retries, corrupt files rejected, CLI."""
from __future__ import annotations

import gzip
import hashlib
import io
import socket
from pathlib import Path

import pytest

from pipelines.commoncrawl import (DownloadError, RangeRequestHandler, download_warcs, list_warc_paths,
                                   serve_directory, verify_gzip)

CRAWL = "CC-MAIN-2099-01"


def _warcio_crawl(root: Path, files: int = 3, pages: int = 40) -> list[str]:
    """Fallback crawl (used until pipelines.samplecrawl.generate_crawl exists)."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter
    rels = []
    for n in range(files):
        rel = f"crawl-data/{CRAWL}/segments/1700000000000.{n}/warc/CC-MAIN-{n:05d}.warc.gz"
        buf = io.BytesIO()
        w = WARCWriter(buf, gzip=True)
        for i in range(pages):
            body = (f"<html><body><p>file {n} page {i} " + "lorem text " * (50 + i) + "</p></body></html>").encode()
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
            w.write_record(w.create_warc_record(f"http://s{n}-{i}.example/", "response",
                                                payload=io.BytesIO(body), http_headers=http))
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(buf.getvalue())
        rels.append(rel)
    listing = root / "crawl-data" / CRAWL / "warc.paths.gz"
    listing.write_bytes(gzip.compress(("\n".join(rels) + "\n").encode()))
    return rels


@pytest.fixture(scope="module")
def crawl(tmp_path_factory):
    """(root, relative WARC paths) of a crawl laid out like the Common Crawl bucket."""
    root = tmp_path_factory.mktemp("bucket")
    try:
        from pipelines.samplecrawl import generate_crawl
    except ImportError:
        return root, _warcio_crawl(root)
    info = generate_crawl(root, pages=60, seed=1, crawl=CRAWL, files=3)
    rels = [Path(p).resolve().relative_to(root.resolve()).as_posix() for p in info.warc_paths]
    return root, rels


class FaultyHandler(RangeRequestHandler):
    """Serves files, and misbehaves on cue: drops the connection half-way through a file the
    first time it is asked for it, answers 503 a few times, or ignores Range headers."""
    requests: list = []
    drop_once: set = set()
    busy: dict = {}
    ignore_range: bool = False

    def do_GET(self):
        rel = self.path.lstrip("/")
        type(self).requests.append((rel, self.headers.get("Range")))
        if type(self).busy.get(rel, 0) > 0:
            type(self).busy[rel] -= 1
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.ignore_range and "Range" in self.headers:
            del self.headers["Range"]
        if rel in type(self).drop_once:
            type(self).drop_once.discard(rel)
            data = (Path(self.directory) / rel).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # the connection dies mid-body
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(crawl):
    root, rels = crawl
    FaultyHandler.requests = []
    FaultyHandler.drop_once = set()
    FaultyHandler.busy = {}
    FaultyHandler.ignore_range = False
    with serve_directory(root, handler=FaultyHandler) as base_url:
        yield base_url, root, rels


def sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def no_leftovers(dest: Path) -> bool:
    return not [p for p in dest.rglob("*") if p.name.startswith(".")]


def test_list_warc_paths_over_http_and_from_a_folder(server):
    base_url, root, rels = server
    assert list_warc_paths(CRAWL, base_url) == rels
    assert list_warc_paths(CRAWL, str(root)) == rels
    with pytest.raises(DownloadError):
        list_warc_paths("CC-MAIN-NOPE", base_url, retries=0)


def test_download_verifies_and_skips_complete_files(server, tmp_path):
    base_url, root, rels = server
    files = download_warcs(rels, tmp_path, base_url, workers=2, backoff=0.01)
    assert files == [tmp_path / r for r in rels]
    assert all(sha(f) == sha(root / r) for f, r in zip(files, rels))
    assert no_leftovers(tmp_path)
    n = len(FaultyHandler.requests)
    assert download_warcs(rels, tmp_path, base_url) == files  # already complete: no request at all
    assert len(FaultyHandler.requests) == n


def test_dropped_connection_resumes_with_range(server, tmp_path):
    base_url, root, rels = server
    rel = rels[0]
    FaultyHandler.drop_once = {rel}
    [f] = download_warcs([rel], tmp_path, base_url, backoff=0.01)
    assert sha(f) == sha(root / rel)
    asked = [r for p, r in FaultyHandler.requests if p == rel]
    size = (root / rel).stat().st_size
    assert asked[0] is None and len(asked) == 2
    # the second request asked only for the missing half
    assert asked[1] == f"bytes={size // 2}-"
    assert no_leftovers(tmp_path)


def test_resume_from_a_part_file_left_by_a_killed_run(server, tmp_path):
    base_url, root, rels = server
    rel = rels[1]
    data = (root / rel).read_bytes()
    part = tmp_path / rel
    part = part.with_name(f".{part.name}.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:1000])
    [f] = download_warcs([rel], tmp_path, base_url, backoff=0.01)
    assert f.read_bytes() == data and not part.exists()
    assert FaultyHandler.requests == [(rel, "bytes=1000-")]


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    base_url, root, rels = server
    rel = rels[2]
    FaultyHandler.drop_once = {rel}
    FaultyHandler.ignore_range = True
    [f] = download_warcs([rel], tmp_path, base_url, backoff=0.01)
    assert sha(f) == sha(root / rel)


def test_busy_server_is_retried_with_backoff(server, tmp_path):
    base_url, root, rels = server
    FaultyHandler.busy = {rels[0]: 3}
    [f] = download_warcs(rels[:1], tmp_path, base_url, backoff=0.01)
    assert sha(f) == sha(root / rels[0]) and len(FaultyHandler.requests) == 4
    FaultyHandler.busy = {rels[1]: 10}
    with pytest.raises(DownloadError):
        download_warcs(rels[1:2], tmp_path, base_url, retries=2, backoff=0.01)
    assert not (tmp_path / rels[1]).exists() and no_leftovers(tmp_path)


def test_missing_file_is_not_retried(server, tmp_path):
    base_url, _, _ = server
    with pytest.raises(DownloadError, match="404"):
        download_warcs(["crawl-data/x/missing.warc.gz"], tmp_path, base_url, retries=5, backoff=5)
    assert len(FaultyHandler.requests) == 1


@pytest.mark.parametrize("damage", ["flipped", "truncated", "not_gzip"])
def test_corrupt_file_is_rejected_and_never_left_in_place(server, tmp_path, damage):
    base_url, root, rels = server
    data = bytearray((root / rels[0]).read_bytes())
    if damage == "flipped":
        for k in range(len(data) // 2, len(data) // 2 + 64):
            data[k] ^= 0xFF
    elif damage == "truncated":
        data = data[:-100]
    else:
        data = bytearray(b"<html>an error page, not a WARC file</html>")
    rel = f"crawl-data/{CRAWL}/bad/{damage}.warc.gz"
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(bytes(data))
    with pytest.raises(DownloadError, match="gzip"):
        download_warcs([rel, rels[0]], tmp_path, base_url, retries=1, backoff=0.01)
    assert not (tmp_path / rel).exists() and no_leftovers(tmp_path)
    assert sum(p == rel for p, _ in FaultyHandler.requests) == 2  # tried, retried, given up
    assert (tmp_path / rels[0]).exists()  # the good file in the same batch still arrived


def test_download_from_a_local_bucket_copy(crawl, tmp_path):
    root, rels = crawl
    files = download_warcs(list_warc_paths(CRAWL, str(root))[:2], tmp_path / "dl", str(root))
    assert [sha(f) for f in files] == [sha(root / r) for r in rels[:2]]
    assert no_leftovers(tmp_path)


def test_verify_gzip(tmp_path):
    p = tmp_path / "a.gz"
    p.write_bytes(gzip.compress(b"one") + gzip.compress(b"two" * 1000))
    assert verify_gzip(p) == 2
    for bad in [b"", gzip.compress(b"x")[:-3], gzip.compress(b"x") + b"\0\0", b"plain"]:
        p.write_bytes(bad)
        with pytest.raises(ValueError):
            verify_gzip(p)


def test_cli_list_and_download(server, tmp_path, capsys, monkeypatch):
    from pipelines.cli import main
    base_url, root, rels = server
    assert main(["list-crawl", CRAWL, "--base-url", base_url, "--limit", "2"]) == 0
    assert capsys.readouterr().out.split() == rels[:2]
    dest = tmp_path / "dl"
    assert main(["download", CRAWL, "--base-url", base_url, "--dest", str(dest), "--keep-layout",
                 "--skip", "1", "--limit", "1"]) == 0
    assert capsys.readouterr().out.split() == [str(dest / rels[1])]
    assert sha(dest / rels[1]) == sha(root / rels[1]) and not (dest / rels[0]).exists()
    assert main(["download", "--path", rels[2], "--base-url", base_url, "--dest", str(dest), "--keep-layout"]) == 0
    assert (dest / rels[2]).exists()
    # default: the lake's flat crawls/<crawl>/warc/ folder, relative to the working directory
    monkeypatch.chdir(tmp_path)
    assert main(["download", CRAWL, "--base-url", base_url, "--limit", "2"]) == 0
    lake = tmp_path / "lake" / "crawls" / CRAWL / "warc"
    assert sorted(p.name for p in lake.iterdir()) == sorted(Path(r).name for r in rels[:2])


def test_serve_directory_ranges(crawl):
    import requests
    root, rels = crawl
    size = (root / rels[0]).stat().st_size
    with serve_directory(root) as base_url:
        r = requests.get(base_url + rels[0], headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and r.content == (root / rels[0]).read_bytes()[10:20]
        assert r.headers["Content-Range"] == f"bytes 10-19/{size}"
        r = requests.get(base_url + rels[0], headers={"Range": f"bytes={size}-"})
        assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{size}"
        assert requests.get(base_url + "nope").status_code == 404
