"""generate_crawl: plan -> captures -> WARC files, listing and ground-truth manifest.

Everything random comes from RNGs seeded by `seed` (content, record ids, order) and every date
from the crawl name, so one seed gives byte-identical files on any run.

`quirks=True` (off by default: the default crawl's bytes and manifest do not depend on it) plants
what real archives hold and a reader must survive (see QUIRKS); each affected manifest line lists
its quirks under "quirks", and the planted fate is what the reader's policy gives.
"""
from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pipelines.samplecrawl import warcwriter as ww
from pipelines.samplecrawl.content import _REASONS, Builder, Capture
from pipelines.samplecrawl.plan import plan_counts, plan_specs

USER_AGENT = "CCBot/2.0 (https://commoncrawl.org/faq/)"
_SERVERS = ("nginx", "Apache", "cloudflare", "nginx/1.24.0", "Apache/2.4.57 (Debian)", "LiteSpeed")
# Reader quirks planted by generate_crawl(quirks=True), each as real archives have it.
QUIRKS = {
    # pywb / webrecorder keep the header but store the body de-chunked: fastwarc's de-chunking fails
    "chunked_dechunked": "HTTP header Transfer-Encoding: chunked on a body stored de-chunked",
    # some archivers store the payload alone: kept when it looks like HTML, else no_http_headers
    "no_http_headers": "no HTTP status line or headers: the block is the payload",
    # the last WARC file is written as ClueWeb09's are (pre-ISO draft version, LF line ends)
    "warc_0_18_lf": "WARC/0.18 version line, WARC and HTTP header lines ending in a bare LF",
}
_QUIRK_SHARE = 0.02  # of good pages per record-level quirk, at least 1 (and a fifth of non-HTML ones)
_CLD2 = {"en": ("eng", "ENGLISH"), "fr": ("fra", "FRENCH"), "de": ("deu", "GERMAN"), "es": ("spa", "SPANISH"),
         "ru": ("rus", "RUSSIAN"), "zh": ("zho", "Chinese"), "ja": ("jpn", "Japanese")}


@dataclass
class CrawlInfo:
    out_dir: Path
    crawl: str
    warc_paths: list[Path]
    manifest_path: Path
    paths_listing: Path
    counts: dict  # planned pages per category
    captures: int
    page_bytes: dict | None = None  # size distribution of the HTML pages' bodies (page_size_stats)


def page_size_stats(sizes: list[int]) -> dict:
    """min / median / mean / p90 / max of HTML body sizes in bytes, as realweb's README gives its own."""
    if not sizes:
        return {"pages": 0}
    s = sorted(sizes)
    mid = len(s) // 2
    median = s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
    return {"pages": len(s), "min": s[0], "median": round(median), "mean": round(sum(s) / len(s)),
            "p90": s[min(len(s) - 1, int(0.9 * len(s)))], "max": s[-1]}


def _crawl_start(crawl: str) -> datetime:
    """CC-MAIN-YYYY-WW -> Monday-ish of that week, at a fixed time (no wall clock)."""
    try:
        _, _, year, week = crawl.split("-")
        return datetime(int(year), 1, 1, 3, 14, 15, tzinfo=timezone.utc) + timedelta(weeks=int(week) - 1)
    except ValueError:
        return datetime(2099, 1, 1, 3, 14, 15, tzinfo=timezone.utc)


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _http_date(dt: datetime) -> str:
    return dt.strftime("%a, %d %b %Y %H:%M:%S GMT")


def generate_crawl(out_dir, pages: int = 200, seed: int = 0, crawl: str = "CC-MAIN-2099-01",
                   files: int = 2, quirks: bool = False, small_pages: bool = False) -> CrawlInfo:
    out_dir = Path(out_dir)
    files = max(1, min(files, pages))
    start = _crawl_start(crawl)
    content_rng = random.Random(f"content-{seed}")
    id_rng = random.Random(f"ids-{seed}")
    order_rng = random.Random(f"order-{seed}")

    # real-page weight by default (boilerplate.py); small_pages: the ~4 KB pages of old, same texts
    builder = Builder(content_rng, start.year, weight=0.0 if small_pages else 1.0)
    captures: list[Capture] = []
    for spec in plan_specs(pages, random.Random(f"plan-{seed}")):
        captures.extend(builder.build(spec))
    order_rng.shuffle(captures)

    def new_id() -> str:
        return f"<urn:uuid:{uuid.UUID(int=id_rng.getrandbits(128), version=4)}>"

    ids = [(new_id(), new_id(), new_id()) for _ in captures]  # request, response, metadata
    if quirks:
        _plant_record_quirks(captures, random.Random(f"quirks-{seed}"))

    # Layout: files spread over (at most) two segments, named as Common Crawl names them.
    seg_base = int(start.timestamp() * 1000)
    n_segments = 1 if files == 1 else 2
    rel_paths = []
    for i in range(files):
        seg = f"{seg_base}.{(seed % 90) + i % n_segments + 1}"
        stamp = (start + timedelta(hours=i)).strftime("%Y%m%d%H%M%S")
        rel_paths.append(f"crawl-data/{crawl}/segments/{seg}/warc/{crawl}-{stamp}-{i:05d}.warc.gz")

    per_file = -(-len(captures) // files)
    when = start
    warc_paths, written = [], []  # written: (capture index, file, offset, WARC-Date) in file order
    for i, rel in enumerate(rel_paths):
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        warc_paths.append(path)
        chunk = range(i * per_file, min(len(captures), (i + 1) * per_file))
        old_format = quirks and i == files - 1
        with (ww.WarcWriter(path, "WARC/0.18", "\n") if old_format else ww.WarcWriter(path)) as writer:
            info_id = new_id()
            _write_warcinfo(writer, info_id, _iso(when), path.name, crawl)
            for k in chunk:
                when += timedelta(seconds=id_rng.randint(1, 40))
                if old_format:
                    captures[k].quirks.append("warc_0_18_lf")
                offset = _write_capture(writer, captures[k], ids[k], info_id, when, id_rng)
                written.append((k, rel, offset, _iso(when)))
    _decide_duplicates(captures, {k: (date, ids[k][1]) for k, _, _, date in written})
    manifest_path = out_dir / "manifest.jsonl"
    with open(manifest_path, "w", encoding="utf-8") as manifest:
        for k, rel, offset, _ in written:
            line = _manifest_line(captures[k], rel, ids[k][1], offset)
            if quirks:
                line["quirks"] = captures[k].quirks
            manifest.write(json.dumps(line, ensure_ascii=False) + "\n")
    listing = out_dir / "crawl-data" / crawl / "warc.paths.gz"
    ww.gzip_lines(listing, rel_paths)
    sizes = [len(c.body) for c in captures if c.mime == "text/html" and c.status == 200]
    return CrawlInfo(out_dir, crawl, warc_paths, manifest_path, listing, plan_counts(pages), len(captures),
                     page_size_stats(sizes))


def _decide_duplicates(captures: list[Capture], captured: dict[int, tuple[str, str]]) -> None:
    """MinHash keeps the earliest capture of a cluster (pipelines/minhash.py, `survivor_key`; WARC
    dates here are all distinct, so its later tie-breaks never decide); the others are dropped as
    duplicates. `captured`: capture index -> (WARC-Date, response record id)."""
    clusters: dict[str, list[int]] = {}
    for i, cap in enumerate(captures):
        if cap.dup_cluster:
            clusters.setdefault(cap.dup_cluster, []).append(i)
    for members in clusters.values():
        keep = min(members, key=lambda i: captured[i])
        for i in members:
            captures[i].dup_cluster = captured[keep][1]
            if i != keep:
                captures[i].fate, captures[i].stage, captures[i].reason = "dropped", "minhash", "duplicate"


def _plant_record_quirks(captures: list[Capture], rng: random.Random) -> None:
    """Mark a few good pages (chunked_dechunked, no_http_headers: kept all the same) and a few
    non-HTML captures (no_http_headers: then dropped as no_http_headers, not non_html)."""
    good = [c for c in captures if c.category == "good"]
    binary = [c for c in captures if c.category == "non_html"]
    n = max(1, round(_QUIRK_SHARE * len(good)))
    picked = rng.sample(good, min(len(good), 2 * n))
    for cap in picked[:n]:
        cap.quirks.append("chunked_dechunked")
    for cap in picked[n:] + rng.sample(binary, min(len(binary), max(1, len(binary) // 5))):
        cap.quirks.append("no_http_headers")
        if cap.category == "non_html":
            cap.reason = "no_http_headers"


def _write_warcinfo(writer, record_id, date, filename, crawl) -> None:
    fields = [("software", "crawl2chat-samplecrawl/1.0 (Apache Nutch 1.19 style)"), ("isPartOf", crawl),
              ("operator", "crawl2chat sample generator"),
              ("description", f"Synthetic sample of {crawl}: real WARC records, planted ground truth"),
              ("robots", "checked via crawler-commons 1.4 (https://github.com/crawler-commons/crawler-commons)"),
              ("hostname", "sample-crawler.local"), ("format", "WARC File Format 1.1"),
              ("conformsTo", "https://iipc.github.io/warc-specifications/specifications/warc-format/warc-1.1/")]
    block = "".join(f"{k}: {v}{writer.newline}" for k, v in fields).encode("utf-8")
    writer.write_record("warcinfo", record_id, date, "application/warc-fields", block,
                        [("WARC-Filename", filename)])


def _write_capture(writer, cap: Capture, ids, info_id: str, when: datetime, rng: random.Random) -> int:
    req_id, resp_id, meta_id = ids
    date = _iso(when)
    scheme_host, _, path = cap.url.partition("//")[2].partition("/")
    host = scheme_host
    ip = f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"

    nl = writer.newline
    request = ww.http_request_block("/" + path, host, USER_AGENT, nl)
    writer.write_record("request", req_id, date, "application/http; msgtype=request", request,
                        [("WARC-Warcinfo-ID", info_id), ("WARC-IP-Address", ip), ("WARC-Target-URI", cap.url),
                         ("WARC-Block-Digest", ww.sha1_b32(request))])

    headers = [("Date", _http_date(when)), ("Server", rng.choice(_SERVERS))]
    ctype = cap.content_type_header()
    if ctype:
        headers.append(("Content-Type", ctype))
    if cap.location:
        headers.append(("Location", cap.location))
    if "chunked_dechunked" in cap.quirks:  # the header says chunked, the body was stored de-chunked
        headers += [("Transfer-Encoding", "chunked"), ("Connection", "close")]
    else:
        headers += [("Content-Length", str(len(cap.body))), ("Connection", "close")]
    if cap.status == 200 and cap.mime == "text/html":
        headers.append(("Cache-Control", "max-age=600"))
    response = ww.http_response_block(cap.status, _REASONS[cap.status], headers, cap.body, nl)
    if "no_http_headers" in cap.quirks:
        response = cap.body
    extra = [("WARC-Warcinfo-ID", info_id), ("WARC-Concurrent-To", req_id), ("WARC-IP-Address", ip),
             ("WARC-Target-URI", cap.url), ("WARC-Payload-Digest", ww.sha1_b32(cap.body)),
             ("WARC-Block-Digest", ww.sha1_b32(response))]
    if cap.mime:
        extra.append(("WARC-Identified-Payload-Type", cap.mime))
    if cap.truncated:
        extra.append(("WARC-Truncated", "length"))
    offset = writer.write_record("response", resp_id, date, "application/http; msgtype=response", response, extra)

    meta = [("fetchTimeMs", str(rng.randint(40, 2500)))]
    if cap.charset:
        meta.append(("charset-detected", cap.charset.upper()))
    if cap.language:
        code3, name = _CLD2[cap.language]
        meta.append(("languages-cld2", json.dumps({"reliable": True, "languages": [
            {"code": cap.language, "code-iso-639-3": code3, "text-covered": 0.97, "score": 950.0, "name": name}]})))
    block = "".join(f"{k}: {v}{nl}" for k, v in meta).encode("utf-8")
    writer.write_record("metadata", meta_id, date, "application/warc-fields", block,
                        [("WARC-Warcinfo-ID", info_id), ("WARC-Target-URI", cap.url), ("WARC-Concurrent-To", resp_id)])
    return offset


def _manifest_line(cap: Capture, warc_file: str, record_id: str, offset: int) -> dict:
    return {"url": cap.url, "warc_file": warc_file, "record_id": record_id, "offset": offset,
            "language": cap.language, "category": cap.category, "fate": cap.fate, "stage": cap.stage,
            "reason": cap.reason, "dup_cluster": cap.dup_cluster, "pii": cap.pii, "status": cap.status,
            "content_type": cap.mime, "charset": cap.charset}
