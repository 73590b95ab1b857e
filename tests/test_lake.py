"""Batches of WARC files: consecutive, within a segment, keyed <crawl>/<first>-<last>."""
import pytest

from pipelines.lake import Batch, plan_batches, uncovered_batches

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
