"""Byte-level BPE (GPT-4 style) trained with HuggingFace `tokenizers`.

    tok_dir = train_tokenizer(texts, vocab_size=8192, out_dir="lake/tokenizer/<version>")
    tok = load_tokenizer(tok_dir)
    ids = tok.encode("any text")          # never contains a special id
    tok.decode(ids) == "any text"         # for every Unicode string (bytes are the base symbols)
    tok.bos_id, tok.special("<|im_start|>"), tok.token_bytes  # bits-per-byte needs the last one

Layout of the vocabulary (`vocab_size` is the total, so the model's embedding never changes):

    0..255                    the 256 bytes (initial alphabet: every string is encodable)
    256..M-1                  merges, learned on a sample of the corpus
    M..V-9                    `<|reserved_k|>` padding, only when the corpus had too few merges
    V-8..V-1                  the special tokens below, in this order (bos_id = V - 8)

Special tokens and ordinary text: the special tokens are added to the tokenizer (so `decode` and
`tokenizer.json` know them) but the wrapper sets `encode_special_tokens = True` on the HF object,
which turns off matching of added tokens inside input text. A document that literally contains
"<|im_start|>" therefore encodes as the ordinary bytes '<', '|', 'im', ...; special ids enter a
sequence only when code appends them explicitly (the shard writer's BOS, the chat renderer).
That flag is not saved in tokenizer.json, so always load through `load_tokenizer`: a bare
`tokenizers.Tokenizer.from_file` would match special strings in text.

Files written to `out_dir`: tokenizer.json (HF format), tokenizer_meta.json (vocab size, special
ids, digest, training stats) and token_bytes.npy (int32 UTF-8 byte length per id, 0 for specials).
"""
from __future__ import annotations

import hashlib
import json
import time
from functools import cached_property
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from pipelines.io import atomic_write_bytes, atomic_write_text

# cl100k (GPT-4): contractions, letters (with one leading non-letter), numbers in groups of 1-3,
# punctuation runs (with a leading space and trailing newlines), newlines, other whitespace; the
# `(?!\S)` leaves the last space of a run to start the next word (" the" stays one token).
# tiktoken writes `?+` and `++` (possessive); here each is followed by a disjoint class, so the
# plain quantifiers split identically (checked on 20k random strings) and Oniguruma runs ~17% faster.
SPLIT_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"""
                 r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+""")

BOS = "<|endoftext|>"
SPECIAL_TOKENS = (BOS, "<|im_start|>", "<|im_sep|>", "<|im_end|>",
                  "<|tool_start|>", "<|tool_end|>", "<|output_start|>", "<|output_end|>")

TOKENIZER_FILE, META_FILE, TOKEN_BYTES_FILE = "tokenizer.json", "tokenizer_meta.json", "token_bytes.npy"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map, which the ByteLevel pre-tokenizer uses for pieces."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


_UNICODE_TO_BYTE = {c: b for b, c in _bytes_to_unicode().items()}


def _empty_bpe():
    from tokenizers import Regex, Tokenizer as HFTokenizer, decoders, models, pre_tokenizers
    tok = HFTokenizer(models.BPE())
    # Regex split first (merges never cross word classes), then bytes -> ByteLevel symbols with
    # its own GPT-2 regex off (the split already happened) and no prefix space (lossless).
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    return tok


def sample_texts(texts: Iterable[str], max_chars: int | None = None,
                 max_docs: int | None = None, stats: dict | None = None) -> Iterator[str]:
    """The first documents of `texts` up to a character budget and a document cap (the last one
    is cut to fit). `stats` (a dict) receives docs/chars/bytes as the sample is consumed."""
    st = stats if stats is not None else {}
    st.update(docs=0, chars=0, bytes=0)
    for text in texts:
        if max_docs is not None and st["docs"] >= max_docs:
            break
        if max_chars is not None:
            left = max_chars - st["chars"]
            if left <= 0:
                break
            text = text[:left]
        st["docs"] += 1
        st["chars"] += len(text)
        st["bytes"] += len(text.encode("utf-8", "surrogatepass"))
        yield text


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir, max_chars: int | None = None,
                    max_docs: int | None = None, min_frequency: int = 2) -> Path:
    """Train byte-level BPE on (a sample of) `texts` and write the tokenizer files to `out_dir`.

    `vocab_size` counts everything: 256 bytes + merges + special tokens. Returns `out_dir`.
    """
    from tokenizers import pre_tokenizers, trainers
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)}")
    out_dir = Path(out_dir)
    tok = _empty_bpe()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS), min_frequency=min_frequency,
        show_progress=False, special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    sample: dict = {}
    t0 = time.perf_counter()
    tok.train_from_iterator(sample_texts(texts, max_chars, max_docs, sample), trainer)
    seconds = time.perf_counter() - t0
    learned = tok.get_vocab_size()
    # Pad a short vocabulary so the special ids are always the last ones of `vocab_size`.
    pad = vocab_size - len(SPECIAL_TOKENS) - learned
    tok.add_special_tokens([f"<|reserved_{i}|>" for i in range(pad)] + list(SPECIAL_TOKENS))
    assert tok.get_vocab_size() == vocab_size

    data = tok.to_str(pretty=False).encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    token_bytes = _token_byte_lengths(tok)
    meta = {
        "vocab_size": vocab_size,
        "bos_id": tok.token_to_id(BOS),
        "special_tokens": {s: tok.token_to_id(s) for s in SPECIAL_TOKENS},
        "reserved_tokens": pad,
        "merges": learned - 256,
        "digest": digest,
        "split_pattern": SPLIT_PATTERN,
        "training": {"docs": sample["docs"], "chars": sample["chars"], "bytes": sample["bytes"],
                     "seconds": round(seconds, 3), "min_frequency": min_frequency,
                     "max_chars": max_chars, "max_docs": max_docs},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / TOKENIZER_FILE, data)
    buf = _npy_bytes(token_bytes)
    atomic_write_bytes(out_dir / TOKEN_BYTES_FILE, buf)
    # Meta last: its presence marks a complete tokenizer directory.
    atomic_write_text(out_dir / META_FILE, json.dumps(meta, indent=2))
    return out_dir


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io
    b = io.BytesIO()
    np.save(b, arr)
    return b.getvalue()


def _token_byte_lengths(tok) -> np.ndarray:
    """UTF-8 byte length of every id (its ByteLevel symbols map 1:1 to bytes); 0 for added tokens."""
    out = np.zeros(tok.get_vocab_size(), dtype=np.int32)
    added = set(tok.get_added_tokens_decoder())
    for piece, i in tok.get_vocab(with_added_tokens=False).items():
        if i not in added:
            out[i] = len(piece)
    return out


class Tokenizer:
    """A trained tokenizer directory. Encoding never produces special ids (see module doc)."""

    def __init__(self, path):
        from tokenizers import Tokenizer as HFTokenizer
        path = Path(path)
        self.dir = path.parent if path.is_file() else path
        self.hf = HFTokenizer.from_file(str(self.dir / TOKENIZER_FILE))
        self.hf.encode_special_tokens = True  # literal "<|...|>" in text stays ordinary bytes
        meta_file = self.dir / META_FILE
        self.meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        self._special = {s: self.hf.token_to_id(s) for s in SPECIAL_TOKENS}
        missing = [s for s, i in self._special.items() if i is None]
        if missing:
            raise ValueError(f"{self.dir}: tokenizer lacks special tokens {missing}")

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    @property
    def bos_id(self) -> int:
        return self._special[BOS]

    @property
    def digest(self) -> str:
        return self.meta.get("digest") or hashlib.sha256(
            (self.dir / TOKENIZER_FILE).read_bytes()).hexdigest()

    def special(self, name: str) -> int:
        """Id of a special token, by full name ("<|im_start|>") or short name ("im_start")."""
        key = name if name.startswith("<|") else f"<|{name}|>"
        return self._special[key]

    @property
    def special_ids(self) -> dict[str, int]:
        return dict(self._special)

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Many texts at once on the Rust thread pool (offsets are not computed)."""
        return [e.ids for e in self.hf.encode_batch_fast(texts, add_special_tokens=False)]

    def decode(self, ids, skip_special: bool = False) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    @cached_property
    def token_bytes(self) -> np.ndarray:
        f = self.dir / TOKEN_BYTES_FILE
        return np.load(f) if f.exists() else _token_byte_lengths(self.hf)

    def piece(self, i: int) -> bytes:
        """The raw bytes of one token (a special token's name for specials)."""
        s = self.hf.id_to_token(int(i))
        if s is None:
            raise IndexError(i)
        if int(i) in self._added_ids:
            return s.encode("utf-8")
        return bytes(_UNICODE_TO_BYTE[c] for c in s)

    @cached_property
    def _added_ids(self) -> frozenset:
        return frozenset(self.hf.get_added_tokens_decoder())

    def is_special(self, i: int) -> bool:
        return int(i) in self._added_ids


def load_tokenizer(path) -> Tokenizer:
    """A tokenizer directory (or its tokenizer.json)."""
    return Tokenizer(path)


def bytes_per_token(tok: Tokenizer, texts: Iterable[str], batch: int = 256) -> dict:
    """Compression on some texts: UTF-8 bytes / tokens (BOS not counted)."""
    n_bytes = n_tokens = docs = 0
    chunk: list[str] = []

    def flush():
        nonlocal n_tokens
        n_tokens += sum(len(ids) for ids in tok.encode_batch(chunk))
        chunk.clear()

    for t in texts:
        chunk.append(t)
        docs += 1
        n_bytes += len(t.encode("utf-8"))
        if len(chunk) >= batch:
            flush()
    flush()
    return {"docs": docs, "bytes": n_bytes, "tokens": n_tokens,
            "bytes_per_token": n_bytes / n_tokens if n_tokens else None}


def latest_tokenizer(lake_root) -> Path | None:
    """The most recently written complete tokenizer under `<lake>/tokenizer/`, if any."""
    base = Path(lake_root) / "tokenizer"
    found = [p for p in base.glob(f"*/{META_FILE}") if not p.parent.name.startswith((".", "_"))] \
        if base.is_dir() else []
    return max(found, key=lambda p: p.stat().st_mtime).parent if found else None
