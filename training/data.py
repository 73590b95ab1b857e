"""Training windows from token shards: each rank reads a disjoint slice; the position is checkpointable.

A window is `seq_len + 1` consecutive tokens (inputs = window[:-1], targets = window[1:]); windows
start every `seq_len` tokens (the extra token overlaps the next window, as in nanoGPT/llm.c).
`TokenShards.rank_windows(rank, world, seq_len)` deals window w to rank w % world, every rank the same
count, so ranks never read the same tokens and all run the same number of steps. Within its windows
a rank visits them in a per-epoch permutation (seeded by seed + epoch, the same on every rank) or in
order; the state to resume is (epoch, pos), identical on every rank since all advance in lockstep.

`Prefetcher` wraps a batch source (a WindowLoader, SFT's PackedLoader) so the next batches are built
on a background thread while the device trains on this one; its state_dict is that of the next batch
the trainer takes, not of what the thread has read ahead, so a resume stays exact.
"""
from __future__ import annotations

import json
import queue
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.shards import TokenShards

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_meta.json", "token_bytes.npy")


def open_shards(root: str | Path, split: str = "train") -> TokenShards:
    return TokenShards(root, split=split)


class WindowLoader:
    # Batches are a function of the data and the position alone (not of the model being trained),
    # so they may be built ahead of time (Prefetcher); a rollout source must not be.
    prefetchable = True

    def __init__(self, shards: TokenShards, seq_len: int, micro_batch: int, rank: int = 0,
                 world_size: int = 1, seed: int = 0, shuffle: bool = True):
        self.shards, self.T, self.B = shards, seq_len, micro_batch
        self.rank, self.world, self.seed, self.shuffle = rank, world_size, seed, shuffle
        self.starts = shards.rank_windows(rank, world_size, seq_len)
        if len(self.starts) < micro_batch:
            raise ValueError(f"{shards.num_tokens} tokens give {len(self.starts)} windows of {seq_len + 1} "
                             f"per rank (world {world_size}), fewer than one micro-batch of {micro_batch}")
        self.epoch, self.pos = 0, 0
        self._order = self._permutation()

    @property
    def windows_per_epoch(self) -> int:
        return len(self.starts)

    def _permutation(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.starts))
        return np.random.default_rng(self.seed + self.epoch).permutation(len(self.starts))

    def next_windows(self) -> np.ndarray:
        """This rank's next B windows (entries of `starts`). Wraps to a new epoch (new permutation) at
        the end; a partial batch at the end of an epoch is skipped so all ranks stay in step."""
        if self.pos + self.B > len(self.starts):
            self.epoch, self.pos = self.epoch + 1, 0
            self._order = self._permutation()
        chosen = self.starts[self._order[self.pos:self.pos + self.B]]
        self.pos += self.B
        return chosen

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each (B, T) int64."""
        batch = torch.from_numpy(np.stack([self.shards.window(int(w), self.T) for w in self.next_windows()]))
        return batch[:, :-1], batch[:, 1:]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "world_size": self.world, "seed": self.seed,
                "seq_len": self.T, "micro_batch": self.B, "shuffle": self.shuffle}

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        for key in ("world_size", "seq_len", "micro_batch", "seed", "shuffle"):
            if key in state and state[key] != mine[key]:
                # Same counters, different slicing: the run continues, but not on the data order an
                # uninterrupted run would have seen.
                print(f"[data] warning: resuming with {key}={mine[key]} (checkpoint had {state[key]}); "
                      f"data order differs from an uninterrupted run")
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._order = self._permutation()


def map_tensors(batch: Any, fn) -> Any:
    """fn applied to every tensor of a batch (a tensor, a tuple/list or a dict of them)."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, dict):
        return {k: map_tensors(v, fn) for k, v in batch.items()}
    return type(batch)(map_tensors(v, fn) for v in batch)


class Prefetcher:
    """A batch source whose next `depth` batches are built by a background thread (in pinned memory
    when `pin`, so the trainer's non_blocking copy to the GPU overlaps compute).

    The thread calls source.next_batch() and then snapshots source.state_dict(): each queued batch
    carries the state *after* it. Taking a batch makes that the current state, so state_dict() is the
    position of the next batch the trainer will take, however far the thread has read ahead. The
    thread starts at the first next_batch(); load_state_dict() stops it, drops what it had read, moves
    the source and lets the next next_batch() start it again from there."""

    def __init__(self, source, depth: int = 2, pin: bool = False):
        self.source, self.depth, self.pin = source, depth, pin
        self._state = source.state_dict()
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _produce(self, q: queue.Queue, stop: threading.Event) -> None:
        def put(item) -> None:
            while not stop.is_set():
                try:
                    return q.put(item, timeout=0.1)
                except queue.Full:
                    continue
        try:
            while not stop.is_set():
                batch = self.source.next_batch()
                if self.pin:
                    batch = map_tensors(batch, lambda t: t.pin_memory())
                put((batch, self.source.state_dict(), None))
        except BaseException as e:  # handed to the trainer's thread, raised at its next_batch()
            put((None, None, e))

    def next_batch(self) -> Any:
        if self._thread is None:
            self._queue, self._stop = queue.Queue(maxsize=self.depth), threading.Event()
            self._thread = threading.Thread(target=self._produce, args=(self._queue, self._stop),
                                            name="batch-prefetch", daemon=True)
            self._thread.start()
        batch, state, error = self._queue.get()
        if error is not None:
            self.close()
            raise error
        self._state = state
        return batch

    def state_dict(self) -> dict:
        return self._state

    def load_state_dict(self, state: dict) -> None:
        self.close()
        self.source.load_state_dict(state)
        self._state = self.source.state_dict()

    def close(self) -> None:
        """Stop the thread and rewind the source to the next batch not taken (drop the read-ahead)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = self._queue = None
            self.source.load_state_dict(self._state)


def val_batches(shards: TokenShards, seq_len: int, max_tokens: int, rank: int, world_size: int,
                micro_batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed validation batches: the first windows of the val split covering up to max_tokens
    targets, dealt round-robin to ranks. Every rank gets the same number of full batches (ZeRO-3
    needs every rank in every forward), so the count is a multiple of world_size * micro_batch; a val
    split too small for that reuses its windows rather than skipping validation."""
    available = (shards.num_tokens - 1) // seq_len
    if available < 1:
        raise ValueError(f"val split has {shards.num_tokens} tokens, less than one window of {seq_len + 1}")
    group = world_size * micro_batch
    n = max(group, (min(available, max(1, max_tokens // seq_len)) // group) * group)
    mine = [i % available for i in range(rank, n, world_size)]
    batches = []
    for j in range(0, len(mine), micro_batch):
        b = torch.from_numpy(np.stack([shards.window(w * seq_len, seq_len) for w in mine[j:j + micro_batch]]))
        batches.append((b[:, :-1], b[:, 1:]))
    return batches


def random_token_shards(root: str | Path, vocab_size: int, tokens: dict[str, int], seed: int = 0,
                        doc_tokens: int = 2048) -> TokenShards:
    """A shard set of uniformly random token documents (benchmarks and tests without a corpus),
    written by the project's shard writer: `tokens` per split, e.g. {"train": 1 << 20, "val": 1 << 16}.
    Returns the train split. The last id is the BOS of every document."""
    from pipelines.shards import ShardSetWriter
    rng = np.random.default_rng(seed)
    writer = ShardSetWriter(root, vocab_size, vocab_size - 1, f"random-{seed}", {"shard_tokens": 1 << 20})
    for split, n in tokens.items():
        for start in range(0, n, doc_tokens):
            ids = rng.integers(0, vocab_size - 1, min(doc_tokens, n - start) - 1)
            writer.splits[split].add_document(vocab_size - 1, ids)
    writer.finish()
    return TokenShards(root, "train")


def find_tokenizer_dir(data_root: str | Path, explicit: str | Path | None = None) -> Path | None:
    """Tokenizer directory (tokenizer.json, token_bytes.npy): explicit, else the shards manifest's
    `tokenizer_dir` / `tokenizer_path` when present, else `<data_root>/tokenizer`, else None."""
    if explicit:
        return Path(explicit)
    root = Path(data_root)
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = {}
    for key in ("tokenizer_dir", "tokenizer_path"):
        if manifest.get(key):
            p = Path(manifest[key])
            p = p if p.is_absolute() else root / p
            return p.parent if p.suffix == ".json" else p
    cand = root / "tokenizer"
    return cand if (cand / "tokenizer.json").exists() else None
