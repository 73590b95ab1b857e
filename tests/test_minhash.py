"""MinHash dedup: bit-exact against datasketch, catches near and exact duplicates, deterministic."""
from __future__ import annotations

import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datasketch import MinHash

from pipelines.document import Document
from pipelines.minhash import (MinhashDedup, MinHasher, capture_time_key, connected_components, normalize,
                               shingle_hash, survivor_key, word_hash)
from pipelines.runner import run_stages

VOCAB_ASCII = ("the of and to in is was for on that with as by it from at his an were are which "
               "this be or has had first one their its new after but who not they have her she "
               "two been other when there all during into school time may years more most only "
               "over city some world would where later up such used many can state about national "
               "out known university united then made").split()
VOCAB_UNICODE = ["Café", "naïve", "Übermaß", "Straße", "日本語", "テキスト", "中文", "ΟΔΟΣ", "İstanbul",
                 "Ｘ１２", "١٢٣", "crème-brûlée", "«quoted»", "“smart”", "—", "…", "x\u200by",
                 "e\u0301", "Ǆ", "ﬁ", "\u00a0", "ẞ", "Привет", "мир", "𝔘𝔫𝔦", "😀", "a\u0327"]
SEPARATORS = [" ", " ", " ", "  ", "\n", "\t", ", ", ". ", "\u00a0", "\u2028", " - ", "\r\n"]


def random_text(rng: random.Random, n_words: int) -> str:
    parts = []
    for _ in range(n_words):
        r = rng.random()
        if r < 0.15:
            w = rng.choice(VOCAB_UNICODE)
        elif r < 0.25:
            w = str(rng.randint(0, 10**rng.randint(1, 9)))
        else:
            w = rng.choice(VOCAB_ASCII)
            if rng.random() < 0.2:
                w = w.capitalize() + rng.choice("!?.,;:'\"()[]")
        parts.append(w)
        parts.append(rng.choice(SEPARATORS))
    return "".join(parts)


def datasketch_signature(hasher: MinHasher, text: str) -> np.ndarray:
    m = MinHash(num_perm=hasher.num_perm, seed=hasher.seed, scheme="affine64", hashfunc=shingle_hash)
    m.update_batch(hasher.shingles(text))
    return m.hashvalues


@pytest.mark.parametrize("seed,num_perm,bands,rows", [(1, 112, 14, 8), (42, 64, 8, 8)])
def test_signature_equals_datasketch_bit_for_bit(seed, num_perm, bands, rows):
    rng = random.Random(seed)
    hasher = MinHasher(num_perm=num_perm, bands=bands, rows=rows, seed=seed)
    # 5000 words (~30 KB) also exercises the growth of the power tables (16 K bytes at first)
    lengths = [1, 2, 3, 4, 5, 6, 7, 5000] + [rng.randint(8, 1500) for _ in range(150)]
    for n in lengths:
        text = random_text(rng, n)
        ours = hasher.signature(text)
        if not hasher.shingles(text):  # e.g. only punctuation
            assert ours is None
            continue
        assert ours.dtype == np.uint64 and ours.shape == (num_perm,)
        np.testing.assert_array_equal(ours, datasketch_signature(hasher, text), err_msg=repr(text[:200]))


def test_vectorized_word_hashes_equal_scalar_reference():
    rng = random.Random(3)
    hasher = MinHasher()
    text = random_text(rng, 400)
    words = hasher.words(text)
    assert hasher.word_hashes(text).tolist() == [word_hash(w) for w in words]
    assert len(set(word_hash(w) for w in words)) == len(set(words))


def test_short_and_empty_documents():
    hasher = MinHasher()
    # fewer than 5 words: the whole normalized document is one shingle
    assert hasher.shingles("Hello, World!") == [("hello", "world")]
    np.testing.assert_array_equal(hasher.signature("Hello, World!"), hasher.signature("hello world"))
    assert hasher.signature("") is None
    assert hasher.signature("  ... !!! \n") is None


def test_normalization_examples():
    assert normalize("Hello,   World!\n\tThe END.") == "hello world the end"
    assert normalize("Café déjà vu — naïve Übermaß") == "cafe deja vu naive ubermaß"
    assert normalize("Call 555-1234 in 2024") == "call 0000000 in 0000"
    assert normalize("Arabic ١٢٣ and fullwidth １２") == "arabic 000 and fullwidth 00"
    assert normalize("“Smart” quotes… and «guillemets»") == "smart quotes and guillemets"
    assert normalize("zero\u200bwidth\u00a0nbsp") == "zerowidth nbsp"
    assert normalize("a+b=c | $5 ^ ~x") == "abc 0 x"
    assert normalize("") == ""


def _article(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(VOCAB_ASCII) for _ in range(n)]


def _sentences(words: list[str], size: int = 15) -> str:
    return " ".join(" ".join(words[i:i + size]).capitalize() + "." for i in range(0, len(words), size))


def test_near_duplicates_caught_unrelated_not():
    rng = random.Random(7)
    base = _article(rng, 500)
    edited = list(base)
    edited[240:255] = _article(rng, 15)  # one sentence rewritten
    # the original (captured first) has the larger id: the old smallest-id rule kept the copy
    docs = [Document(_sentences(base), "doc-b", {"date": "2024-02-20T10:00:00Z"}),
            Document(_sentences(edited), "doc-a", {"date": "2024-02-27T08:30:00Z"}),
            Document(_sentences(_article(rng, 500)), "doc-c"),
            Document(_sentences(_article(rng, 500)), "doc-d")]
    removed = []
    out, stats = run_stages(iter(docs), [MinhashDedup()],
                            sink=lambda d, stage, reason: removed.append((d.id, stage, reason)))
    kept = list(out)
    assert [d.id for d in kept] == ["doc-b", "doc-c", "doc-d"]  # input order, earliest capture kept
    assert removed == [("doc-a", "minhash", "duplicate")]
    assert kept[0].metadata["minhash_cluster_id"] == "doc-b"
    assert kept[0].metadata["minhash_cluster_size"] == 2
    assert kept[1].metadata["minhash_cluster_id"] == "doc-c"
    assert kept[1].metadata["minhash_cluster_size"] == 1
    assert stats["minhash"].dropped["duplicate"] == 1
    assert stats["minhash"].docs_in == 4 and stats["minhash"].docs_out == 3


def test_exact_duplicates_and_deterministic_choice():
    rng = random.Random(11)
    text = _sentences(_article(rng, 300))
    variants = [text, text.upper(), text.replace(".", " !"), text]
    other = _sentences(_article(rng, 300))
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]):
        ids = ["k3", "k1", "k4", "k2"]
        docs = [Document(variants[i], ids[i]) for i in order] + [Document(other, "z")]
        docs.insert(2, Document("", "e1"))
        docs.append(Document("   ", "e0"))
        kept = list(run_stages(iter(docs), [MinhashDedup()])[0])
        # no dates: the longest text survives (" !" for "." makes k4's longest), whatever the
        # order; empty docs are never duplicates
        assert sorted(d.id for d in kept) == ["e0", "e1", "k4", "z"]
        k4 = next(d for d in kept if d.id == "k4")
        assert (k4.metadata["minhash_cluster_id"], k4.metadata["minhash_cluster_size"]) == ("k4", 4)
        e0 = next(d for d in kept if d.id == "e0")
        assert (e0.metadata["minhash_cluster_id"], e0.metadata["minhash_cluster_size"]) == ("e0", 1)


def test_survivor_is_the_earliest_capture_then_the_longest_text_then_the_smallest_id():
    rng = random.Random(13)
    text = _sentences(_article(rng, 300))
    longer = text + " Copied from the original site."
    cases = [  # (id, date, text) of one cluster -> the id kept
        ([("c", "2024-03-01T00:00:00Z", text), ("a", "2024-03-02T00:00:00Z", longer),
          ("b", None, longer + " More.")], "c"),                                 # earliest capture
        ([("b", "2024-03-01T00:00:00Z", text), ("c", "2024-03-01T00:00:00Z", longer)], "c"),  # longest
        ([("c", "2024-03-01T00:00:00Z", text), ("b", "2024-03-01T00:00:00Z", text)], "b"),    # smallest id
        # WARC/1.1 fractions of a second: 15.5 s is after 15 s (a plain string compare says before)
        ([("a", "2024-03-01T00:00:15.5Z", text), ("b", "2024-03-01T00:00:15Z", text)], "b"),
        ([("a", None, longer), ("b", "not a date", longer), ("c", "2030-01-01T00:00:00Z", text)], "c"),
    ]
    for members, expected in cases:
        for order in (members, members[::-1]):
            docs = [Document(t, i, {"date": d}) for i, d, t in order]
            kept = list(run_stages(iter(docs), [MinhashDedup()])[0])
            assert [d.id for d in kept] == [expected], (members, order)
            assert kept[0].metadata["minhash_cluster_id"] == expected
    assert capture_time_key("2024-03-01T00:00:15Z") < capture_time_key("2024-03-01T00:00:15.000001Z")
    assert capture_time_key("2009-01-01T00:00:00Z") < capture_time_key(None)
    assert survivor_key("2024-03-01T00:00:00Z", "abc", "x") < survivor_key("2024-03-01T00:00:00Z", "ab", "a")


def test_connected_components_chain_and_singletons():
    comp = connected_components([("b", "c"), ("a", "b"), ("x", "y")], ["a", "b", "c", "d", "x", "y"])
    assert comp == {"a": "a", "b": "a", "c": "a", "d": "d", "x": "x", "y": "x"}
    # edges may introduce ids; order of edges does not matter
    comp = connected_components([(5, 3), (9, 5), (1, 2)], [])
    assert comp == {5: 3, 3: 3, 9: 3, 1: 1, 2: 1}


def test_band_keys_stable_across_processes_and_pickle():
    hasher = MinHasher()
    text = "The quick brown fox jumps over the lazy dog near the river bank today."
    keys = hasher.band_keys(hasher.signature(text))
    assert len(keys) == 14 and len(set(keys)) == 14
    assert all(-(1 << 63) <= k < (1 << 63) for k in keys)
    code = ("from pipelines.minhash import MinHasher; h = MinHasher(); "
            f"print(h.band_keys(h.signature({text!r})))")
    # another interpreter with another str-hash seed must produce the same keys
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123"}, cwd=Path(__file__).resolve().parents[1])
    assert other.stdout.strip() == str(keys)
    clone = pickle.loads(pickle.dumps(hasher))
    assert clone.band_keys(clone.signature(text)) == keys


def test_rejects_inconsistent_bands():
    with pytest.raises(ValueError):
        MinhashDedup(num_perm=112, bands=10, rows=8)
    assert MinhashDedup(**{"num_perm": 112, "bands": 14, "rows": 8, "shingle_words": 5,
                           "seed": 1}).config()["scheme"] == "affine64"


def test_long_documents_are_permuted_in_blocks(monkeypatch):
    import pipelines.minhash as minhash_module
    monkeypatch.setattr(minhash_module, "_BLOCK", 100)  # force several blocks on a small doc
    hasher = MinHasher()
    text = random_text(random.Random(5), 777)
    np.testing.assert_array_equal(hasher.signature(text), datasketch_signature(hasher, text))
    assert hasher._buf.shape == (hasher.num_perm, 100)  # the scratch buffer stays one block wide
