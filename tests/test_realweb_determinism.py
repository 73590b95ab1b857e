"""Real pages, real load: a page's fate does not depend on what else the machine is doing (issue 26).

Real pages are far heavier than generated ones (../shared/realweb: median 111 KB, up to 2.9 MB):
with the old 1.0 CPU-s extraction limit, a 655 KB page costing ~0.7 CPU-s was dropped as `timeout`
in 3 of 8 identical runs. The budget that decides is now counted in work (`max_tags`, see
pipelines/extraction.py), and the CPU limit is a guard far above what any real page costs.

The pages of ../shared/realweb are wrapped into a WARC inside the test (bench/realweb_warc.py);
`crawl2chat process` runs twice with the default config and two extraction workers, the second run
beside busy-loop processes (three per core); the kept and removed outputs must be byte-identical.
A slice of the pages (44) runs in the default suite, all 1,310 with -m slow and C2C_REALWEB_FULL=1.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cpu_hogs import cpu_hogs

ROOT = Path(__file__).resolve().parents[1]
REALWEB = ROOT.parent / "shared" / "realweb"
# C2C_DETERMINISM_CONFIG: another extraction section for this test alone (YAML). Used once to show
# that the test catches a load-dependent budget: `timeout_s: 0.05` with `max_tags: null` (a CPU limit
# among the real pages' costs) makes the loaded run differ.
EXTRA_CONFIG = os.environ.get("C2C_DETERMINISM_CONFIG", "")

pytestmark = pytest.mark.skipif(not (REALWEB / "html").is_dir(),
                                reason=f"no real pages at {REALWEB} (see the project README, 'Real web data')")


def _realweb_warc():
    spec = importlib.util.spec_from_file_location("realweb_warc", ROOT / "bench" / "realweb_warc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _process(warc: Path, out: Path, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "process", str(warc), "--out", str(out),
                           "--config", str(config)],
                          capture_output=True, text=True, timeout=1800, cwd=ROOT)


def _outputs(out: Path) -> dict[str, bytes]:
    """Every Parquet file of the kept (clean/) and removed (removed/<stage>/) outputs."""
    return {str(f.relative_to(out)): f.read_bytes()
            for sub in ("clean", "removed") for f in sorted((out / sub).rglob("*.parquet"))}


def _same_outputs_beside_hogs(tmp_path: Path, every: int) -> None:
    warc = tmp_path / "realweb.warc.gz"
    n = _realweb_warc().write_warc(warc, REALWEB, every=every)
    config = tmp_path / "config.yaml"
    config.write_text("extraction:\n  workers: 2\n" + EXTRA_CONFIG)
    quiet = _process(warc, tmp_path / "quiet", config)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    with cpu_hogs():
        loaded = _process(warc, tmp_path / "loaded", config)
    assert loaded.returncode == 0, loaded.stderr[-3000:]

    a, b = _outputs(tmp_path / "quiet"), _outputs(tmp_path / "loaded")
    assert "clean/part-00000.parquet" in a
    assert a.keys() == b.keys(), f"output files differ: {sorted(set(a) ^ set(b))}"
    for name in a:  # byte for byte: pyarrow writes no timestamps into Parquet metadata
        assert a[name] == b[name], f"{name} differs between the quiet and the loaded run ({n} real pages)"
    kept = pq.read_table(tmp_path / "quiet" / "clean" / "part-00000.parquet").num_rows
    assert kept > 0.03 * n  # real pages went through (most realweb pages are not English)
    extraction = [r for f in (tmp_path / "quiet" / "removed").glob("extraction/*.parquet")
                  for r in pq.read_table(f).to_pylist()]
    assert not [r for r in extraction if r["reason"] == "timeout"], "a real page hit the CPU guard"


def test_realweb_slice_same_output_beside_cpu_hogs(tmp_path):
    _same_outputs_beside_hogs(tmp_path, every=30)  # 44 pages


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("C2C_REALWEB_FULL") != "1",
                    reason="all 1,310 real pages twice, once beside CPU hogs (~5 min on 2 free cores): "
                           "set C2C_REALWEB_FULL=1; `make test` runs the 44-page slice")
def test_realweb_all_pages_same_output_beside_cpu_hogs(tmp_path):
    _same_outputs_beside_hogs(tmp_path, every=1)  # 1,310 pages
