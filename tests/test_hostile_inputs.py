"""`crawl2chat process` over a directory of deliberately broken and hostile files (issue 10's
must-show): the exit code and one clear line per problem, every record of every file accounted for
in stats.json, memory bounded by the body cap (a gzip bomb inside), and nothing outside the output
written or removed."""
import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.samplecrawl import generate_crawl
from warc_fixtures import bomb_member, html_pages, http_block, page, raw_record, write_requests_only, write_warc

pytestmark = pytest.mark.slow

# The CLI runs in a wrapper process whose RUSAGE_CHILDREN covers exactly its process tree (the
# CLI and its pool workers), not the other subprocesses this pytest process has waited for.
_MEASURED = """
import json, resource, subprocess, sys
r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def run_measured(*args) -> dict:
    cmd = [sys.executable, "-c", _MEASURED, sys.executable, "-m", "pipelines.cli", *map(str, args)]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def snapshot(root: Path, skip: Path) -> dict[str, tuple]:
    """Every path under root (outside `skip`) with its type, size and content digest."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p == skip or skip in p.parents:
            continue
        if p.is_symlink():
            out[str(p)] = ("link", os.readlink(p))
        elif p.is_file():
            out[str(p)] = ("file", p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        else:
            out[str(p)] = ("dir",)
    return out


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    good = generate_crawl(root / "source", pages=24, files=2, seed=11).warc_paths
    d = root / "inputs"
    d.mkdir()
    for i, p in enumerate(good):
        (d / f"good{i}.warc.gz").write_bytes(Path(p).read_bytes())
    data = Path(good[0]).read_bytes()
    (d / "truncated.warc.gz").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    for k in range(len(data) // 2, len(data) // 2 + 64):
        flipped[k] ^= 0xFF
    (d / "flipped.warc.gz").write_bytes(bytes(flipped))
    (d / "empty.warc.gz").write_bytes(b"")
    write_requests_only(d / "requests.warc.gz", 3)
    (d / "notes.warc").write_text("this is not a WARC file at all\n" * 50)
    write_warc(root / "before.warc.gz", html_pages(1))
    write_warc(root / "after.warc.gz", html_pages(1, start=1))
    (d / "bomb.warc.gz").write_bytes((root / "before.warc.gz").read_bytes()  # page, 1 GiB bomb, page
                                     + bomb_member("http://bomb.example/", 1 << 30)
                                     + (root / "after.warc.gz").read_bytes())
    (d / "gone.warc.gz").symlink_to(root / "does-not-exist.warc.gz")
    # a plain WARC whose first record claims 3 GiB: the 9 records after it were lost without a word
    (d / "claims-3gib.warc").write_bytes(
        raw_record("http://liar.example/", http_block(200, "text/html", page(0)), length=3 << 30)
        + b"".join(raw_record(f"http://after{i}.example/", http_block(200, "text/html", page(i))) for i in range(1, 10)))
    return d


def test_process_a_directory_of_hostile_files(hostile, tmp_path):
    root = hostile.parent
    out = root / "out"
    before = snapshot(root, out)

    # a dangling link among the inputs: refused before any work, one line, exit 2
    r = run_measured("process", hostile, "--out", out)
    assert r["rc"] == 2 and "gone.warc.gz: not a readable regular file" in r["stderr"]
    assert [line for line in r["stderr"].splitlines() if line.startswith("crawl2chat:")] == \
        [line for line in r["stderr"].splitlines() if line.strip()]  # nothing but our one line
    assert not out.exists()

    # lenient: everything readable is processed; each problem is one line; the run succeeds
    r = run_measured("process", hostile, "--out", out, "--workers", "2", "--keep-going")
    assert r["rc"] == 0, r["stderr"][-3000:]
    assert "Traceback" not in r["stderr"]
    warnings = [line for line in r["stderr"].splitlines() if line.startswith("crawl2chat: warning:")]
    expect = {"gone.warc.gz": "skipped", "truncated.warc.gz": "truncated_gzip",
              "flipped.warc.gz": "corrupt_gzip", "empty.warc.gz": "empty_file",
              "requests.warc.gz": "no_response_records", "notes.warc": "corrupt_record",
              "claims-3gib.warc": "bad_content_length"}
    for name, what in expect.items():
        assert any(name in w and what in w for w in warnings), (name, what, warnings)

    stats = json.loads((out / "stats.json").read_text())
    files = {Path(p).name: f for p, f in stats["files"].items()}
    assert set(files) == {p.name for p in hostile.iterdir()} - {"gone.warc.gz"}
    for name, f in files.items():  # every record, of every file, accounted for
        assert f["records"] == f["responses"] + f["other_records"], name
        assert f["responses"] == f["kept"] + sum(f["dropped"].values()), name
    assert files["good0.warc.gz"]["problems"] == {} and files["good0.warc.gz"]["kept"] > 0
    assert files["empty.warc.gz"]["records"] == 0 and files["empty.warc.gz"]["problems"] == {"empty_file": 1}
    assert files["requests.warc.gz"]["other_records"] == 3
    assert files["bomb.warc.gz"]["dropped"].get("warc_reader.oversize_body") == 1
    assert files["bomb.warc.gz"]["responses"] == 3  # the pages around the bomb were read
    assert files["claims-3gib.warc"]["responses"] == 10  # resynchronised after the lying length
    assert files["truncated.warc.gz"]["responses"] > 0  # the records before the cut survive
    totals = stats["stages"]["warc_reader"]
    assert totals["docs_in"] == sum(f["responses"] for f in files.values())

    # a 1 GiB body never reaches memory: the whole process tree stays near its usual size
    assert r["peak_rss_mb"] < 900, r["peak_rss_mb"]

    # nothing outside the output was written or removed (inputs byte-identical)
    assert snapshot(root, out) == before
