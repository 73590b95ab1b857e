"""Byte-level BPE tokenizer: lossless on any Unicode, special tokens never come from text,
vocabulary layout fixed (specials last), files and byte lengths consistent, training deterministic."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.tokenizer import (BOS, SPECIAL_TOKENS, bytes_per_token, load_tokenizer, sample_texts,
                                 train_tokenizer)


def prose(max_chars: int = 200_000) -> list[str]:
    from pydoc_data.topics import topics
    texts, n = [], 0
    for k in sorted(topics):
        texts.append(topics[k])
        n += len(topics[k])
        if n >= max_chars:
            break
    return texts


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return train_tokenizer(prose(), vocab_size=1000, out_dir=tmp_path_factory.mktemp("tok"),
                           max_chars=200_000)


@pytest.fixture(scope="module")
def tok(tok_dir):
    return load_tokenizer(tok_dir)


_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(st.text())
def test_roundtrip_arbitrary_unicode(tok, s):
    ids = tok.encode(s)
    assert tok.decode(ids) == s
    assert all(not tok.is_special(i) for i in ids)
    assert int(tok.token_bytes[ids].sum()) == len(s.encode("utf-8"))


@_SETTINGS
@given(st.lists(st.sampled_from(["😀", "👩‍👩‍👧", "🇫🇷", "中文字符", "日本語の", "한국어", "\x00", "\x1b[31m",
                                 "\r\n", "\t", " " * 37, "\n\n\n", "\u200b", "é", "e\u0301", "ﬁ",
                                 "<|endoftext|>", "<|im_start|>", "<|", "|>", "'s", "123456", "x"]),
                max_size=40))
def test_roundtrip_emoji_cjk_control_whitespace(tok, parts):
    s = "".join(parts)
    ids = tok.encode(s)
    assert tok.decode(ids) == s
    assert not any(tok.is_special(i) for i in ids)


def test_long_whitespace_and_binaryish_runs(tok):
    for s in [" " * 10_000, "\n" * 5000 + "a", "\t \r\n" * 2000, "".join(map(chr, range(0, 0x250)))]:
        assert tok.decode(tok.encode(s)) == s


@_SETTINGS
@given(st.text(max_size=30), st.sampled_from(SPECIAL_TOKENS), st.text(max_size=30))
def test_special_strings_in_text_are_ordinary(tok, before, special, after):
    s = before + special + after
    ids = tok.encode(s)
    assert not any(i in tok.special_ids.values() for i in ids)
    assert tok.decode(ids) == s


def test_vocabulary_layout_and_files(tok, tok_dir):
    assert tok.vocab_size == 1000
    ids = [tok.special(s) for s in SPECIAL_TOKENS]
    assert ids == list(range(1000 - len(SPECIAL_TOKENS), 1000))  # reserved after the merges
    assert tok.bos_id == tok.special(BOS) == tok.special("endoftext")
    meta = json.loads((tok_dir / "tokenizer_meta.json").read_text())
    assert meta["special_tokens"][BOS] == tok.bos_id and meta["vocab_size"] == 1000
    assert meta["training"]["chars"] == 200_000
    tb = np.load(tok_dir / "token_bytes.npy")
    assert tb.dtype == np.int32 and len(tb) == 1000
    assert (tb[ids] == 0).all() and (tb[:256] == 1).all() and (tb[256:ids[0]] >= 2).all()
    # Every byte is a base symbol, and a byte's piece is that byte.
    assert [tok.piece(i) for i in range(256)] != [] and sorted(tok.piece(i) for i in range(256)) == \
        [bytes([b]) for b in range(256)]
    # Chat protocol: specials are appended explicitly and decode to their names.
    convo = [tok.special("im_start")] + tok.encode("user") + [tok.special("im_sep")] + tok.encode("hi") + \
        [tok.special("im_end")]
    assert tok.decode(convo) == "<|im_start|>user<|im_sep|>hi<|im_end|>"


def test_merges_compress_english(tok):
    stats = bytes_per_token(tok, prose(300_000)[-5:])
    assert stats["bytes_per_token"] > 2.5  # 1000-token vocab on English prose


def test_training_is_deterministic_and_short_corpus_is_padded(tmp_path, tok_dir):
    again = train_tokenizer(prose(), 1000, tmp_path / "again", max_chars=200_000)
    assert (again / "tokenizer.json").read_bytes() == (tok_dir / "tokenizer.json").read_bytes()
    small = load_tokenizer(train_tokenizer(["tiny corpus, tiny corpus"], 600, tmp_path / "small"))
    assert small.vocab_size == 600 and small.bos_id == 592 and small.meta["reserved_tokens"] > 0
    assert small.decode(small.encode("日本語 unseen")) == "日本語 unseen"


def test_sample_budget():
    stats = {}
    out = list(sample_texts(["abcd", "efgh", "ijkl"], max_chars=6, stats=stats))
    assert out == ["abcd", "ef"] and stats["chars"] == 6 and stats["docs"] == 2
    assert list(sample_texts(["a", "b", "c"], max_docs=2)) == ["a", "b"]


def test_cli_shows_ids_pieces_and_count(tok_dir, capsys):
    from pipelines.cli import main
    assert main(["tokenize", "Hi <|im_end|> 😀", "--tokenizer", str(tok_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    tok = load_tokenizer(tok_dir)
    ids = tok.encode("Hi <|im_end|> 😀")
    assert [int(line.split("\t")[0]) for line in out[:-1]] == ids
    assert "\\xf0" in "".join(out) and out[-1].startswith(f"{len(ids)} tokens, 15 characters, 18 bytes")
    assert main(["tokenize", "Hi", "--tokenizer", str(tok_dir), "--color", "always"]) == 0
    assert "\x1b[30;44m" in capsys.readouterr().out


def test_split_pattern_is_cl100k():
    from tokenizers import Regex, pre_tokenizers

    from pipelines.tokenizer import SPLIT_PATTERN
    split = pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated")
    pieces = [p for p, _ in split.pre_tokenize_str("Hello world's 12345 !!!\n\n  x\tDON'T")]
    assert pieces == ["Hello", " world", "'s", " ", "123", "45", " !!!\n\n", " ", " x", "\tDON", "'T"]
