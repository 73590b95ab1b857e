"""Training windows from token shards: each rank reads a disjoint slice; the position is checkpointable.

A window is `seq_len + 1` consecutive tokens (inputs = window[:-1], targets = window[1:]); windows
start every `seq_len` tokens (the extra token overlaps the next window, as in nanoGPT/llm.c).
`TokenShards.rank_windows(rank, world, seq_len)` deals window w to rank w % world, every rank the same
count, so ranks never read the same tokens and all run the same number of steps. Within its windows
a rank visits them in a per-epoch permutation (seeded by seed + epoch, the same on every rank) or in
order; the state to resume is (epoch, pos), identical on every rank since all advance in lockstep.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from pipelines.shards import TokenShards

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_meta.json", "token_bytes.npy")


def open_shards(root: str | Path, split: str = "train") -> TokenShards:
    return TokenShards(root, split=split)


class WindowLoader:
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
