"""Supervised fine-tuning: the base model learns the chat protocol from a conversation dataset.

    deepspeed --num_gpus 8 --module training.sft --config training/configs/sft.yaml \
        --data lake/post_training/sft_mixture --init-from crawl2chat-base@candidate --out lake/models/chat/run1
    python -m training.sft --config training/configs/sft.yaml --data <mixture> --out <dir>   # 1 process

A job of the shared trainer (training/trainer.py), like pretraining: same engine, config derivation,
checkpoints, resume, export, MLflow and Pipes. What is SFT's own:
  - data: the mixture's conversations (training/conversations/dataset.py; split train / val), each
    rendered to (ids, loss mask) by training/conversations/render.py, the renderer the engine uses;
  - packing: conversations are packed whole into windows of seq_len + 1 tokens by best-fit decreasing
    (longest first, each into the fullest window it still fits), the rest of a window padded; a
    conversation longer than a window is truncated to it and counted (`truncated`): its head keeps
    its context, where a split-off tail would train answers to a question it cannot see;
  - targets: the next token where the mask trains it (assistant text, tool calls, its <|im_end|>),
    IGNORE elsewhere (prompts, headers, tool outputs, padding), so the loss and the validation loss
    are per assistant token, normalized over the whole optimizer step by the trainer.
  - isolation: a window holds several conversations, but each is trained as inference sees it: alone,
    from position 0. The batch carries each position's conversation (`segments`); the model attends
    within a conversation only and counts positions from its start (training/model.py). Without it,
    a short conversation packed after a long one learned to answer from the other's text at
    positions it never has in a chat: the demo model's replies mixed identity, tool and arithmetic
    phrases and ran on past their answer.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipelines.errors import ConfigError, InputError
from training.config import load_config
from training.data import WindowLoader
from training.evals.protocol import protocol_adherence  # noqa: F401 - the check's one implementation, shared with the evals
from training.job_cli import cli_main, job_arg_parser, job_overrides
from training.lm_job import evaluate_lm
from training.trainer import IGNORE, Job, build_model, resolve_export, run, start


# ---- data -------------------------------------------------------------------------------------------

def load_conversations(path: str | Path, split: str) -> list[dict]:
    """Rows {id, source, messages, split} of one split, in id order (independent of the part files).
    The mixture keeps each split in its own folder (<path>/train, <path>/val); rows are filtered by
    their `split` column too, so a single-folder dataset works the same."""
    from training.conversations.dataset import read_conversations
    folder = Path(path) / split
    rows = [r for r in read_conversations(folder if folder.is_dir() else path) if r.get("split", "train") == split]
    return sorted(rows, key=lambda r: r["id"])


def best_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Bins of item indices, each bin's lengths summing to <= capacity: items longest first, each into
    the open bin with the least room that still holds it (a new bin if none does). Open bins are kept
    by their exact room, so finding the best fit is a bisect over at most `capacity` room sizes."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    rooms: list[int] = []                 # sorted distinct rooms that have open bins
    open_bins: dict[int, list[int]] = {}  # room -> bins with exactly that room
    for i in order:
        n = lengths[i]
        if not 0 < n <= capacity:
            raise ValueError(f"item {i} has length {n}, outside 1..{capacity}")
        k = bisect.bisect_left(rooms, n)
        if k < len(rooms):
            room = rooms[k]
            b = open_bins[room].pop()
            if not open_bins[room]:
                del open_bins[room]
                rooms.pop(k)
        else:
            room, b = capacity, len(bins)
            bins.append([])
        bins[b].append(i)
        left = room - n
        if left > 0:
            if left not in open_bins:
                open_bins[left] = []
                bisect.insort(rooms, left)
            open_bins[left].append(b)
    return bins


@dataclass
class Packed:
    """Windows of seq_len + 1 tokens: tokens (N, W) int32, trained (N, W) bool (the token at that
    position is one the model must write), segments (N, W) int16 (which conversation of the window;
    the padding is one more), filled (N,) tokens before the padding."""
    tokens: np.ndarray
    trained: np.ndarray
    segments: np.ndarray
    filled: np.ndarray
    conversations: int
    truncated: int

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.size)

    @property
    def padding_fraction(self) -> float:
        return 1.0 - float(self.filled.sum()) / max(1, self.tokens.size)

    def rank_windows(self, rank: int, world: int, seq_len: int) -> np.ndarray:
        """Window w to rank w % world, every rank the same count (WindowLoader's contract)."""
        n = len(self) - len(self) % world
        return np.arange(rank, n, world)

    def batch(self, rows) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inputs, targets, segments) (B, seq_len) int64; targets IGNORE where the next token is not
        trained; segments: the inputs' conversations (the model's `segments`)."""
        tokens = torch.from_numpy(self.tokens[rows].astype(np.int64))
        trained = torch.from_numpy(self.trained[rows])
        segments = torch.from_numpy(self.segments[rows, :-1].astype(np.int64))
        return tokens[:, :-1], tokens[:, 1:].masked_fill(~trained[:, 1:], IGNORE), segments

    def stats(self, prefix: str) -> dict:
        return {f"{prefix}_conversations": self.conversations, f"{prefix}_windows": len(self),
                f"{prefix}_truncated": self.truncated, f"{prefix}_padding_fraction": round(self.padding_fraction, 4),
                f"{prefix}_trained_fraction": round(float(self.trained.sum()) / max(1, self.tokens.size), 4)}


def pack_conversations(tokenizer, rows: list[dict], seq_len: int) -> Packed:
    """Render each conversation, truncate the ones longer than a window, pack by best-fit decreasing."""
    from training.conversations.render import render_conversation
    width = seq_len + 1
    rendered, truncated = [], 0
    for r in rows:
        ids, mask = render_conversation(tokenizer, r["messages"], where=f"{r.get('source', '?')}:{r['id']}.messages")
        if len(ids) > width:
            ids, mask, truncated = ids[:width], mask[:width], truncated + 1
        rendered.append((ids, mask))
    bins = best_fit_decreasing([len(ids) for ids, _ in rendered], width)
    tokens = np.full((len(bins), width), tokenizer.bos_id, dtype=np.int32)  # padding: never a trained target
    trained = np.zeros((len(bins), width), dtype=bool)
    segments = np.zeros((len(bins), width), dtype=np.int16)
    filled = np.zeros(len(bins), dtype=np.int64)
    for w, items in enumerate(bins):
        at = 0
        for k, i in enumerate(items):
            ids, mask = rendered[i]
            tokens[w, at:at + len(ids)] = ids
            trained[w, at:at + len(ids)] = np.asarray(mask, dtype=bool)
            segments[w, at:at + len(ids)] = k
            at += len(ids)
        segments[w, at:] = len(items)
        filled[w] = at
    return Packed(tokens, trained, segments, filled, len(rows), truncated)


def pretrain_windows(tokenizer, data: str | Path, seq_len: int, conversation_windows: int) -> Packed | None:
    """The mixture's pretraining text (<data>/pretrain, written when data.mixture.pretrain_fraction > 0,
    training/conversations/mixture.py) as full windows trained on every target but <|endoftext|>, as many
    as make them `fraction` of all training windows; None when the mixture has none."""
    import json
    meta = Path(data) / "pretrain.json"
    if not meta.is_file():
        return None
    from training.conversations.dataset import read_table_dataset
    fraction = float(json.loads(meta.read_text())["fraction"])
    want = round(fraction / (1 - fraction) * conversation_windows)
    width, ids = seq_len + 1, []
    for r in read_table_dataset(Path(data) / "pretrain"):
        ids += [tokenizer.bos_id, *tokenizer.encode(r["text"])]   # as pretraining: documents end to end
        if len(ids) >= want * width:
            break
    n = min(want, len(ids) // width)
    tokens = np.asarray(ids[:n * width], dtype=np.int32).reshape(n, width)
    # every token is a target except <|endoftext|>: a chat reply must end with <|im_end|>, and windows
    # that taught "end the document here" made replies end with <|endoftext|> (protocol failures)
    return Packed(tokens, tokens != tokenizer.bos_id, np.zeros(tokens.shape, dtype=np.int16),
                  np.full(n, width, dtype=np.int64), 0, 0)


def concat_packed(a: Packed, b: Packed) -> Packed:
    return Packed(np.concatenate([a.tokens, b.tokens]), np.concatenate([a.trained, b.trained]),
                  np.concatenate([a.segments, b.segments]), np.concatenate([a.filled, b.filled]),
                  a.conversations + b.conversations, a.truncated + b.truncated)


class PackedLoader(WindowLoader):
    """Micro-batches of packed windows: WindowLoader's per-rank deal, per-epoch permutation and
    (epoch, pos) state, so a resumed run continues on the same windows."""

    def __init__(self, packed: Packed, micro_batch: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True):
        if len(packed) // world_size < micro_batch:
            raise InputError(f"{packed.conversations} training conversations pack into {len(packed)} windows, "
                             f"fewer than one micro-batch of {micro_batch} per rank (world {world_size}): "
                             "add conversations or lower train.micro_batch")
        super().__init__(packed, packed.tokens.shape[1] - 1, micro_batch, rank, world_size, seed, shuffle)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.shards.batch(self.next_windows())


def val_batches(packed: Packed, max_tokens: int, rank: int, world: int, micro_batch: int) -> list:
    """Fixed validation micro-batches: up to max_tokens of windows dealt round-robin. Ranks left short
    get all-IGNORE windows (they add 0 to the loss and to the count), so every rank runs the same
    forwards (ZeRO-3) and each window counts exactly once."""
    if len(packed) == 0:
        return []
    seq_len = packed.tokens.shape[1] - 1
    n = min(len(packed), max(1, max_tokens // seq_len))
    per_rank = -(-n // world)
    mine = [w for w in range(rank, per_rank * world, world)]
    out = []
    for j in range(0, per_rank, micro_batch):
        rows = mine[j:j + micro_batch]
        x, y, segments = packed.batch([min(w, n - 1) for w in rows])
        y[torch.tensor([w >= n for w in rows])] = IGNORE
        out.append((x, y, segments))
    return out


# ---- protocol adherence (the chat_model asset's blocking check) ------------------------------------

def held_out_prompts(rows: list[dict], limit: int) -> list[list[dict]]:
    """The val split's opening turns: each conversation's messages before its first assistant turn."""
    prompts = []
    for r in rows:
        msgs = r["messages"]
        first = next((i for i, m in enumerate(msgs) if m["role"] == "assistant"), None)
        if first and msgs[first - 1]["role"] == "user":
            prompts.append(msgs[:first])
        if len(prompts) >= limit:
            break
    return prompts


def name_rate(engine, questions: list[str], name: str, max_tokens: int, samples: int = 4,
              temperature: float = 0.7, seed: int = 0) -> dict:
    """Share of sampled replies to identity questions (the held-out paraphrases) that say the
    assistant's configured name."""
    from training.conversations.render import render_for_completion
    from training.engine.engine import SamplingParams
    prompts = [render_for_completion(engine.tokenizer, [{"role": "user", "content": q}])
               for q in questions for _ in range(samples)]
    if not prompts:
        return {"replies": 0, "rate": None}
    done = engine.generate(prompts, SamplingParams(max_tokens=max_tokens, temperature=temperature, top_k=50,
                                                   seed=seed))
    hits = sum(name.lower() in c.text.lower() for c in done)
    return {"replies": len(done), "with_name": hits, "rate": hits / len(done)}


# ---- the job ----------------------------------------------------------------------------------------

def train(cfg: dict, data: str | Path, out: str | Path, resume: bool = False) -> dict:
    from pipelines.tokenizer import load_tokenizer
    from training.conversations.render import render_for_completion
    d = start()
    t, ev = cfg["train"], cfg["eval"]
    if not cfg["model"].get("init_from"):
        raise ConfigError("model.init_from: SFT starts from a trained model: an export directory or a "
                          "registered one such as crawl2chat-base@candidate")
    export = resolve_export(cfg["model"]["init_from"])
    tokenizer = load_tokenizer(export)
    model = build_model(cfg, init_dir=export, device=d.device)
    seq_len = int(t["seq_len"] or model.config.block_size)
    train_pack = pack_conversations(tokenizer, load_conversations(data, "train"), seq_len)
    val_pack = pack_conversations(tokenizer, load_conversations(data, "val"), seq_len)
    text_pack = pretrain_windows(tokenizer, data, seq_len, len(train_pack))
    text_windows = len(text_pack) if text_pack is not None else 0
    if text_pack is not None:   # shuffled in with the conversations by the loader's permutation
        train_pack = concat_packed(train_pack, text_pack)
    loader = PackedLoader(train_pack, t["micro_batch"], d.rank, d.world, seed=t["seed"], shuffle=t["shuffle"])
    val = val_batches(val_pack, ev["val_tokens"], d.rank, d.world, t["micro_batch"])
    prompts = [(p, render_for_completion(tokenizer, [{"role": "user", "content": p}])) for p in ev["prompts"]]
    report = {**train_pack.stats("train"), **val_pack.stats("val"), "init_export": str(export),
              "train_pretrain_windows": text_windows}
    job = Job(stage="sft", seq_len=seq_len, batches=loader,
              evaluate=(lambda engine: evaluate_lm(engine, val, d.device, tokenizer.token_bytes)) if val else None,
              tokenizer=tokenizer, tokenizer_dir=export, sample_prompts=prompts,
              sample_stop=(tokenizer.special("im_end"),), params={"data": str(data)}, report=report)
    if d.rank == 0:
        print(f"[sft] {train_pack.conversations} conversations -> {len(train_pack)} windows of {seq_len + 1} "
              f"({100 * train_pack.padding_fraction:.1f}% padding, {train_pack.truncated} truncated); "
              f"val {val_pack.conversations} -> {len(val_pack)}; {text_windows} windows of pretraining text; "
              f"from {cfg['model']['init_from']}")
    return run(cfg, job, model, out, resume=resume)


def main(argv: list[str] | None = None) -> dict:
    ap = job_arg_parser(__doc__, data_help="conversation dataset: the sft_mixture (id, source, messages, split)")
    ap.add_argument("--init-from", help="shorthand for --set model.init_from=SOURCE (export dir or NAME@ALIAS)")
    args = ap.parse_args(argv)
    overrides = job_overrides(args) + ([f"model.init_from={args.init_from}"] if args.init_from else [])
    cfg = load_config(args.config, overrides, job="sft")
    return train(cfg, args.data, args.out, resume=args.resume)


if __name__ == "__main__":
    cli_main(main)
