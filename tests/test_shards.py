"""Token shards: format per the contract, counts consistent with the manifest, document boundaries
where the index says, windows across shard boundaries, deterministic bytes (also on Spark with
different partitionings, equal to the single-process writer)."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.shards import (HEADER_BYTES, MAGIC, TokenShards, split_of, token_dtype,
                              write_token_shards)
from pipelines.tokenizer import load_tokenizer, train_tokenizer


def _docs() -> list[tuple[str, str]]:
    """~130 documents of real prose plus awkward ones (empty, emoji, special-token strings)."""
    from pydoc_data.topics import topics
    docs = [(f"doc-{k}", topics[k][:3000]) for k in sorted(topics)[:120]]
    docs += [("odd-empty", ""), ("odd-emoji", "😀👩‍👩‍👧 中文 \x00\t"),
             ("odd-special", "text <|endoftext|> and <|im_start|>user<|im_sep|>"),
             ("odd-ws", " " * 500 + "\n" * 50)]
    return docs


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from pydoc_data.topics import topics
    texts = [topics[k] for k in sorted(topics)]
    return load_tokenizer(train_tokenizer(texts, 1000, tmp_path_factory.mktemp("tok"), max_chars=200_000))


CFG = {"tokenizer": {"val_fraction": 0.1, "shard_tokens": 4096, "encode_batch_docs": 16}}


@pytest.fixture(scope="module")
def shards(tok, tmp_path_factory):
    root = tmp_path_factory.mktemp("shards") / "tokens"
    manifest = write_token_shards(_docs(), root, tok, CFG)
    return root, manifest


def _file_sha(path: Path) -> str:
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_format_and_manifest_counts(shards, tok):
    root, manifest = shards
    assert json.loads((root / "manifest.json").read_text()) == manifest
    assert manifest["version"] == 1 and manifest["dtype"] == "uint16" and manifest["bos_id"] == tok.bos_id
    assert manifest["vocab_size"] == 1000 and manifest["tokenizer_digest"] == tok.digest
    docs = _docs()
    total_docs = 0
    for split in ("train", "val"):
        info = manifest["splits"][split]
        tokens = docs_in_split = 0
        for s in info["shards"]:
            raw = (root / split / f"{s['name']}.bin").read_bytes()
            magic, version, itemsize, n, ndocs = struct.unpack("<8sIIQQ", raw[:32])
            assert (magic, version, itemsize) == (MAGIC, 1, 2) and raw[32:HEADER_BYTES] == bytes(224)
            assert len(raw) == HEADER_BYTES + 2 * n == HEADER_BYTES + 2 * s["tokens"]
            assert ndocs == s["documents"] == len((root / split / f"{s['name']}.idx").read_bytes()) // 8
            assert s["sha256"] == _file_sha(root / split / f"{s['name']}.bin")
            tokens += n
            docs_in_split += ndocs
        assert tokens == info["tokens"] and docs_in_split == info["documents"]
        assert all(s["tokens"] == 4096 for s in info["shards"][:-1])  # fixed-size shards
        expected = [d for d in docs if split_of(d[0], 0.1) == split]
        assert info["documents"] == len(expected)
        assert info["bytes"] == sum(len(t.encode()) for _, t in expected)
        total_docs += info["documents"]
    assert total_docs == len(docs) and len(manifest["splits"]["train"]["shards"]) > 3
    assert 0 < manifest["splits"]["val"]["documents"] < 40
    counts = pq.read_table(root / "token_counts").to_pylist()
    assert len(counts) == len(docs)
    assert sum(r["token_count"] + 1 for r in counts if r["split"] == "train") == \
        manifest["splits"]["train"]["tokens"]


def test_document_boundaries_follow_the_index(shards, tok):
    root, _ = shards
    for split in ("train", "val"):
        ts = TokenShards(root, split)
        expected = [t for i, t in _docs() if split_of(i, 0.1) == split]
        starts = ts.doc_starts()
        assert len(starts) == ts.num_documents == len(expected) and starts[0] == 0
        assert all(ts.tokens(int(s), 1)[0] == tok.bos_id for s in starts)
        # BOS appears exactly at the starts: no text token is ever the BOS id
        assert int((ts.tokens(0, ts.num_tokens) == tok.bos_id).sum()) == len(starts)
        for i, text in enumerate(expected):
            assert tok.decode(ts.document(i)) == text


def test_windows_span_shards_and_ranks_are_disjoint(shards):
    root, _ = shards
    ts = TokenShards(root, "train")
    flat = np.concatenate([np.fromfile(root / "train" / f"{n}.bin", dtype="<u2")[HEADER_BYTES // 2:]
                           for n in ts.shard_names])
    assert ts.tokens(4090, 20).tolist() == flat[4090:4110].tolist()  # crosses shard 0 -> 1
    assert ts.tokens(0, ts.num_tokens).dtype == np.int64
    with pytest.raises(IndexError):
        ts.tokens(ts.num_tokens - 5, 10)
    seq = 128
    per_rank = [ts.rank_windows(r, 3, seq) for r in range(3)]
    assert len({len(w) for w in per_rank}) == 1 and len(per_rank[0]) > 0
    all_starts = np.sort(np.concatenate(per_rank))
    assert (np.diff(all_starts) == seq).all() and all_starts[0] == 0
    assert all(len(ts.window(int(s), seq)) == seq + 1 for s in per_rank[2][-3:])
    assert ts.verify()


def test_same_input_same_bytes_and_rerun_replaces(shards, tok, tmp_path):
    root, manifest = shards
    again = tmp_path / "again"
    write_token_shards(_docs(), again, tok, CFG)
    write_token_shards(_docs(), again, tok, CFG)  # re-materialization replaces in place
    for split in ("train", "val"):
        for f in sorted((root / split).iterdir()):
            assert f.read_bytes() == (again / split / f.name).read_bytes()
    assert (root / "manifest.json").read_bytes() == (again / "manifest.json").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_uint32_when_vocab_exceeds_uint16():
    assert token_dtype(65536).itemsize == 2 and token_dtype(65537).itemsize == 4


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(texts=st.lists(st.text(max_size=200), min_size=1, max_size=12),
       shard_tokens=st.integers(min_value=1, max_value=64))
def test_any_documents_any_shard_size(tok, tmp_path, texts, shard_tokens):
    docs = [(f"id{i:03d}", t) for i, t in enumerate(texts)]
    root = tmp_path / f"h{shard_tokens}"
    m = write_token_shards(docs, root, tok, {"val_fraction": 0.0, "shard_tokens": shard_tokens})
    ts = TokenShards(root, "train")
    assert ts.num_documents == len(docs) and m["splits"]["val"]["documents"] == 0
    assert ts.num_tokens == sum(len(tok.encode(t)) + 1 for t in texts)
    assert [tok.decode(ts.document(i)) for i in range(len(docs))] == texts


# ------------------------------------------------------------------------------------------
# Spark: same bytes whatever the partitioning, equal to the single-process writer in id order

@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark")
    from pipelines.spark.session import build_spark_session
    session = build_spark_session("local[2]", app_name="crawl2chat-tests",
                                  conf={"spark.driver.memory": "1g"})
    yield session
    session.stop()


@pytest.fixture(scope="module")
def clean_dirs(tmp_path_factory):
    """The documents as two clean_text-like Parquet folders, in shuffled order."""
    import random
    docs = _docs()
    random.Random(1).shuffle(docs)
    base = tmp_path_factory.mktemp("clean")
    dirs = []
    for k, chunk in enumerate((docs[:70], docs[70:])):
        d = base / f"batch{k}"
        d.mkdir()
        pq.write_table(pa.table({"id": [i for i, _ in chunk], "text": [t for _, t in chunk],
                                 "url": ["u"] * len(chunk)}), d / "part-0.parquet")
        dirs.append(d)
    return dirs


@pytest.mark.slow  # a local Spark session: ~10 s on an idle laptop, minutes on a busy 2-core box
def test_spark_output_independent_of_partitioning(spark, tok, clean_dirs, tmp_path):
    from pipelines.spark.tokens import write_token_shards_spark
    a, b, single = tmp_path / "a", tmp_path / "b", tmp_path / "single"
    ma = write_token_shards_spark(spark, clean_dirs, a, tok.dir, CFG, num_partitions=2)
    mb = write_token_shards_spark(spark, clean_dirs, b, tok.dir, CFG, num_partitions=7)
    assert mb["parts"] > ma["parts"] >= 2
    write_token_shards(sorted(_docs()), single, tok, CFG)
    files = sorted(p.relative_to(single) for p in single.rglob("*")
                   if p.is_file() and p.parts[-2] in ("train", "val"))
    assert len(files) > 6
    for rel in files + [Path("manifest.json")]:
        assert (a / rel).read_bytes() == (single / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert sorted((a / "train").iterdir()) and not (a / "_parts").exists()
    counts = pq.read_table(b / "token_counts").to_pylist()
    assert sorted(r["id"] for r in counts) == sorted(i for i, _ in _docs())
    ts = TokenShards(b, "val")
    val = sorted(d for d in _docs() if split_of(d[0], 0.1) == "val")
    assert [tok.decode(ts.document(i)) for i in range(ts.num_documents)] == [t for _, t in val]


# ------------------------------------------------------------------------------------------
# Damaged or missing shard sets: one InputError naming the file and what to do

def _copy(shards, tmp_path) -> Path:
    import shutil
    root, _ = shards
    dst = tmp_path / "tokens"
    shutil.copytree(root, dst)
    return dst


def test_missing_or_empty_directory(tmp_path):
    from pipelines.errors import InputError
    with pytest.raises(InputError, match=f"{tmp_path / 'nope'}.*does not exist.*token_shards"):
        TokenShards(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=f"{tmp_path / 'empty'}: it is empty"):
        TokenShards(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="has no manifest.json"):
        TokenShards(tmp_path / "other")


def test_truncated_shard_names_the_file(shards, tmp_path):
    from pipelines.errors import InputError
    root = _copy(shards, tmp_path)
    shard = root / "train" / "shard_00001.bin"
    data = shard.read_bytes()
    shard.write_bytes(data[:-100])  # a copy that stopped early
    with pytest.raises(InputError, match=f"{shard} is {len(data) - 100} bytes, {len(data)} expected"
                                         r".*truncated.*re-materialize the `token_shards` asset"):
        TokenShards(root, "train")
    TokenShards(root, "val")  # the other split is fine
    shard.unlink()
    with pytest.raises(InputError, match=f"{shard} is missing"):
        TokenShards(root, "train")


def test_truncated_index_and_bad_header(shards, tmp_path):
    from pipelines.errors import InputError
    root = _copy(shards, tmp_path)
    idx = root / "train" / "shard_00000.idx"
    idx.write_bytes(idx.read_bytes()[:-8])
    with pytest.raises(InputError, match=f"{idx} is"):
        TokenShards(root, "train")
    shard = root / "val" / "shard_00000.bin"
    raw = bytearray(shard.read_bytes())
    raw[:8] = b"NOTTOKS\0"
    shard.write_bytes(bytes(raw))
    with pytest.raises(InputError, match=f"{shard}: header"):
        TokenShards(root, "val")


def test_corrupt_byte_caught_by_digest_on_request(shards, tmp_path):
    from pipelines.errors import InputError
    root = _copy(shards, tmp_path)
    shard = root / "train" / "shard_00002.bin"
    raw = bytearray(shard.read_bytes())
    raw[HEADER_BYTES + 10] ^= 0xFF  # same size: only the digest can tell
    shard.write_bytes(bytes(raw))
    ts = TokenShards(root, "train")  # sizes are right: opening alone does not read every byte
    with pytest.raises(InputError, match=f"{shard}: sha256 .* differs from the manifest"):
        ts.verify()
    with pytest.raises(InputError, match=str(shard)):
        TokenShards(root, "train", verify_digests=True)
    assert TokenShards(root, "val", verify_digests=True).verify()


def test_damaged_manifest(shards, tmp_path):
    from pipelines.errors import InputError
    root = _copy(shards, tmp_path)
    manifest = root / "manifest.json"
    manifest.write_text(manifest.read_text()[:50])
    with pytest.raises(InputError, match=f"{manifest} cannot be read"):
        TokenShards(root)
    manifest.write_text(json.dumps({"version": 1, "splits": {"train": {}}}))
    with pytest.raises(InputError, match="malformed"):
        TokenShards(root)
    with pytest.raises(InputError, match="no 'test' split"):
        TokenShards(root, "test")
