"""Common Crawl client: list a crawl's WARC files and download them, resumably and verified.

A download never leaves something at the final name that is not a complete, verified file:
bytes go to a hidden `.<name>.part` beside the target, an interrupted transfer resumes from the
part's size with an HTTP Range request, the size is checked against Content-Length (or the
Content-Range total), every gzip member must decompress with a good CRC, and only then is the
part renamed into place. Files already at their final name are skipped: by construction they are
complete. Transient failures (connection drops, timeouts, 429/5xx, a corrupt body) are retried
with exponential backoff; a 404 is not.

Requests go only to --base-url's host: a redirect is followed only to the same host (and port, or
from http to https on it); one to another host is refused (DownloadError), so a listing or file
cannot be fetched from, nor reveal the crawl being fetched to, anywhere else. A listing is read
as a bounded stream (pipelines/listing.py: read_listing).
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import re
import shutil
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import unquote, urljoin, urlsplit

import requests
import urllib3

from pipelines.errors import InputError, UnsafePathError
# check_listing_entry and safe_join are re-exported: callers find the whole client here
from pipelines.listing import (check_crawl_name, check_listing_entry, checked_listing,  # noqa: F401
                               describe_rejected, gunzip_stream, read_listing, safe_join, same_origin_url,
                               split_listing)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://data.commoncrawl.org/"
CHUNK = 8 << 20  # big reads: fewer syscalls and Python iterations per GB
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}  # data.commoncrawl.org answers 503 "Slow Down"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class DownloadError(InputError, RuntimeError):
    """A file or listing could not be fetched (HTTP error, retries exhausted, not gzip): the CLI
    prints it as one line; rerunning resumes where the download stopped."""


class _Retryable(Exception):
    pass


# What a retry can cure. urllib3 errors appear bare because the body is read from r.raw.
_TRANSIENT = (_Retryable, requests.RequestException, urllib3.exceptions.HTTPError,
              ConnectionError, TimeoutError)


def _base(base_url: str) -> str:
    return base_url if base_url.endswith("/") else base_url + "/"


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme)


class SameHostSession(requests.Session):
    """A requests session that follows a redirect only on the host it was sent to: the same
    scheme, host and port, or the same host from http to https on its default port. Any other
    target raises DownloadError before a request is sent there."""

    def get_redirect_target(self, resp):
        target = super().get_redirect_target(resp)
        if target is not None:
            here, there = _origin(resp.url), _origin(urljoin(resp.url, target))
            upgrade = here[:2] == ("http", there[1]) and there == ("https", here[1], 443)
            if there != here and not upgrade:
                raise DownloadError(f"{resp.url}: redirected to another host ({urljoin(resp.url, target)}); "
                                    "crawl2chat fetches only from --base-url's host")
        return target


def _session(session: requests.Session | None) -> requests.Session:
    if session is not None:
        return session
    s = SameHostSession()
    s.headers["User-Agent"] = "crawl2chat/0.1 (+https://github.com/; Common Crawl client)"
    return s


def _file_chunks(path: Path, size: int = 1 << 16) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while block := f.read(size):
            yield block


def _sleep_backoff(attempt: int, backoff: float, max_backoff: float) -> None:
    # full jitter: many workers hitting a throttled server do not retry in lockstep
    time.sleep(random.uniform(0.5, 1.0) * min(max_backoff, backoff * (2 ** attempt)))


def fetch_listing(crawl: str, base_url: str = DEFAULT_BASE_URL, *, retries: int = 5,
                  backoff: float = 1.0, timeout: float = 60.0,
                  session: requests.Session | None = None) -> list[str]:
    """The raw entries of `crawl`'s `warc.paths.gz`, unvalidated (split_listing judges them).

    `base_url` may also be a local folder (or file:// URL) laid out like the bucket."""
    check_crawl_name(crawl)
    rel = f"crawl-data/{crawl}/warc.paths.gz"
    if base_url.startswith("file://") or not re.match(r"^https?://", base_url):
        local = Path(base_url.removeprefix("file://")) / rel
        try:
            return read_listing(_file_chunks(local), str(local))
        except OSError as e:
            raise DownloadError(f"{local}: cannot read the crawl listing ({e.strerror}); is {crawl!r} "
                                f"the crawl name and {base_url} the crawl's folder?") from None
    s, url = _session(session), same_origin_url(_base(base_url), rel)
    for attempt in range(retries + 1):
        try:
            with s.get(url, timeout=timeout, stream=True) as r:
                if r.status_code in RETRY_STATUS:
                    raise _Retryable(f"HTTP {r.status_code}")
                if r.status_code >= 400:
                    raise DownloadError(f"{url}: HTTP {r.status_code} (is {crawl!r} a crawl name?)")
                # raw bytes, read as they arrive: never the whole body, nor a Content-Encoding
                # layer, decompressed at once
                chunks = r.raw.stream(1 << 16, decode_content=False)
                if r.headers.get("Content-Encoding", "").lower() in ("gzip", "x-gzip"):
                    chunks = gunzip_stream(chunks, url)
                return read_listing(chunks, url)
        except _TRANSIENT as e:
            if attempt == retries:
                raise DownloadError(f"listing {url} failed after {retries + 1} tries: {e}") from e
            log.warning("listing %s: %s; retrying", url, e)
            _sleep_backoff(attempt, backoff, 60.0)
    raise AssertionError("unreachable")


def list_warc_paths(crawl: str, base_url: str = DEFAULT_BASE_URL, **kwargs) -> list[str]:
    """Paths (relative to base_url) of every WARC file of `crawl`, from its `warc.paths.gz`;
    UnsafePathError if any entry is unsafe (see check_listing_entry). kwargs: fetch_listing's."""
    return checked_listing(fetch_listing(crawl, base_url, **kwargs), crawl)


def verify_gzip(path: Path, chunk: int = 1 << 16) -> int:
    """Raise ValueError unless `path` is one or more complete gzip members (CRC and size checked
    by zlib), with nothing after the last one; returns the member count. WARC files hold one
    member per record, so members chain."""
    d = zlib.decompressobj(wbits=31)
    # 64 KB reads: after each member zlib copies the rest of the chunk into unused_data, so big
    # chunks over small members (WARC records are ~10-50 KB gzipped) cost quadratic copying
    members, fed = 0, False  # fed: the current member has started
    with open(path, "rb", buffering=1 << 20) as f:
        while data := f.read(chunk):
            while data:
                fed = True
                try:
                    d.decompress(data, 64 << 20)  # output discarded, capped: only the checks matter
                    while d.unconsumed_tail and not d.eof:
                        d.decompress(d.unconsumed_tail, 64 << 20)
                except zlib.error as e:
                    raise ValueError(f"{path.name}: corrupt gzip data in member {members + 1}: {e}") from e
                if d.eof:
                    members += 1
                    data, fed = d.unused_data, False
                    d = zlib.decompressobj(wbits=31)
                else:
                    data = b""
    if fed:
        raise ValueError(f"{path.name}: truncated gzip member {members + 1}")
    if members == 0:
        raise ValueError(f"{path.name}: empty file, not gzip data")
    return members


def download_file(url: str, dest: Path, *, retries: int = 5, backoff: float = 1.0,
                  max_backoff: float = 60.0, timeout: tuple[float, float] = (10.0, 120.0),
                  chunk_size: int = CHUNK, verify: bool = True,
                  session: requests.Session | None = None) -> Path:
    """Download `url` to `dest` (resumable, size- and gzip-checked, atomically renamed)."""
    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part")
    if part.is_symlink():  # opening it would write wherever it points
        raise UnsafePathError(f"{part}: is a symlink; remove it (only this downloader writes .part files)")
    s = _session(session)
    failures = 0  # tries that made no progress; a try that added bytes resets the backoff
    while True:
        offset = part.stat().st_size if part.exists() else 0
        try:
            total = _fetch_into(s, url, part, offset, timeout, chunk_size)
            have = part.stat().st_size
            if have != total:
                raise _Retryable(f"got {have} of {total} bytes")
            if verify and dest.name.endswith(".gz"):
                try:
                    verify_gzip(part)
                except ValueError as e:
                    part.unlink(missing_ok=True)  # bad bytes: resuming would only keep them
                    raise _Retryable(f"gzip check failed: {e}") from e
            os.replace(part, dest)
            log.info("downloaded %s (%d bytes)", dest, total)
            return dest
        except _TRANSIENT as e:  # a local disk error (plain OSError) is not retried: it would recur
            progressed = part.exists() and part.stat().st_size > offset
            failures = 0 if progressed else failures + 1
            if failures > retries:
                part.unlink(missing_ok=True)
                raise DownloadError(f"{url}: giving up after {retries + 1} failed tries: {e}") from e
            log.warning("%s: %s; %s", url, e, "resuming" if part.exists() else "retrying")
            _sleep_backoff(failures, backoff, max_backoff)


def _fetch_into(s: requests.Session, url: str, part: Path, offset: int, timeout, chunk_size: int) -> int:
    """One GET into `part` from `offset`; returns the full size the server announced."""
    if not re.match(r"^https?://", url):  # a local bucket copy (folder or file:// URL)
        src = Path(unquote(urlsplit(url).path)) if url.startswith("file://") else Path(url)
        if not src.is_file():
            raise DownloadError(f"{src}: no such file")
        shutil.copyfile(src, part)
        return src.stat().st_size
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with s.get(url, headers=headers, stream=True, timeout=timeout) as r:
        if r.status_code == 416 and offset:
            # our part is at (or past) the end: the total tells which
            m = re.match(r"bytes\s+\*/(\d+)", r.headers.get("Content-Range", ""))
            if m and int(m.group(1)) == offset:
                return offset
            part.unlink(missing_ok=True)
            raise _Retryable("range not satisfiable; restarting from scratch")
        if r.status_code in RETRY_STATUS:
            raise _Retryable(f"HTTP {r.status_code}")
        if r.status_code >= 400:
            raise DownloadError(f"{url}: HTTP {r.status_code}")
        if r.status_code == 206:
            m = _CONTENT_RANGE.match(r.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != offset:
                part.unlink(missing_ok=True)
                raise _Retryable(f"unexpected Content-Range {r.headers.get('Content-Range')!r}")
            total = int(m.group(3)) if m.group(3) != "*" else None
            mode = "ab"
        else:  # 200: the whole file, whether or not we asked for a range
            offset, mode = 0, "wb"
            total = None
        if total is None:
            length = r.headers.get("Content-Length")
            if length is None:
                raise _Retryable("no Content-Length: cannot check the size")
            total = offset + int(length)
        with open(part, mode) as f:
            # raw, undecoded bytes: a server that adds Content-Encoding must not get them unzipped
            for block in r.raw.stream(chunk_size, decode_content=False):
                f.write(block)
    return total


def download_warcs(paths: Iterable[str], dest_dir, base_url: str = DEFAULT_BASE_URL, *,
                   workers: int = 1, retries: int = 5, backoff: float = 1.0, max_backoff: float = 60.0,
                   verify: bool = True, timeout: tuple[float, float] = (10.0, 120.0),
                   chunk_size: int = CHUNK, flat: bool = False, crawl: str | None = None) -> list[Path]:
    """Download each path (relative to base_url, e.g. `crawl-data/CC-MAIN-.../x.warc.gz`) to
    dest_dir/<path>, keeping the bucket layout, or with `flat` to dest_dir/<file name> (the lake's
    `crawls/<crawl>/warc/` folder; Common Crawl file names are unique within a crawl).
    Complete files are skipped. Returns the local paths in input order; raises DownloadError
    naming every file that failed, after the others are done.

    Before any request, every path must pass check_listing_entry (under crawl-data/<crawl>/ when
    `crawl` is given) and every destination safe_join; in flat mode two different paths with one
    file name are refused (UnsafePathError) rather than collapsed into one file."""
    paths = checked_listing(paths, crawl)
    dest_dir = Path(dest_dir)
    base = _base(base_url)
    if not re.match(r"^https?://", base):
        base = Path(base.removeprefix("file://")).resolve().as_uri() + "/"
    targets = {rel: safe_join(dest_dir, rel.rsplit("/", 1)[-1] if flat else rel) for rel in paths}
    by_target: dict[Path, str] = {}
    for rel, target in targets.items():
        if by_target.setdefault(target, rel) != rel:
            raise UnsafePathError(f"{by_target[target]!r} and {rel!r} would both be saved as {target}; "
                                  "keep the bucket layout (--keep-layout, flat=False) for this listing")
    local = threading.local()

    def one(rel: str) -> Path:
        if not hasattr(local, "session"):
            local.session = _session(None)  # requests.Session is not thread-safe: one per worker
        return download_file(same_origin_url(base, rel), targets[rel],
                             retries=retries, backoff=backoff,
                             max_backoff=max_backoff, timeout=timeout, chunk_size=chunk_size,
                             verify=verify, session=local.session)

    results: list[Path | Exception] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        # a path listed twice is fetched once: two workers on one .part file would corrupt it
        unique = {rel: pool.submit(one, rel) for rel in targets}
        futures = [unique[rel] for rel in paths]
        for fut in futures:
            try:
                results.append(fut.result())
            except Exception as e:  # noqa: BLE001 - collected and raised below
                results.append(e)
    errors = [(rel, r) for rel, r in zip(paths, results) if isinstance(r, Exception)]
    unsafe = next((e for _, e in errors if isinstance(e, UnsafePathError)), None)
    if unsafe:  # the user's to fix (one line in the CLI), not a failed transfer
        raise unsafe
    if errors:
        raise DownloadError(f"{len(errors)} of {len(paths)} downloads failed: "
                            + "; ".join(f"{rel}: {e}" for rel, e in errors))
    return results  # type: ignore[return-value]


# ---- a Range-capable static server: tests, benchmarks and offline demos serve a local crawl --------

class RangeRequestHandler(SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler plus single `bytes=a-b` ranges (enough for resuming downloads)."""

    protocol_version = "HTTP/1.1"  # keep-alive: one connection per worker, as with a real CDN

    def log_message(self, fmt, *args):  # quiet: tests and benchmarks make many requests
        log.debug("http: " + fmt, *args)

    def send_head(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return None
        size = path.stat().st_size
        start, end = 0, size - 1
        m = re.match(r"bytes=(\d*)-(\d*)$", self.headers.get("Range", "").strip())
        if m and (m.group(1) or m.group(2)):
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:  # suffix range: the last N bytes
                start = max(0, size - int(m.group(2)))
            if start >= size or start > end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        f = open(path, "rb")
        f.seek(start)
        self._remaining = end - start + 1
        return f

    def copyfile(self, source, outputfile):
        remaining = self._remaining
        while remaining > 0:
            block = source.read(min(CHUNK, remaining))
            if not block:
                break
            outputfile.write(block)
            remaining -= len(block)


@contextmanager
def serve_directory(root, handler=RangeRequestHandler, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `root` over HTTP on a free loopback port; yields the base URL."""
    root = str(root)

    class Handler(handler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=root, **kw)

    server = ThreadingHTTPServer((host, 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


# ---- CLI: `crawl2chat list-crawl` and `crawl2chat download` ----------------------------------------

def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--base-url", default=DEFAULT_BASE_URL,
                        help=f"bucket root over HTTPS, or a local folder laid out like it (default {DEFAULT_BASE_URL})")
    parser.add_argument("--retries", type=int, default=5)
    if name == "list-crawl":
        parser.add_argument("crawl", help="crawl name, e.g. CC-MAIN-2023-50")
        parser.add_argument("--limit", type=int, default=None, help="print only the first N paths")
        return
    parser.add_argument("crawl", nargs="?", help="crawl name; its warc.paths.gz lists the files")
    parser.add_argument("--paths-file", help="file of WARC paths (one per line, .gz ok) instead of a crawl listing")
    parser.add_argument("--path", action="append", default=[], help="a WARC path to download (repeatable)")
    parser.add_argument("--skip", type=int, default=0, help="skip the first N listed paths")
    parser.add_argument("--limit", type=int, default=None, help="download at most N files")
    parser.add_argument("--dest", default=None,
                        help="where files go (default lake/crawls/<crawl>/warc, flat); with --keep-layout "
                             "the bucket's crawl-data/... layout is kept under it")
    parser.add_argument("--keep-layout", action="store_true", help="keep the bucket's folder layout under --dest")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-verify", action="store_true", help="skip the gzip integrity check")
    parser.add_argument("--skip-bad-entries", action="store_true",
                        help="download the listing's safe entries even if others are rejected "
                             "(default: a listing with any rejected entry is refused)")


def _warn(lines: list[str]) -> None:
    for line in lines:
        print(f"crawl2chat: warning: {line}", file=sys.stderr)


def main(args: argparse.Namespace) -> int:
    # list-crawl only shows: its stdout holds nothing but accepted entries, so it exits 0 and warns
    # on stderr. download refuses a listing with any rejected entry (a genuine one has none, so the
    # source is broken or hostile) unless --skip-bad-entries says to take the rest anyway.
    if args.command == "list-crawl":
        entries = fetch_listing(args.crawl, args.base_url, retries=args.retries)
        paths, rejected = split_listing(entries, args.crawl)
        for p in paths[: args.limit]:
            print(p)
        if rejected:
            _warn(describe_rejected(rejected, len(entries)))
        log.info("%s: %d WARC files", args.crawl, len(paths))
        return 0
    if args.path:
        entries = list(args.path)
    elif args.paths_file:
        try:
            entries = read_listing(_file_chunks(Path(args.paths_file)), args.paths_file)
        except OSError as e:
            raise InputError(f"{args.paths_file}: cannot read the paths file ({e.strerror})") from None
    elif args.crawl:
        entries = fetch_listing(args.crawl, args.base_url, retries=args.retries)
    else:
        print("download: give a crawl, --paths-file or --path", file=sys.stderr)
        return 2
    # judged whole, before --skip/--limit: a poisoned listing is refused even where the slice is clean
    _, rejected = split_listing(entries, args.crawl)
    if rejected and not args.skip_bad_entries:
        checked_listing(entries, args.crawl)  # raises, naming them
    if rejected:
        _warn(describe_rejected(rejected, len(entries)) + ["skipping them (--skip-bad-entries)"])
    end = None if args.limit is None else args.skip + args.limit
    bad = {entry for entry, _ in rejected}
    paths = [p for p in entries[args.skip:end] if p not in bad]  # --skip/--limit count listing lines
    dest = args.dest
    if dest is None:
        crawl = args.crawl or next((m.group(1) for p in paths if (m := re.search(r"crawl-data/([^/]+)/", p))), None)
        dest = "lake" if args.keep_layout else f"lake/crawls/{crawl or 'unknown'}/warc"
    t0 = time.perf_counter()
    files = download_warcs(paths, dest, args.base_url, workers=args.workers, retries=args.retries,
                           verify=not args.no_verify, flat=not args.keep_layout, crawl=args.crawl)
    size = sum(f.stat().st_size for f in files)
    dt = time.perf_counter() - t0
    log.info("%d files, %.1f MB in %.1f s", len(files), size / 1e6, dt)
    for f in files:
        print(f)
    return 0
