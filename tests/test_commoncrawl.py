"""Common Crawl client against a local HTTP server that serves a crawl in the bucket layout:
listing, Range resume after a dropped connection, retries, corrupt files rejected, CLI; and a
hostile listing (traversal, other hosts, colliding names, symlinks) fetching and writing nothing."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import socket
from pathlib import Path

import pytest

from pipelines.commoncrawl import (DownloadError, RangeRequestHandler, check_listing_entry, download_warcs,
                                   list_warc_paths, safe_join, same_origin_url, serve_directory,
                                   split_listing, verify_gzip)
from pipelines.errors import UnsafePathError

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


# ---- a hostile listing ----------------------------------------------------------------------------

class CountingHandler(RangeRequestHandler):
    """Records every request path (a fresh subclass per server, see counting_server)."""
    requests: list

    def do_GET(self):
        type(self).requests.append(self.path)
        super().do_GET()


def counting_server(root):
    handler = type("Counting", (CountingHandler,), {"requests": []})
    return serve_directory(root, handler=handler), handler.requests


def tree(root: Path) -> list[str]:
    """Every path under root (symlinks listed, not followed), to compare before and after."""
    out = []
    for d, dirs, files in os.walk(root):
        out += [os.path.relpath(os.path.join(d, n), root) for n in dirs + files]
    return sorted(out)


def traversal_entries(evil_url: str) -> dict[str, str]:
    """Each form the issue names -> a word its rejection reason must contain."""
    evil_host = evil_url.split("//", 1)[1]  # 127.0.0.1:port/
    return {
        "../../etc/x.warc.gz": "'..'",
        "crawl-data/../../../x.warc.gz": "'..'",
        "/etc/x.warc.gz": "absolute",
        f"{evil_url}x.warc.gz": "scheme",
        f"//{evil_host}x.warc.gz": "//host",
        f"crawl-data/{CRAWL}/%2e%2e/%2e%2e/x.warc.gz": "percent",
        f"crawl-data/{CRAWL}/..%2f..%2fx.warc.gz": "percent",
        f"crawl-data/{CRAWL}/..\\..\\x.warc.gz": "backslash",
        f"crawl-data/{CRAWL}/x.warc.gz\0/../../../x.warc.gz": "control",
    }


@pytest.fixture
def evil(tmp_path):
    """A second loopback host: anything listed on it must never be asked for."""
    root = tmp_path / "evil-host"
    root.mkdir()
    (root / "x.warc.gz").write_bytes(gzip.compress(b"not from the crawl"))
    server, requests = counting_server(root)
    with server as url:
        yield url, requests


@pytest.fixture
def poisoned(crawl, evil, tmp_path):
    """A bucket whose listing has two good entries and every traversal form, with files at the
    places a naive client would resolve them to, served on its own counting server."""
    src, rels = crawl
    evil_url, evil_requests = evil
    root = tmp_path / "bucket"
    good = rels[:2]
    for rel in good:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, root / rel)
    for target in ["etc/x.warc.gz", "x.warc.gz", f"crawl-data/{CRAWL}/x.warc.gz"]:
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rels[0], root / target)
    bad = traversal_entries(evil_url)
    listing = [good[0], *bad, good[1]]
    (root / "crawl-data" / CRAWL / "warc.paths.gz").write_bytes(gzip.compress("\n".join(listing).encode()))
    server, requests = counting_server(root)
    with server as url:
        yield {"url": url, "requests": requests, "evil_requests": evil_requests, "good": good,
               "bad": bad, "listing": listing}


@pytest.mark.parametrize("entry,why", [
    ("", "empty"), (f"crawl-data/{CRAWL}/./x.warc.gz", "normalized"),
    (f"crawl-data/{CRAWL}//x.warc.gz", "normalized"), (f"crawl-data/{CRAWL}/x/", "normalized"),
    ("crawl-data/OTHER/x.warc.gz", f"outside crawl-data/{CRAWL}/"), (f"crawl-data/{CRAWL}/x.txt", "not a WARC"),
    (f"crawl-data/{CRAWL}/.x.warc.gz", "hidden"), (f"crawl-data/{CRAWL}/x.warc.gz?y", "characters"),
    (f"crawl-data/{CRAWL}/\u2024\u2024/x.warc.gz", "characters"), (f"crawl-data/{CRAWL}/a\nb.warc.gz", "control"),
    ("file:///etc/x.warc.gz", "scheme"), ("C:/x.warc.gz", "scheme"),
])
def test_check_listing_entry_rejects_with_a_reason(entry, why):
    with pytest.raises(UnsafePathError, match="listing entry") as e:
        check_listing_entry(entry, CRAWL)
    assert why in str(e.value)
    ok = f"crawl-data/{CRAWL}/segments/1.2/warc/{CRAWL}-0_1.warc.gz"
    assert check_listing_entry(ok, CRAWL) == ok and check_listing_entry(ok[:-3]) == ok[:-3]


def test_every_traversal_form_is_rejected_entry_by_entry(evil):
    bad = traversal_entries(evil[0])
    good = [f"crawl-data/{CRAWL}/segments/1/warc/a.warc.gz", f"crawl-data/{CRAWL}/segments/2/warc/b.warc"]
    accepted, rejected = split_listing([good[0], *bad, good[1]], CRAWL)
    assert accepted == good
    assert [e for e, _ in rejected] == list(bad)
    for entry, reason in rejected:
        assert bad[entry] in reason, (entry, reason)
    with pytest.raises(UnsafePathError, match="crawl name"):
        split_listing(good, "../../etc")


def test_hostile_listing_fetches_and_writes_nothing(poisoned, tmp_path):
    dest = tmp_path / "out" / "a" / "dest"
    before = tree(tmp_path)
    with pytest.raises(UnsafePathError) as e:
        download_warcs(poisoned["listing"], dest, poisoned["url"], crawl=CRAWL, backoff=0.01, retries=0)
    for entry in poisoned["bad"]:
        assert repr(entry) in str(e.value)
    assert tree(tmp_path) == before
    assert poisoned["requests"] == [] and poisoned["evil_requests"] == []
    with pytest.raises(UnsafePathError, match=f"{len(poisoned['bad'])} of {len(poisoned['listing'])}"):
        list_warc_paths(CRAWL, poisoned["url"])


def test_cli_list_crawl_reports_rejected_entries(poisoned, capsys):
    from pipelines.cli import main
    assert main(["list-crawl", CRAWL, "--base-url", poisoned["url"]]) == 0
    out, err = capsys.readouterr()
    assert out.split() == poisoned["good"]  # stdout: nothing but accepted entries
    assert f"{len(poisoned['bad'])} of {len(poisoned['listing'])} listing entries rejected" in err
    for entry, why in poisoned["bad"].items():
        line = next(x for x in err.splitlines() if repr(entry) in x)
        assert line.startswith("crawl2chat: warning: rejected") and why in line
    assert poisoned["evil_requests"] == []


def test_cli_download_refuses_a_hostile_listing_unless_told(poisoned, tmp_path, capsys):
    from pipelines.cli import main
    dest = tmp_path / "out" / "a" / "dest"
    before = tree(tmp_path)
    argv = ["download", CRAWL, "--base-url", poisoned["url"], "--dest", str(dest), "--retries", "0"]
    assert main(argv + ["--keep-layout"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crawl2chat: error:") and err.count("\n") == 1 and "rejected" in err
    assert main(argv + ["--keep-layout", "--limit", "1"]) == 2  # a clean slice of a poisoned listing too
    capsys.readouterr()
    assert tree(tmp_path) == before and poisoned["evil_requests"] == []
    assert len(poisoned["requests"]) == 2  # only the listing, once per try
    # --skip-bad-entries: the good entries arrive (flat), nothing else anywhere
    assert main(argv + ["--skip-bad-entries"]) == 0
    out, err = capsys.readouterr()
    assert out.split() == [str(dest / Path(r).name) for r in poisoned["good"]]
    assert "skipping them" in err
    assert sorted(set(tree(tmp_path)) - set(before)) == sorted(
        os.path.relpath(p, tmp_path) for p in [tmp_path / "out", tmp_path / "out" / "a", dest,
                                               *(dest / Path(r).name for r in poisoned["good"])])
    assert poisoned["evil_requests"] == []


def test_flat_download_never_collapses_two_entries_into_one_file(crawl, tmp_path):
    src, rels = crawl
    root = tmp_path / "bucket"
    same_name = [f"crawl-data/{CRAWL}/segments/{seg}/warc/{CRAWL}-00000.warc.gz" for seg in ("1", "2")]
    for rel, content in zip(same_name, rels):
        (root / rel).parent.mkdir(parents=True)
        shutil.copyfile(src / content, root / rel)
    server, requests = counting_server(root)
    with server as url:
        with pytest.raises(UnsafePathError) as e:
            download_warcs(same_name, tmp_path / "flat", url, flat=True)
        assert all(repr(r) in str(e.value) for r in same_name) and "--keep-layout" in str(e.value)
        assert not (tmp_path / "flat").exists() and requests == []
        files = download_warcs(same_name, tmp_path / "tree", url)  # the bucket layout keeps both
        assert [sha(f) for f in files] == [sha(root / r) for r in same_name] and files[0] != files[1]
        # the same entry listed twice is one file, fetched once (not two workers on one .part)
        requests.clear()
        twice = download_warcs([same_name[0]] * 2, tmp_path / "twice", url, flat=True, workers=2)
        assert twice[0] == twice[1] and sha(twice[0]) == sha(root / same_name[0]) and len(requests) == 1


def test_a_symlink_in_dest_that_points_outside_is_refused(server, tmp_path):
    base_url, root, rels = server
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / "crawl-data").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="outside"):
        download_warcs(rels[:1], dest, base_url)
    # a planted .part symlink must not be written through either
    victim = outside / "victim"
    victim.write_bytes(b"keep me")
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / f".{Path(rels[0]).name}.part").symlink_to(victim)
    with pytest.raises(UnsafePathError, match="symlink"):
        download_warcs(rels[:1], flat, base_url, flat=True)
    assert tree(outside) == ["victim"] and victim.read_bytes() == b"keep me"
    assert FaultyHandler.requests == []


def test_safe_join(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "in").mkdir(parents=True)
    outside.mkdir()
    (root / "inner").symlink_to(root / "in")
    (root / "out").symlink_to(outside)
    (root / "dangling").symlink_to(outside / "nothing-yet")
    assert safe_join(root, "a/b.warc.gz") == root / "a" / "b.warc.gz"
    assert safe_join(root, "inner/x") == root / "inner" / "x"
    link = tmp_path / "link"
    link.symlink_to(root)  # the root itself may be a symlink (a lake on another disk)
    assert safe_join(link, "a") == link / "a"
    for rel in ["out/x", "../x", "/etc/x", "dangling", "a/../../x"]:
        with pytest.raises(UnsafePathError, match="outside"):
            safe_join(root, rel)


def test_fetched_url_stays_on_the_base_host():
    base = "http://127.0.0.1:8000/cc/"
    assert same_origin_url(base, "crawl-data/C/x.warc.gz") == base + "crawl-data/C/x.warc.gz"
    # rel is validated first; this is the second wall, for any join that would move the URL
    for base, rel in [("http://127.0.0.1:8000", "@evil.example/x"), ("http://a.example/cc/", "../x")]:
        with pytest.raises(UnsafePathError, match="not under"):
            same_origin_url(base, rel)


# ---- only --base-url's host, and bounded listings ---------------------------------------------------

def redirecting_server(root, moves: dict):
    """Serves `root`, answering 302 for each path in `moves` with its target URL (which may be
    on another host), and recording every request."""
    class Redirecting(RangeRequestHandler):
        requests: list = []

        def do_GET(self):
            type(self).requests.append(self.path)
            target = moves.get(self.path.lstrip("/"))
            if target is None:
                return super().do_GET()
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return serve_directory(root, handler=Redirecting), Redirecting.requests


def test_a_redirect_to_another_host_is_refused_and_never_followed(crawl, evil, tmp_path):
    root, rels = crawl
    evil_url, evil_requests = evil
    listing = f"crawl-data/{CRAWL}/warc.paths.gz"
    # the same host: followed (a CDN moving a file within the bucket)
    moved = tmp_path / "moved"
    shutil.copytree(root, moved / "old")
    server, _ = redirecting_server(moved, {f"old/{listing}": f"/old/{listing}.moved"})
    (moved / "old" / f"{listing}.moved").write_bytes((root / listing).read_bytes())
    with server as base_url:
        assert list_warc_paths(CRAWL, base_url + "old/") == rels
    # another host (a different port of the same address is another origin, too), for the listing
    # and for a WARC file: refused before any request goes there
    evil_host = evil_url.replace("127.0.0.1", "localhost")
    server, requests = redirecting_server(root, {listing: f"{evil_host}x.warc.gz", rels[0]: f"{evil_url}x.warc.gz"})
    with server as base_url:
        with pytest.raises(DownloadError, match="redirected to another host"):
            list_warc_paths(CRAWL, base_url, retries=0)
        with pytest.raises(DownloadError, match="redirected to another host"):
            download_warcs([rels[0]], tmp_path / "dl", base_url, retries=0, crawl=CRAWL)
    assert evil_requests == [] and requests == [f"/{listing}", f"/{rels[0]}"]
    assert [p for p in (tmp_path / "dl").rglob("*") if not p.is_dir()] == []  # no file, not even a .part


# Peak RSS from VmHWM after resetting it (clear_refs 5): ru_maxrss of a child forked from a large
# pytest process starts at the parent's size (902 MB in the full suite, ~110 MB alone)
BOMB_CLIENT = """
import re, sys
open("/proc/self/clear_refs", "w").write("5")
from pipelines.commoncrawl import fetch_listing
from pipelines.errors import InputError
try:
    print("ENTRIES", len(fetch_listing(sys.argv[1], sys.argv[2], retries=0)))
except InputError as e:
    print("REFUSED", e)
hwm = int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
print("MAXRSS_MB", hwm // 1024)
"""


def test_a_gzip_bomb_listing_is_refused_with_bounded_memory(tmp_path):
    """A listing of ~1.4 MB that decompresses to ~400 MB of plausible entries (four identical
    gzip members; the issue's was 1.8 MB): the client stops at the listing bounds instead of
    decompressing it whole."""
    import subprocess
    import sys
    root = tmp_path / "bucket"
    listing = root / "crawl-data" / CRAWL / "warc.paths.gz"
    listing.parent.mkdir(parents=True)
    line = f"crawl-data/{CRAWL}/segments/1700000000000.0/warc/CC-MAIN-20990101000000-00000.warc.gz\n".encode()
    member = gzip.compress(line * (100_000_000 // len(line)), compresslevel=9)
    listing.write_bytes(member * 4)
    assert listing.stat().st_size < 2_000_000
    with serve_directory(root) as base_url:
        out = subprocess.run([sys.executable, "-c", BOMB_CLIENT, CRAWL, base_url], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[1], timeout=600)
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert "REFUSED" in lines, out.stdout + out.stderr[-2000:]
    assert "far more than any crawl listing" in lines["REFUSED"]
    assert int(lines["MAXRSS_MB"]) < 400, lines  # the whole listing would take over 1.5 GB
