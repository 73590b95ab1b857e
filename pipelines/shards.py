"""Token shards: flat token arrays on disk that training reads by memmap.

    <root>/manifest.json
    <root>/{train,val}/shard_00000.bin   256-byte header + little-endian uint16/uint32 tokens
    <root>/{train,val}/shard_00000.idx   uint64 start offset (within the shard) of each document
                                         that starts in it
    <root>/token_counts/*.parquet        id, split, token_count (text tokens, BOS not counted)

Header: magic b"C2CTOKS\\0", version uint32 (1), itemsize uint32 (2|4), token count uint64,
document count uint64, zeros up to 256 bytes. Each document is [BOS] + tokens(text); documents
are concatenated in the order written and may continue into the next shard, so every shard but
the last holds exactly `shard_tokens` tokens. A manifest shard entry's `name` is the file stem
(`shard_00000`); `sha256` is the digest of its .bin file.

Train/val split: a document goes to val when blake2b(id) % 10000 < val_fraction * 10000, so a
document keeps its split however the corpus is partitioned, re-run or grown.

Writers: `write_token_shards(docs, out_root, tokenizer, cfg)` encodes documents in the order
given (the Spark job, pipelines/spark/tokens.py, gives them in id order and reuses `ShardSetWriter`
for its final concatenation). Reader: `TokenShards(root, split)`.

Opening checks what is cheap (a stat per file): the manifest is there and readable, every shard it
lists exists with the size its header and the manifest give, every index holds one offset per
document. `verify_digests=True` (or `verify()`) also recomputes the sha256 digests. A damaged set
raises InputError naming the file; the way out is to rebuild it (REBUILD).
"""
from __future__ import annotations

import hashlib
import json
import struct
from functools import cached_property
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.errors import InputError
from pipelines.io import atomic_write_text, staged

MAGIC = b"C2CTOKS\0"
VERSION = 1
HEADER_BYTES = 256
_HEADER = struct.Struct("<8sIIQQ")
SPLITS = ("train", "val")
MANIFEST = "manifest.json"
COUNTS_DIR = "token_counts"
COUNTS_SCHEMA = pa.schema([("id", pa.string()), ("split", pa.string()), ("token_count", pa.int64())])
DEFAULTS = {"val_fraction": 0.01, "shard_tokens": 10_000_000, "encode_batch_docs": 512}
REBUILD = "re-materialize the `token_shards` asset to rebuild it"


def tokens_config(cfg: dict | None) -> dict:
    """The `tokenizer` section of a data config (or the section itself), with defaults."""
    cfg = cfg or {}
    section = cfg["tokenizer"] if isinstance(cfg.get("tokenizer"), dict) else cfg
    return {**DEFAULTS, **section}


def split_of(doc_id: str, val_fraction: float) -> str:
    h = int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "big")
    return "val" if h % 10_000 < round(val_fraction * 10_000) else "train"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


class SplitWriter:
    """Streams documents of one split into fixed-size shards (constant memory)."""

    def __init__(self, directory: Path, dtype: np.dtype, shard_tokens: int):
        self.dir, self.dtype, self.shard_tokens = Path(directory), np.dtype(dtype), int(shard_tokens)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shards: list[dict] = []
        self.tokens = self.documents = self.bytes = 0
        self._f = None
        self._in_shard = 0              # tokens in the open shard
        self._starts: list[np.ndarray] = []  # local doc starts of the open shard

    def add(self, tokens: np.ndarray, doc_lengths, text_bytes: int = 0) -> None:
        """Append documents already laid out as [BOS]+ids each; `doc_lengths` are their sizes."""
        lengths = np.asarray(doc_lengths, dtype=np.int64)
        if lengths.sum() != len(tokens):
            raise ValueError("doc_lengths do not add up to the tokens given")
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else lengths
        self.documents += len(lengths)
        self.bytes += int(text_bytes)
        pos, i = 0, 0  # position in `tokens`, next document start not yet placed
        while pos < len(tokens):
            if self._f is None:
                self._open()
            take = min(self.shard_tokens - self._in_shard, len(tokens) - pos)
            j = i + int(np.searchsorted(starts[i:], pos + take, side="left"))
            self._starts.append(starts[i:j] - pos + self._in_shard)
            i = j
            self._f.write(np.ascontiguousarray(tokens[pos:pos + take], dtype=self.dtype).tobytes())
            self._in_shard += take
            pos += take
            if self._in_shard >= self.shard_tokens:
                self._close()
        self.tokens += len(tokens)

    def add_document(self, bos_id: int, ids, text_bytes: int = 0) -> None:
        arr = np.empty(len(ids) + 1, dtype=self.dtype)
        arr[0] = bos_id
        arr[1:] = ids
        self.add(arr, [len(arr)], text_bytes)

    def _open(self) -> None:
        self._path = self.dir / f"shard_{len(self.shards):05d}.bin"
        self._f = open(self._path, "wb")
        self._f.write(b"\0" * HEADER_BYTES)
        self._in_shard, self._starts = 0, []

    def _close(self) -> None:
        starts = np.concatenate(self._starts).astype("<u8") if self._starts else np.zeros(0, "<u8")
        header = _HEADER.pack(MAGIC, VERSION, self.dtype.itemsize, self._in_shard, len(starts))
        self._f.seek(0)
        self._f.write(header.ljust(HEADER_BYTES, b"\0"))
        self._f.close()
        self._f = None
        idx = self._path.with_suffix(".idx")
        idx.write_bytes(starts.tobytes())
        self.shards.append({"name": self._path.stem, "tokens": self._in_shard,
                            "documents": len(starts), "sha256": _sha256(self._path),
                            "idx_sha256": _sha256(idx)})

    def finish(self) -> dict:
        if self._f is not None:
            self._close()
        return {"tokens": self.tokens, "documents": self.documents, "bytes": self.bytes,
                "shards": self.shards}


class ShardSetWriter:
    """The train and val writers of one output directory, and its manifest."""

    def __init__(self, root, vocab_size: int, bos_id: int, tokenizer_digest: str, cfg: dict):
        self.root, self.cfg = Path(root), tokens_config(cfg)
        self.vocab_size, self.bos_id, self.tokenizer_digest = vocab_size, bos_id, tokenizer_digest
        self.dtype = token_dtype(vocab_size)
        self.splits = {s: SplitWriter(self.root / s, self.dtype, self.cfg["shard_tokens"]) for s in SPLITS}

    def finish(self) -> dict:
        manifest = {"version": VERSION, "vocab_size": self.vocab_size, "dtype": self.dtype.name,
                    "bos_id": self.bos_id, "tokenizer_digest": self.tokenizer_digest,
                    "shard_tokens": int(self.cfg["shard_tokens"]),
                    "split_rule": {"hash": "blake2b-64(id) % 10000", "val_fraction": self.cfg["val_fraction"]},
                    "splits": {s: w.finish() for s, w in self.splits.items()}}
        atomic_write_text(self.root / MANIFEST, json.dumps(manifest, indent=1))
        return manifest


def _id_text(doc) -> tuple[str, str]:
    if isinstance(doc, tuple):
        return doc[0], doc[1]
    if isinstance(doc, dict):
        return doc["id"], doc["text"]
    return doc.id, doc.text


def _by_split(batch, encoded, val_fraction) -> dict[str, list]:
    out: dict[str, list] = {}
    for doc, ids in zip(batch, encoded):
        out.setdefault(split_of(doc[0], val_fraction), []).append((doc, ids))
    return out


def pack_documents(bos_id: int, docs_ids, dtype) -> tuple[np.ndarray, np.ndarray, int]:
    """[((id, text), ids), ...] -> (concatenated [BOS]+ids tokens, lengths, UTF-8 text bytes)."""
    bos = np.array([bos_id], dtype=dtype)
    parts, lengths, nbytes = [], [], 0
    for (_, text), ids in docs_ids:
        parts.append(bos)
        parts.append(np.array(ids, dtype=dtype))
        lengths.append(len(ids) + 1)
        nbytes += len(text.encode("utf-8"))
    tokens = np.concatenate(parts) if parts else np.zeros(0, dtype)
    return tokens, np.array(lengths, dtype=np.int64), nbytes


def write_token_shards(docs: Iterable, out_root, tokenizer, cfg: dict | None = None) -> dict:
    """Encode documents (Document, dict with id/text, or (id, text)) in the order given into
    `out_root` (train/val shards, manifest, token_counts), atomically. Returns the manifest."""
    from pipelines.tokenizer import Tokenizer, load_tokenizer
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
    cfg = tokens_config(cfg)
    with staged(out_root, kind="token_shards") as stage:
        writer = ShardSetWriter(stage, tok.vocab_size, tok.bos_id, tok.digest, cfg)
        counts = {"id": [], "split": [], "token_count": []}
        batch: list[tuple[str, str]] = []

        def flush():
            encoded = tok.encode_batch([t for _, t in batch])
            for split, docs_ids in _by_split(batch, encoded, cfg["val_fraction"]).items():
                tokens, lengths, nbytes = pack_documents(tok.bos_id, docs_ids, writer.dtype)
                writer.splits[split].add(tokens, lengths, nbytes)
                for (doc_id, _), ids in docs_ids:
                    counts["id"].append(doc_id)
                    counts["split"].append(split)
                    counts["token_count"].append(len(ids))
            batch.clear()

        for doc in docs:
            batch.append(_id_text(doc))
            if len(batch) >= cfg["encode_batch_docs"]:
                flush()
        flush()
        (stage / COUNTS_DIR).mkdir()
        pq.write_table(pa.table(counts, schema=COUNTS_SCHEMA), stage / COUNTS_DIR / "part-00000.parquet")
        manifest = writer.finish()
    return manifest


write_shards = write_token_shards  # the name the shard contract uses


def _read_manifest(root: Path) -> dict:
    path = root / MANIFEST
    if not root.is_dir():
        raise InputError(f"no token shards at {root}: {'it is not a directory' if root.exists() else 'it does not exist'}"
                         "; materialize the `token_shards` asset, or pass the directory it wrote")
    if not path.is_file():
        what = "is empty" if not any(root.iterdir()) else f"has no {MANIFEST}"
        raise InputError(f"no token shards at {root}: it {what}; materialize the `token_shards` asset, "
                         "or pass the directory it wrote")
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise InputError(f"{path} cannot be read ({e}); {REBUILD}") from e
    if manifest.get("version") != VERSION:
        raise InputError(f"{path}: shard format version {manifest.get('version')!r}, this code reads "
                         f"{VERSION}; {REBUILD}")
    return manifest


def _check_shard(path: Path, entry: dict, itemsize: int) -> None:
    """The shard and its index exist with the sizes the manifest implies (a stat each, no reading
    beyond the header): a truncated copy fails here, not as a memmap error inside training."""
    tokens, docs = int(entry["tokens"]), int(entry["documents"])
    want = HEADER_BYTES + tokens * itemsize
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError(f"{path} is missing (listed in the manifest); {REBUILD}") from None
    if size >= _HEADER.size:
        with open(path, "rb") as f:
            magic, version, isize, n, n_docs = _HEADER.unpack(f.read(_HEADER.size))
        if (magic, version, isize, n, n_docs) != (MAGIC, VERSION, itemsize, tokens, docs):
            raise InputError(f"{path}: header ({n} tokens, {n_docs} documents, {isize}-byte tokens) "
                             f"does not match the manifest ({tokens}, {docs}, {itemsize}); {REBUILD}")
    if size != want:
        raise InputError(f"{path} is {size} bytes, {want} expected ({HEADER_BYTES}-byte header + {tokens} "
                         f"tokens of {itemsize} bytes): the file is {'truncated' if size < want else 'damaged'}; "
                         f"{REBUILD}")
    idx = path.with_suffix(".idx")
    idx_size = idx.stat().st_size if idx.is_file() else None
    if idx_size != 8 * docs:
        found = "missing" if idx_size is None else f"{idx_size} bytes"
        raise InputError(f"{idx} is {found}, {8 * docs} bytes expected ({docs} document offsets); {REBUILD}")


class TokenShards:
    """Read access to one split: `tokens(start, length)` spans shard boundaries. Sizes are
    checked on opening, sha256 digests too with `verify_digests=True` (InputError if damaged)."""

    def __init__(self, root, split: str = "train", verify_digests: bool = False):
        self.root, self.split = Path(root), split
        self.manifest = _read_manifest(self.root)
        splits = self.manifest.get("splits") or {}
        if split not in splits:
            raise InputError(f"{self.root / MANIFEST} has no {split!r} split (it has "
                             f"{', '.join(map(repr, splits)) or 'none'}); {REBUILD}")
        info = splits[split]
        try:
            self.dtype = np.dtype(self.manifest["dtype"]).newbyteorder("<")
            self.vocab_size = int(self.manifest["vocab_size"])
            self.bos_id = int(self.manifest["bos_id"])
            self.num_documents = int(info["documents"])
            self.shard_names = [s["name"] for s in info["shards"]]
            self._maps, offsets = [], [0]
            for s in info["shards"]:
                path = self.root / split / f"{s['name']}.bin"
                _check_shard(path, s, self.dtype.itemsize)
                n = int(s["tokens"])
                self._maps.append(np.memmap(path, dtype=self.dtype, mode="r", offset=HEADER_BYTES, shape=(n,)))
                offsets.append(offsets[-1] + n)
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{self.root / MANIFEST} is malformed ({type(e).__name__}: {e}); {REBUILD}") from e
        self._offsets = np.asarray(offsets, dtype=np.int64)
        self.num_tokens = int(self._offsets[-1])
        if self.num_tokens != info["tokens"]:
            raise InputError(f"{self.root / MANIFEST}: the {split} shards hold {self.num_tokens} tokens, "
                             f"the split total says {info['tokens']}; {REBUILD}")
        if verify_digests:
            self.verify()

    def __len__(self) -> int:
        return self.num_tokens

    def tokens(self, start: int, length: int) -> np.ndarray:
        if start < 0 or length < 0 or start + length > self.num_tokens:
            raise IndexError(f"tokens [{start}, {start + length}) outside [0, {self.num_tokens})")
        out = np.empty(length, dtype=np.int64)
        k = int(np.searchsorted(self._offsets, start, side="right")) - 1
        done = 0
        while done < length:
            local = start + done - int(self._offsets[k])
            n = min(length - done, len(self._maps[k]) - local)
            out[done:done + n] = self._maps[k][local:local + n]
            done += n
            k += 1
        return out

    @cached_property
    def _doc_starts(self) -> np.ndarray:
        parts = [np.fromfile(self.root / self.split / f"{name}.idx", dtype="<u8").astype(np.int64) + off
                 for name, off in zip(self.shard_names, self._offsets[:-1])]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def doc_starts(self) -> np.ndarray:
        """Global token offset of every document's BOS, in order."""
        return self._doc_starts

    def document(self, i: int) -> np.ndarray:
        """Tokens of document i, without its BOS."""
        starts = self._doc_starts
        end = int(starts[i + 1]) if i + 1 < len(starts) else self.num_tokens
        return self.tokens(int(starts[i]) + 1, end - int(starts[i]) - 1)

    def rank_windows(self, rank: int, world: int, seq_len: int) -> np.ndarray:
        """Start offsets of this rank's training windows of seq_len + 1 tokens (inputs + shifted
        targets), taken every seq_len tokens. Window w goes to rank w % world and every rank gets
        the same number (the remainder is dropped) so all ranks run the same number of steps; a
        loader's position is an index into this array."""
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} not in [0, {world})")
        n = max(0, (self.num_tokens - 1) // seq_len) // world
        return (np.arange(n, dtype=np.int64) * world + rank) * seq_len

    def window(self, start: int, seq_len: int) -> np.ndarray:
        return self.tokens(start, seq_len + 1)

    def verify(self) -> bool:
        """Recompute every shard's and index's sha256 against the manifest: True, or InputError
        naming the first file that differs."""
        for s in self.manifest["splits"][self.split]["shards"]:
            for suffix, key in ((".bin", "sha256"), (".idx", "idx_sha256")):
                path = self.root / self.split / f"{s['name']}{suffix}"
                if key in s and (got := _sha256(path)) != s[key]:
                    raise InputError(f"{path}: sha256 {got[:16]}... differs from the manifest's "
                                     f"{s[key][:16]}...: the file is damaged; {REBUILD}")
        return True
