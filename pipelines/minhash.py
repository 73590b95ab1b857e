"""MinHash near-duplicate removal, FineWeb style (fineweb-recipe.md, "MinHash near-dedup").

Pieces, each reusable by the Spark version (pipelines/spark):
- `normalize(text)`: lowercase, accents stripped (NFD, combining marks dropped), punctuation and
  control characters deleted, every decimal digit -> "0", whitespace collapsed to one space.
- `MinHasher.signature(text)`: 112 MinHash values over 5-word shingles, bit-identical to
  `datasketch.MinHash(num_perm=112, seed=seed, scheme="affine64", hashfunc=shingle_hash)`
  fed with the same shingles (tests/test_minhash.py checks this), but vectorized:
    * every word is hashed by numpy at once (a 64-bit polynomial over its UTF-8 bytes from one
      prefix sum, then the MurmurHash3 finalizer; see "hashing" below for why);
    * a shingle's hash folds its word hashes with 64-bit multiply/xor-shift steps, done for all
      shingles of a document at once in numpy (`shingle_hash` is the scalar reference);
    * the permutations are datasketch 2.0's "affine64" scheme: the shingle hash is pre-mixed
      with the MurmurHash3 64-bit finalizer, then `a_k * h + b_k mod 2^64` with odd `a_k`
      (a bijection, so permuting cannot create collisions) -- one (shingles x 112) broadcast.
  Why affine64 and not "(a*h + b) mod (2^61 - 1)": FineWeb/datatrove compute that formula in
  numpy uint64, so the product already wraps mod 2^64 before the mod-p; it is not a true
  mod-p permutation either. affine64 is the 64-bit scheme of datasketch 2.0 (the library
  the recipe's numbers were measured with), has the same LSH statistics and can be checked
  bit-exactly against a reference implementation.
- `MinHasher.band_keys(sig)`: one stable signed 64-bit key per band (blake2b of band index
  and its 8 values), signed so it fits Spark's LongType / Parquet int64 unchanged.
- `connected_components(edges, ids)`: union-find; the cluster id is the smallest id.
- `MinhashDedup`: the single-machine stage (buffers one crawl, keeps one document per cluster,
  drops the rest with reason `duplicate`).

Which document of a cluster is kept (`survivor_key`): the earliest capture (WARC-Date), then the
longest text, then the smallest id. datatrove's MinhashDedupCluster keeps (mostly: its union-find
does not always root at the smallest) the first document in reading order, and FineWeb reads
each dump's WARC files in crawl order, so its survivor is roughly the first capture; we make that
exact and independent of how files are listed or partitioned. The first capture is the best
guess at the original, since mirrors and syndicated copies appear after the page they copy, across
dumps more than within one; equal dates (one page under two URLs in one fetch second) go to the
fuller text. Both this stage and the Spark one (pipelines/spark/dedup.py) keep by this key, and a
cluster's id is the id of the document kept. (The smallest id, kept before, is a random pick: record
ids are UUIDs.)

Short documents: datatrove builds 5-grams with nltk, so a document of fewer than 5 words gets
no shingle and is never deduplicated. We instead hash the whole (normalized) document as one
shingle, so exact short duplicates are still found; a document that normalizes to nothing has
no signature and is never a duplicate.
"""
from __future__ import annotations

import hashlib
import re
import struct
import unicodedata
from typing import Hashable, Iterable, Iterator, Sequence

import numpy as np

from pipelines.document import Document
from pipelines.runner import Stage, StageContext

MASK64 = (1 << 64) - 1

# datatrove's punctuation list (it also holds symbols such as + = ^ ~ | < > $ that Unicode does
# not class as punctuation); deleted in addition to every Unicode P* character.
_DATATROVE_PUNCT = "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»"

_DATATROVE_PUNCT_SET = frozenset(_DATATROVE_PUNCT) - {"１"}  # "１" is a digit: it becomes "0"


def _char_norm(ch: str) -> str:
    """Normalization of one character after lowercasing and NFD: "" (punctuation, datatrove's
    symbols, controls, format characters, nonspacing marks), "0" (decimal digits), " "
    (whitespace) or the character itself."""
    if ch.isspace():
        return " "
    cat = unicodedata.category(ch)
    if cat == "Nd":
        return "0"
    if cat[0] == "P" or cat in ("Mn", "Cc", "Cf") or ch in _DATATROVE_PUNCT_SET:
        return ""
    return ch


# ASCII part of `_char_norm` as bytes.translate arguments: digits -> "0", the 10 ASCII whitespace
# characters -> " " (so the numpy word splitter only looks for 0x20), the "" ones deleted.
_ASCII_TABLE = bytes.maketrans(b"123456789\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f", b"000000000" + b" " * 9)
_ASCII_DELETE = bytes(c for c in range(128) if _char_norm(chr(c)) == "")
_ASCII_BYTES = bytes(range(128))


_CHAR_MAP: dict[str, bytes | None] = {}  # non-ASCII char -> its normalized UTF-8 (None: unchanged)


def _char_map(ch: str) -> bytes | None:
    out = _CHAR_MAP.get(ch, b"?")
    if out == b"?":
        # lower, then NFD ("é" -> "e" + U+0301), then `_char_norm` (drops the Mn mark, ...)
        norm = "".join(map(_char_norm, unicodedata.normalize("NFD", ch.lower())))
        out = _CHAR_MAP[ch] = None if norm == ch else norm.encode("utf-8")
    return out


def normalized_bytes(text: str) -> bytes:
    """UTF-8 of the normalized text before whitespace is collapsed (the hot path's input).

    Every character is mapped on its own: lowercase, NFD, then deleted (punctuation, controls,
    format characters, nonspacing marks), "0" (decimal digits), " " (whitespace) or kept.
    (Per character, so Greek final sigma is not special-cased and marks are not reordered.)"""
    # str.translate with a dict that deletes characters runs at ~120 ns/char and str.lower at
    # ~10 ns/char, the bulk of a signature's cost. So ASCII goes through bytes.lower and
    # bytes.translate (UTF-8 multi-byte sequences only hold bytes >= 0x80, which those leave
    # alone), and each distinct non-ASCII character of the page gets one bytes.replace pass
    # (UTF-8 is self-synchronizing, so replacing a whole character's encoding is exact).
    # "replace": a lone surrogate (broken input) becomes "?", which is then deleted
    data = text.encode("utf-8", "replace").lower()
    if not text.isascii():
        for ch in set(data.translate(None, _ASCII_BYTES).decode("utf-8")):
            repl = _char_map(ch)
            if repl is not None:
                data = data.replace(ch.encode("utf-8"), repl)
    return data.translate(_ASCII_TABLE, _ASCII_DELETE)


def normalized_words(text: str) -> list[str]:
    return normalized_bytes(text).decode("utf-8").split()


def normalize(text: str) -> str:
    """FineWeb-style normalization used for shingling (see module docstring)."""
    return " ".join(normalized_words(text))


# --------------------------------------------------------------------------------------------
# hashing
#
# Word hash: a polynomial over the word's UTF-8 bytes, sum(b_j * P^j) mod 2^64, xor its length,
# through the MurmurHash3 64-bit finalizer. Chosen because numpy computes it for every word of a
# page at once from one prefix sum (no Python loop, no per-word dict lookups, which cost more
# than everything else together); it is deterministic everywhere (no seed, no Python hash()).
# Polynomial hashes mod 2^64 have known constructed collisions (Thue-Morse strings of >= 2^11
# bytes); for natural-language words that is irrelevant and a rare collision only merges two
# shingles. `word_hash` below is the plain-Python reference.

_P = 0x100000001B3  # the FNV-1 64-bit prime: odd, so invertible mod 2^64
_P_INV = pow(_P, -1, 1 << 64)
_LEN_MUL = 0x9E3779B97F4A7C15


def _fmix64_int(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & MASK64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & MASK64
    return h ^ (h >> 33)


def word_hash(word: str) -> int:
    """64-bit hash of one normalized word (scalar reference of the vectorized version)."""
    data = word.encode("utf-8")
    v, p = 0, 1
    for byte in data:
        v = (v + byte * p) & MASK64
        p = (p * _P) & MASK64
    return _fmix64_int(v ^ ((len(data) * _LEN_MUL) & MASK64))


# Fold constants: golden-ratio multiplier (odd, so each step is a bijection of the accumulator)
# and an arbitrary start value (digits of pi), so that a 1-word shingle is not its word hash.
_FOLD_INIT = 0x243F6A8885A308D3
_FOLD_MUL = 0x9E3779B97F4A7C15
_FOLD_SHIFT = 29


def shingle_hash(words: Sequence[str]) -> int:
    """Scalar reference of the vectorized shingle hash (what datasketch's hashfunc computes)."""
    acc = _FOLD_INIT
    for w in words:
        acc = ((acc ^ word_hash(w)) * _FOLD_MUL) & MASK64
        acc ^= acc >> _FOLD_SHIFT
    return acc


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3 64-bit finalizer, exactly as datasketch's affine64 pre-mix."""
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def affine64_permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) exactly as datasketch 2.0 draws them for scheme="affine64" (odd a)."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 63, num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = gen.randint(0, 1 << 64, num_perm, dtype=np.uint64)
    return a, b


_BLOCK = 8192  # shingles per permutation block (8192 x 112 x 8 bytes = 7.3 MB)


class MinHasher:
    def __init__(self, num_perm: int = 112, bands: int = 14, rows: int = 8, shingle_words: int = 5,
                 seed: int = 1):
        if bands * rows != num_perm:
            raise ValueError(f"bands * rows must equal num_perm ({bands} * {rows} != {num_perm})")
        if shingle_words < 1:
            raise ValueError("shingle_words must be >= 1")
        self.num_perm, self.bands, self.rows = num_perm, bands, rows
        self.shingle_words, self.seed = shingle_words, seed
        a, b = affine64_permutations(num_perm, seed)
        self._a, self._b = a[:, None], b[:, None]
        self._band_fmt = struct.Struct(f"<Q{rows}Q")
        self._buf: np.ndarray | None = None  # scratch space, per process (not thread-safe)
        self._pow = self._pow_inv = np.ones(0, dtype=np.uint64)  # P^j, P^-j mod 2^64, grown on demand

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_buf"], state["_band_fmt"] = None, None  # scratch and Struct: rebuilt, not shipped
        state["_pow"] = state["_pow_inv"] = np.ones(0, dtype=np.uint64)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._band_fmt = struct.Struct(f"<Q{self.rows}Q")

    # -- shingles --------------------------------------------------------------------------
    def words(self, text: str) -> list[str]:
        return normalized_words(text)

    def shingles(self, text: str) -> list[tuple[str, ...]]:
        """The shingles as word tuples (for reference implementations and tests)."""
        w = self.words(text)
        n = self.shingle_words
        if not w:
            return []
        if len(w) < n:
            return [tuple(w)]
        return [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]

    def _powers(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self._pow) < n:
            size = max(n, 2 * len(self._pow), 1 << 14)
            pw, pi = np.empty(size, dtype=np.uint64), np.empty(size, dtype=np.uint64)
            pw[0] = pi[0] = 1
            # doubling: P^(k..2k-1) = P^(0..k-1) * P^k; wraps mod 2^64 as intended
            k = 1
            while k < size:
                m = min(k, size - k)
                pw[k:k + m] = pw[:m] * pw[k - 1] * np.uint64(_P)
                pi[k:k + m] = pi[:m] * pi[k - 1] * np.uint64(_P_INV)
                k += m
            self._pow, self._pow_inv = pw, pi
        return self._pow[:n], self._pow_inv[:n]

    def word_hashes(self, text: str) -> np.ndarray:
        """`word_hash` of every word of the normalized text, in order, vectorized."""
        data = np.frombuffer(normalized_bytes(text), dtype=np.uint8)
        if data.size == 0:
            return np.empty(0, dtype=np.uint64)
        # Padded with whitespace at both ends, the whitespace/word transitions alternate:
        # word start, word end, word start, ...
        ws = np.ones(data.size + 2, dtype=bool)
        np.equal(data, 32, out=ws[1:-1])  # all whitespace is " " after normalized_bytes
        edges = np.flatnonzero(ws[1:] != ws[:-1])
        if edges.size == 0:
            return np.empty(0, dtype=np.uint64)
        starts, ends = edges[0::2], edges[1::2]
        pw, pinv = self._powers(data.size)
        prefix = np.empty(data.size + 1, dtype=np.uint64)
        prefix[0] = 0
        np.cumsum(data * pw, out=prefix[1:])  # uint64: wraps mod 2^64
        v = (prefix[ends] - prefix[starts]) * pinv[starts]  # sum b_j P^(j - start)
        v ^= (ends - starts).astype(np.uint64) * np.uint64(_LEN_MUL)
        return _fmix64(v)

    def shingle_hashes(self, text: str) -> np.ndarray:
        """uint64 hash of every shingle, in order (duplicates kept), vectorized."""
        wh = self.word_hashes(text)
        if wh.size == 0:
            return wh
        n = min(self.shingle_words, len(wh))
        count = len(wh) - n + 1
        acc = np.full(count, _FOLD_INIT, dtype=np.uint64)
        tmp = np.empty_like(acc)
        mul, shift = np.uint64(_FOLD_MUL), np.uint64(_FOLD_SHIFT)
        for i in range(n):
            acc ^= wh[i:i + count]
            acc *= mul  # wraps mod 2^64, as the scalar `& MASK64`
            np.right_shift(acc, shift, out=tmp)
            acc ^= tmp
        return acc

    # -- signatures ------------------------------------------------------------------------
    def signature_from_hashes(self, hashes: np.ndarray) -> np.ndarray | None:
        if hashes.size == 0:
            return None
        hv = _fmix64(hashes)[None, :]
        # (num_perm, 1) x (1, shingles) into a reused buffer: allocating the ~1 MB temporaries
        # afresh for every document cost more than the arithmetic (page faults), and the min runs
        # along contiguous rows (~20% faster than reducing over columns of the transposed layout).
        # uint64 overflow is the intended mod 2^64.
        # Long documents go in blocks of _BLOCK shingles so the buffer stays at ~7 MB.
        width = min(max(hv.shape[1], 4096), _BLOCK)
        if self._buf is None or self._buf.shape[1] < min(hv.shape[1], _BLOCK):
            self._buf = np.empty((self.num_perm, width), dtype=np.uint64)
        sig = None
        for i in range(0, hv.shape[1], _BLOCK):
            block = hv[:, i:i + _BLOCK]
            out = self._buf[:, :block.shape[1]]
            np.multiply(self._a, block, out=out)
            np.add(out, self._b, out=out)
            sig = out.min(axis=1) if sig is None else np.minimum(sig, out.min(axis=1), out=sig)
        return sig

    def signature(self, text: str) -> np.ndarray | None:
        """(num_perm,) uint64, or None when the text normalizes to nothing."""
        return self.signature_from_hashes(self.shingle_hashes(text))

    def band_keys(self, signature: np.ndarray) -> list[int]:
        """One signed 64-bit key per band; equal keys <=> same band index and same 8 values
        (up to 2^-64 collisions). Deterministic across processes (no Python hash())."""
        rows, fmt = self.rows, self._band_fmt
        vals = signature.tolist()
        return [int.from_bytes(hashlib.blake2b(fmt.pack(i, *vals[i * rows:(i + 1) * rows]),
                                               digest_size=8).digest(), "little", signed=True)
                for i in range(self.bands)]


# --------------------------------------------------------------------------------------------
# clustering

_WARC_DATE = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:[.,](\d+))?")


def capture_time_key(date: str | None) -> str:
    """WARC-Date as a string that sorts by time: "YYYY-MM-DDTHH:MM:SS.fffffffff" (WARC/1.1 allows
    fractions of a second, which plain string order gets wrong: "...:15.5Z" < "...:15Z"). A missing
    or unparseable date sorts after every real one."""
    m = _WARC_DATE.match(date or "")
    if m is None:
        return "~" + (date or "")
    y, mo, d, h, mi, sec, frac = m.groups()
    return f"{y}-{mo}-{d}T{h}:{mi}:{sec}.{(frac or '')[:9]:0<9}"


def survivor_key(date: str | None, text: str | None, doc_id: str) -> tuple[str, int, str]:
    """Sort key of a cluster member: the smallest is kept (earliest capture, longest text, smallest id)."""
    return capture_time_key(date), -len(text or ""), doc_id


def connected_components(edges: Iterable[tuple[Hashable, Hashable]],
                         ids: Iterable[Hashable]) -> dict[Hashable, Hashable]:
    """Union-find over `ids` (edges may add ids too); cluster id = smallest id of the component."""
    parent: dict = {i: i for i in ids}

    def find(x):
        root = parent.setdefault(x, x)
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            # The smaller id always becomes the root, so a root is its component's minimum.
            if rb < ra:
                ra, rb = rb, ra
            parent[rb] = ra
    return {i: find(i) for i in list(parent)}


class MinhashDedup(Stage):
    """Single-machine MinHash dedup of one crawl: buffers every document it is given."""

    name = "minhash"

    def __init__(self, num_perm: int = 112, bands: int = 14, rows: int = 8, shingle_words: int = 5,
                 seed: int = 1, **_ignored):
        self.hasher = MinHasher(num_perm=num_perm, bands=bands, rows=rows,
                                shingle_words=shingle_words, seed=seed)

    def config(self) -> dict:
        h = self.hasher
        return {"num_perm": h.num_perm, "bands": h.bands, "rows": h.rows,
                "shingle_words": h.shingle_words, "seed": h.seed, "scheme": "affine64",
                "shingle_hash": "poly64-fmix-words+fold"}

    def process(self, docs: Iterator[Document], ctx: StageContext) -> Iterator[Document]:
        buffered: list[Document] = []
        buckets: dict[int, int] = {}  # band key -> first doc index seen with it
        edges: list[tuple[int, int]] = []
        for idx, doc in enumerate(docs):
            buffered.append(doc)
            sig = self.hasher.signature(doc.text)
            if sig is None:
                ctx.count("no_signature")
                continue
            # A star per bucket (each doc linked to the bucket's first doc) is enough for
            # connected components and keeps edges linear in the number of documents.
            for key in self.hasher.band_keys(sig):
                first = buckets.setdefault(key, idx)
                if first != idx:
                    edges.append((first, idx))
        # Components over document indices (ids might repeat); the survivor by survivor_key, then index.
        comp = connected_components(edges, range(len(buffered)))
        members: dict[int, list[int]] = {}
        for idx, root in comp.items():
            members.setdefault(root, []).append(idx)
        keep: set[int] = set()
        for group in members.values():
            winner = min(group, key=lambda i: (*survivor_key(buffered[i].metadata.get("date"), buffered[i].text,
                                                             buffered[i].id), i))
            keep.add(winner)
            cluster_id, size = buffered[winner].id, len(group)
            for i in group:
                buffered[i].metadata["minhash_cluster_id"] = cluster_id
                buffered[i].metadata["minhash_cluster_size"] = size
            if size > 1:
                ctx.count("clusters")
        ctx.count("candidate_edges", len(edges))
        for idx, doc in enumerate(buffered):
            if idx in keep:
                yield doc
            else:
                ctx.drop(doc, "duplicate")
