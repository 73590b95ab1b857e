"""Batches of WARC files: consecutive, within a segment, keyed <crawl>/<first>-<last>; and the
lake never fetching or writing what an unsafe listing entry names."""
import gzip
import os
from pathlib import Path

import pytest

from pipelines.commoncrawl import RangeRequestHandler, serve_directory
from pipelines.errors import UnsafePathError
from pipelines.lake import Batch, CrawlLake, fetch_warcs, plan_batches, uncovered_batches

LISTING = [f"crawl-data/C/segments/{seg}/warc/C-{i:05d}.warc.gz"
           for i, seg in enumerate(["s1"] * 5 + ["s2"] * 3)]


def test_batches_never_cross_a_segment_and_respect_size():
    batches = plan_batches("C", LISTING, files_per_batch=2)
    assert [(b.first, b.last) for b in batches] == [(0, 1), (2, 3), (4, 4), (5, 6), (7, 7)]
    assert [b.key for b in batches][:2] == ["C/00000-00001", "C/00002-00003"]


def test_zero_files_per_batch_means_one_batch_per_segment():
    assert [(b.first, b.last) for b in plan_batches("C", LISTING, 0)] == [(0, 4), (5, 7)]


def test_batch_key_round_trip_and_rejects_garbage():
    b = Batch.parse("CC-MAIN-2099-01/00004-00007")
    assert (b.crawl, b.first, b.last) == ("CC-MAIN-2099-01", 4, 7) and b.key == "CC-MAIN-2099-01/00004-00007"
    with pytest.raises(ValueError):
        Batch.parse("CC-MAIN-2099-01/file.warc.gz")


def test_uncovered_batches_skip_registered_files_and_honour_limit():
    registered = ["C/00000-00001", "OTHER/00002-00003"]
    new = uncovered_batches("C", LISTING, registered, files_per_batch=4, limit=4)
    assert [(b.first, b.last) for b in new] == [(2, 4), (5, 5)]
    # only files present in the lake may be batched (the sensor's case)
    new = uncovered_batches("C", LISTING, registered, files_per_batch=4, available={3, 4, 6})
    assert [(b.first, b.last) for b in new] == [(3, 4), (6, 6)]


# ---- unsafe listing entries ----------------------------------------------------------------------

CRAWL = "CC-MAIN-2099-01"
GOOD = f"crawl-data/{CRAWL}/segments/1/warc/{CRAWL}-00000.warc.gz"
TRAVERSAL = ["../../etc/x.warc.gz", "crawl-data/../../../x.warc.gz", "/etc/x.warc.gz",
             f"crawl-data/{CRAWL}/%2e%2e/%2e%2e/x.warc.gz", f"crawl-data/{CRAWL}/..\\..\\x.warc.gz",
             f"crawl-data/{CRAWL}/x.warc.gz\0/../../../x.warc.gz"]


def tree(root: Path) -> list[str]:
    out = []
    for d, dirs, files in os.walk(root):
        out += [os.path.relpath(os.path.join(d, n), root) for n in dirs + files]
    return sorted(out)


@pytest.fixture
def bucket(tmp_path):
    """A local crawl folder with a good file, plus files where a naive join would find the
    traversal entries (so a client that followed them would succeed, not just fail)."""
    root = tmp_path / "src" / "a" / "bucket"
    for rel in [GOOD, "../../etc/x.warc.gz", "crawl-data/../../../x.warc.gz", f"crawl-data/{CRAWL}/x.warc.gz"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(gzip.compress(rel.encode()))
    return root


class Counting(RangeRequestHandler):
    requests: list = []

    def do_GET(self):
        Counting.requests.append(self.path)
        super().do_GET()


@pytest.mark.parametrize("entry", TRAVERSAL)
def test_fetch_warcs_from_a_folder_refuses_unsafe_entries(bucket, tmp_path, entry):
    dest = tmp_path / "lake" / "crawls" / CRAWL / "warc"
    before = tree(tmp_path)
    with pytest.raises(UnsafePathError, match="rejected"):
        fetch_warcs([GOOD, entry], str(bucket), dest, crawl=CRAWL)
    assert tree(tmp_path) == before  # not even the good file: the listing is refused whole
    [f] = fetch_warcs([GOOD], str(bucket), dest, crawl=CRAWL)
    assert f == dest / GOOD and f.read_bytes() == (bucket / GOOD).read_bytes()


def test_fetch_warcs_over_http_never_asks_another_host(bucket, tmp_path):
    evil_root = tmp_path / "evil"
    evil_root.mkdir()
    (evil_root / "x.warc.gz").write_bytes(gzip.compress(b"evil"))
    Counting.requests = []
    with serve_directory(evil_root, handler=Counting) as evil_url, serve_directory(bucket) as url:
        host = evil_url.split("//", 1)[1]
        dest = tmp_path / "lake" / "warc"
        for entry in [f"{evil_url}x.warc.gz", f"//{host}x.warc.gz", *TRAVERSAL]:
            with pytest.raises(UnsafePathError, match="rejected"):
                fetch_warcs([GOOD, entry], url, dest, crawl=CRAWL)
        assert Counting.requests == [] and not dest.exists()
        with pytest.raises(UnsafePathError, match=f"outside crawl-data/{CRAWL}/"):
            fetch_warcs(["crawl-data/OTHER/x.warc.gz"], url, dest, crawl=CRAWL)


def test_a_symlink_in_the_lake_that_points_outside_is_refused(bucket, tmp_path):
    lake, outside = CrawlLake(tmp_path / "lake", CRAWL), tmp_path / "outside"
    outside.mkdir()
    lake.warc_dir.mkdir(parents=True)
    (lake.warc_dir / "crawl-data").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="outside"):
        fetch_warcs([GOOD], str(bucket), lake.warc_dir, crawl=CRAWL)
    with pytest.raises(UnsafePathError, match="outside"):
        lake.local_warc(GOOD)
    assert tree(outside) == []


def test_local_warc_checks_the_stored_listing_again(tmp_path):
    # listing.json is read back from the lake (an older version may have written it unchecked)
    lake = CrawlLake(tmp_path / "lake", CRAWL)
    lake.write_listing([GOOD, "../../../../etc/passwd.warc.gz"], "https://data.commoncrawl.org/")
    good, bad = lake.batch_files(Batch(CRAWL, 0, 1))
    assert lake.local_warc(good) == lake.warc_dir / GOOD
    with pytest.raises(UnsafePathError, match="'..' segment"):
        lake.local_warc(bad)
    with pytest.raises(UnsafePathError, match="crawl name"):  # e.g. a hand-added partition "../00000-00001"
        CrawlLake(tmp_path / "lake", Batch.parse("../00000-00001").crawl)


def test_crawl_manifest_fails_on_a_hostile_listing_and_registers_nothing(bucket, tmp_path):
    import dagster as dg

    from assets.data import crawl_manifest
    from assets.lineage import MLflowTracker
    from assets.partitions import warc_batches
    from assets.resources import CrawlSource, LakeResource
    listing = bucket / "crawl-data" / CRAWL / "warc.paths.gz"
    listing.write_bytes(gzip.compress("\n".join([GOOD, *TRAVERSAL]).encode()))
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([crawl_manifest], instance=instance, raise_on_error=False, resources={
        "lake": LakeResource(root=str(tmp_path / "lake")),
        "source": CrawlSource(crawl=CRAWL, base_url=str(bucket)),
        "mlflow_tracker": MLflowTracker(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                                        artifact_root=str(tmp_path / "mlartifacts"))})
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    info = failure.step_failure_data.user_failure_data
    assert info.metadata["rejected_entries"].value == len(TRAVERSAL)
    assert info.metadata["listed_entries"].value == len(TRAVERSAL) + 1
    assert [r["entry"] for r in info.metadata["rejected"].value] == TRAVERSAL
    assert f"{len(TRAVERSAL)} of {len(TRAVERSAL) + 1} listing entries rejected" in info.description
    assert instance.get_dynamic_partitions(warc_batches.name) == []
    assert not (tmp_path / "lake").exists()


def test_new_warc_files_sensor_refuses_a_hostile_listing(bucket, tmp_path):
    import dagster as dg

    from assets.automation import new_warc_files
    from assets.resources import CrawlSource, LakeResource
    (bucket / "crawl-data" / CRAWL / "warc.paths.gz").write_bytes(gzip.compress(f"{GOOD}\n{TRAVERSAL[0]}".encode()))
    context = dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), resources={
        "lake": LakeResource(root=str(tmp_path / "lake")), "source": CrawlSource(crawl=CRAWL, base_url=str(bucket))})
    with pytest.raises(UnsafePathError, match="1 of 2 listing entries rejected"):
        new_warc_files(context)
    assert not (tmp_path / "lake").exists()
