"""SFT on the shared trainer with real DeepSpeed engines on CPU: loss normalization over micro-batches,
best-fit packing and its masks, a tiny model learning assistant tokens, exact resume, and protocol
adherence sampled through the inference engine."""
import json
import math
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine_fixtures import script_table, table_model, tiny_tok, tiny_tokenizer_dir  # noqa: F401 (fixtures)
from pipelines.errors import ConfigError
from training.config import load_config
from training.conversations.dataset import write_conversations
from training.conversations.render import render_conversation
from training.export import export_state, load_model
from training.model import GPT, preset
from training.sft import (best_fit_decreasing, held_out_prompts, load_conversations, pack_conversations,
                          protocol_adherence, train, val_batches)
from training.trainer import IGNORE, Job, run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = ["train.micro_batch=4", "train.batch_tokens=1024", "train.warmup_steps=2", "train.lr=3e-3",
         "eval.val_tokens=4096", "eval.sample_every=0", "eval.prompts=[]", "checkpoint.every=0",
         "log.mlflow=false"]
BLOCK = 128


def conversations(n: int, seed: int) -> list[dict]:
    """Small generated chats with every part type: system prompts, arithmetic, identity, a python tool
    call with its (forced, untrained) output, two-turn exchanges."""
    rng = random.Random(seed)
    words = ["river", "city", "music", "station", "players", "strawberry", "python", "answer"]
    rows = []
    for i in range(n):
        a, b = rng.randint(1, 40), rng.randint(1, 40)
        kind = i % 4
        if kind == 0:
            msgs = [{"role": "user", "content": f"What is {a} plus {b}?"},
                    {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]
        elif kind == 1:
            msgs = [{"role": "system", "content": "You are crawl2chat."},
                    {"role": "user", "content": "Who are you?"},
                    {"role": "assistant", "content": "I am crawl2chat, a small assistant."}]
        elif kind == 2:
            w = rng.choice(words)
            msgs = [{"role": "user", "content": f"How many letters are in {w}?"},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "Let me count."},
                        {"type": "tool_call", "name": "python", "arguments": f"print(len('{w}'))"},
                        {"type": "tool_output", "text": str(len(w))},
                        {"type": "text", "text": f" {w} has {len(w)} letters."}]}]
        else:
            msgs = [{"role": "user", "content": f"Say {a}."}, {"role": "assistant", "content": f"{a}."},
                    {"role": "user", "content": f"Now {b}."}, {"role": "assistant", "content": f"{b}."}]
        rows.append({"id": f"c{seed}-{i:04d}", "source": f"gen{kind}", "messages": msgs})
    return rows


@pytest.fixture(scope="module")
def mixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixture")
    write_conversations([{**r, "split": "train"} for r in conversations(240, 0)], root / "train")
    write_conversations([{**r, "split": "val"} for r in conversations(24, 1)], root / "val")
    return root


@pytest.fixture(scope="module")
def base_export(tiny_tokenizer_dir, tmp_path_factory):
    """A freshly initialized tiny GPT, exported as pretraining would export it."""
    from pipelines.tokenizer import load_tokenizer
    tok = load_tokenizer(tiny_tokenizer_dir)
    torch.manual_seed(0)
    model = GPT(preset("tiny", n_layer=2, n_embd=64, n_head=2, block_size=BLOCK, vocab_size=tok.vocab_size))
    return export_state(model.state_dict(), model.config, tmp_path_factory.mktemp("base") / "export",
                        tokenizer_dir=tiny_tokenizer_dir)


def sft(mixture, base_export, out, *overrides, resume=False):
    cfg = load_config(None, SMALL + [f"model.init_from={base_export}"] + list(overrides), job="sft")
    return train(cfg, mixture, out, resume=resume)


# ---- loss normalization ----------------------------------------------------------------------------

class FixedBatches:
    """A batch source replaying given micro-batches (the trainer's BatchSource contract)."""

    def __init__(self, batches):
        self.batches, self.pos = batches, 0

    def next_batch(self):
        b = self.batches[self.pos % len(self.batches)]
        self.pos += 1
        return b

    def state_dict(self):
        return {"pos": self.pos}

    def load_state_dict(self, state):
        self.pos = state["pos"]


T = 8


def tiny_gpt() -> GPT:
    torch.manual_seed(3)
    return GPT(preset("tiny", n_layer=1, n_embd=32, n_head=2, block_size=T, vocab_size=50))


def windows():
    """Two windows with 7 and 2 trained targets."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 50, (2, T), generator=g)
    y = torch.randint(0, 50, (2, T), generator=g)
    y[0, :1] = IGNORE
    y[1, :6] = IGNORE
    return x, y


def one_step(batches, micro_batch, zero_stage, tmp_path) -> dict:
    gas = len(batches)
    cfg = load_config(None, [f"train.micro_batch={micro_batch}", f"train.batch_tokens={micro_batch * T * gas}",
                             "train.steps=1", f"train.zero_stage={zero_stage}", "train.grad_clip=0",
                             "checkpoint.every=0", "log.mlflow=false", "eval.prompts=[]", "eval.sample_every=0",
                             "model.init_from=null"], job="sft")
    job = Job(stage="sft", seq_len=T, batches=FixedBatches(batches))
    return run(cfg, job, tiny_gpt(), tmp_path / f"z{zero_stage}-m{micro_batch}")["final"]


def reference(x, y) -> tuple[float, float]:
    """By hand: Σ CE over the trained targets of both windows / their number, and its gradient norm."""
    model = tiny_gpt()
    per_tok = model(x, y.clamp(min=0), reduction="none")
    trained = y != IGNORE
    loss = (per_tok * trained).sum() / trained.sum()
    loss.backward()
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
    return loss.item(), norm.item()


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_two_micro_batches_with_different_counts_give_the_gradient_of_one_batch(zero_stage, tmp_path):
    x, y = windows()
    want_loss, want_norm = reference(x, y)
    # Averaging per-micro-batch means (what a plain mean loss with DeepSpeed's 1/gas gives) is not it:
    model = tiny_gpt()
    naive = sum(model(x[[i]], y[[i]], reduction="sum") / (y[i] != IGNORE).sum() for i in (0, 1)) / 2
    naive.backward()
    naive_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item()
    assert abs(naive_norm - want_norm) / want_norm > 0.1

    split = one_step([(x[[0]], y[[0]]), (x[[1]], y[[1]])], 1, zero_stage, tmp_path)   # 7 + 2 trained
    joint = one_step([(x, y)], 2, zero_stage, tmp_path)                               # 9 in one
    for got in (split, joint):
        assert got["train/trained_tokens"] == 9
        assert got["train/loss"] == pytest.approx(want_loss, rel=1e-5)
        assert got["train/grad_norm"] == pytest.approx(want_norm, rel=1e-4)


def test_micro_batch_without_trained_tokens_adds_nothing_and_no_nan(tmp_path):
    x, y = windows()
    empty = torch.full_like(y[[1]], IGNORE)
    want_loss, want_norm = reference(x[[0]], y[[0]])
    got = one_step([(x[[0]], y[[0]]), (x[[1]], empty)], 1, 0, tmp_path)
    assert got["train/trained_tokens"] == 7
    assert got["train/loss"] == pytest.approx(want_loss, rel=1e-5)
    assert got["train/grad_norm"] == pytest.approx(want_norm, rel=1e-4)
    # A whole step without a trained token: no loss to report, a zero gradient, finite weights.
    nothing = one_step([(x[[1]], empty), (x[[1]], empty)], 1, 0, tmp_path / "none")
    assert nothing["train/loss"] is None and nothing["train/grad_norm"] == 0.0
    assert all(torch.isfinite(p).all() for p in load_model(tmp_path / "none" / "z0-m1" / "export").parameters())


# ---- packing ---------------------------------------------------------------------------------------

def test_best_fit_decreasing_puts_each_item_in_the_fullest_bin_it_fits():
    # 7 -> new A (room 3); 5 -> new B (5); 4 -> B (1, the fullest that fits); 3 -> A (0);
    # 2 -> new C (nothing has room 2); 1 -> B (room 1 beats C's 8)
    assert best_fit_decreasing([7, 5, 4, 3, 2, 1], 10) == [[0, 3], [1, 2, 5], [4]]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=80))
def test_best_fit_decreasing_packs_everything_within_capacity_and_the_bound(lengths):
    bins = best_fit_decreasing(lengths, 40)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 40 for b in bins)
    # At most one bin is at most half full: best fit never opens a bin an open one could take (so
    # fewer than twice the bins of any packing).
    assert sum(sum(lengths[i] for i in b) <= 20 for b in bins) <= 1
    assert len(bins) <= 2 * math.ceil(sum(lengths) / 40)


def assistant_positions(tok, ids: list[int]) -> list[bool]:
    """Independent of the renderer: True where a token lies in an assistant turn's content or is its
    <|im_end|>, outside tool outputs (read from the role headers and the output markers)."""
    sp = {n: tok.special(n) for n in ("im_start", "im_sep", "im_end", "output_start", "output_end")}
    out, role, in_header, in_output, header = [], None, False, False, []
    for t in ids:
        if t == sp["im_start"]:
            in_header, header = True, []
            out.append(False)
        elif in_header:
            if t == sp["im_sep"]:
                in_header, role = False, tok.decode(header)
            else:
                header.append(t)
            out.append(False)
        elif t == sp["output_start"]:
            in_output = True
            out.append(False)
        elif t == sp["output_end"]:
            in_output = False
            out.append(False)
        else:
            out.append(role == "assistant" and not in_output)
            if t == sp["im_end"]:
                role = None
    return out


def test_packed_windows_train_exactly_the_assistant_tokens(tiny_tok):
    rows = conversations(60, 5)
    packed = pack_conversations(tiny_tok, rows, seq_len=BLOCK)
    lengths = [len(render_conversation(tiny_tok, r["messages"])[0]) for r in rows]
    assert packed.truncated == 0 and packed.conversations == 60
    assert len(packed) == len(best_fit_decreasing(lengths, BLOCK + 1))
    assert packed.padding_fraction == pytest.approx(1 - sum(lengths) / (len(packed) * (BLOCK + 1)))
    assert packed.padding_fraction < 0.10
    x, y, segments = packed.batch(np.arange(len(packed)))
    tokens = packed.tokens.astype(np.int64)
    n_trained = 0
    for w in range(len(packed)):
        fill = int(packed.filled[w])
        expected = assistant_positions(tiny_tok, tokens[w, :fill].tolist()) + [False] * (BLOCK + 1 - fill)
        trained_targets = (y[w] != IGNORE).tolist()
        assert trained_targets == expected[1:]            # the target at t is token t+1
        assert y[w][y[w] != IGNORE].tolist() == tokens[w, 1:][np.asarray(expected[1:])].tolist()
        assert x[w].tolist() == tokens[w, :-1].tolist()
        n_trained += sum(trained_targets)
        # segments: the k-th conversation of the window (each opens with <|endoftext|>), padding one more
        conv = np.cumsum(tokens[w, :fill] == tiny_tok.bos_id) - 1
        assert packed.segments[w, :fill].tolist() == conv.tolist()
        assert set(packed.segments[w, fill:].tolist()) <= {conv[-1] + 1}
        assert segments[w].tolist() == packed.segments[w, :-1].tolist()
    # every assistant token of every conversation is trained once (none start a window)
    assert n_trained == sum(sum(render_conversation(tiny_tok, r["messages"])[1]) for r in rows)


def test_long_conversation_is_truncated_and_counted(tiny_tok):
    long = {"id": "long", "source": "t", "messages": [{"role": "user", "content": "Tell me. " * 40},
                                                      {"role": "assistant", "content": "No."}]}
    packed = pack_conversations(tiny_tok, [long] + conversations(8, 2), seq_len=BLOCK)
    assert packed.truncated == 1 and packed.conversations == 9
    assert packed.filled.max() == BLOCK + 1


def test_val_batches_count_each_window_once_across_ranks(tiny_tok):
    packed = pack_conversations(tiny_tok, conversations(30, 3), seq_len=BLOCK)
    assert len(packed) % 3 != 0                               # some rank is left short
    per_rank = [val_batches(packed, 10**9, r, 3, 4) for r in range(3)]
    assert len({len(b) for b in per_rank}) == 1              # every rank runs the same forwards
    seen = sum(int((y != IGNORE).sum()) for batches in per_rank for _, y, _ in batches)
    assert seen == int(packed.trained[:, 1:].sum())          # each window's targets count once


# ---- training --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sft_run(mixture, base_export, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft")
    return sft(mixture, base_export, out, "train.steps=48", "eval.every=8") | {"out": out}


def test_sft_assistant_token_val_loss_falls(sft_run, mixture, base_export, tiny_tok):
    vals = [r["val/loss"] for r in sft_run["history"] if r.get("val/loss") is not None]
    assert len(vals) == 6 and all(map(math.isfinite, vals))
    # the loss at the base model's weights, computed here on the same val windows
    packed = pack_conversations(tiny_tok, load_conversations(mixture, "val"), seq_len=BLOCK)
    base = load_model(base_export)
    with torch.no_grad():
        x, y, segments = packed.batch(np.arange(len(packed)))
        before = base(x, y, reduction="sum", segments=segments).item() / int((y != IGNORE).sum())
    assert vals[-1] < vals[0] < before
    assert vals[-1] < 0.6 * before
    meta = json.loads((sft_run["out"] / "export" / "config.json").read_text())
    assert meta["stage"] == "sft" and meta["step"] == 48 and meta["train_padding_fraction"] < 0.15
    assert sft_run["train_conversations"] == 240 and sft_run["val_conversations"] == 24
    assert (sft_run["out"] / "export" / "tokenizer.json").exists()


def test_sft_resume_reproduces_uninterrupted_run(mixture, base_export, tmp_path):
    common = ["train.steps=6", "train.zero_stage=1", "eval.every=6", "checkpoint.every=3", "checkpoint.keep=1"]
    full = sft(mixture, base_export, tmp_path / "full", *common)
    part = sft(mixture, base_export, tmp_path / "part", *common, "train.stop_after=3")
    rest = sft(mixture, base_export, tmp_path / "part", *common, resume=True)
    assert rest["resumed_from"] == "step_00000003" and [r["step"] for r in rest["history"]] == [4, 5, 6]
    losses = [r["train/loss"] for r in full["history"]]
    assert [r["train/loss"] for r in part["history"]] == pytest.approx(losses[:3], rel=1e-6)
    assert [r["train/loss"] for r in rest["history"]] == pytest.approx(losses[3:], rel=1e-5)
    assert rest["final"]["val/loss"] == pytest.approx(full["final"]["val/loss"], rel=1e-5)


# ---- protocol adherence ----------------------------------------------------------------------------

def test_protocol_adherence_counts_replies_that_keep_the_protocol(tiny_tok, mixture):
    from training.engine.engine import Engine
    prompts = held_out_prompts(load_conversations(mixture, "val"), limit=10)
    assert len(prompts) == 10 and all(p[-1]["role"] == "user" for p in prompts)
    sep, end, start = tiny_tok.special("im_sep"), tiny_tok.special("im_end"), tiny_tok.special("im_start")
    a, b = tiny_tok.encode(" ok")[0], tiny_tok.encode(" no")[0]
    good = Engine(table_model(tiny_tok, script_table([sep, a, end])), tiny_tok, tools={})
    opens = Engine(table_model(tiny_tok, script_table([sep, b, start])), tiny_tok, tools={})
    rambles = Engine(table_model(tiny_tok, {sep: a, a: b, b: a}), tiny_tok, tools={})
    r = protocol_adherence(good, prompts, max_tokens=8, temperature=0)
    assert r["rate"] == 1.0 and r["adherent"] == 10 and r["opened_a_turn"] == 0 and r["no_im_end"] == 0
    r = protocol_adherence(opens, prompts, max_tokens=8, temperature=0)
    assert r["rate"] == 0.0 and r["opened_a_turn"] == 10 and r["examples"]
    r = protocol_adherence(rambles, prompts, max_tokens=8, temperature=0)
    assert r["rate"] == 0.0 and r["no_im_end"] == 10 and r["opened_a_turn"] == 0


def test_sft_model_keeps_the_protocol_on_held_out_prompts(sft_run, mixture, base_export):
    from training.engine.engine import Engine
    prompts = held_out_prompts(load_conversations(mixture, "val"), limit=24)

    def adherence(export) -> tuple[float, int, int]:
        """Over 4 sampling seeds (96 replies): at 24 replies one reply moves the rate by 4 points, and
        a change of sampler alone (same distribution, other draws) moved it from 0.75 to 0.71."""
        engine = Engine.load(export, tools={})
        runs = [protocol_adherence(engine, prompts, max_tokens=24, seed=seed) for seed in range(4)]
        return (sum(r["adherent"] for r in runs) / sum(r["prompts"] for r in runs), runs[0]["prompts"],
                sum(r["opened_a_turn"] for r in runs))
    after, before = adherence(sft_run["out"] / "export"), adherence(base_export)
    print(f"protocol adherence on held-out prompts: {before[0]:.3f} before SFT, {after[0]:.3f} after")
    assert after[1] == before[1] > 0
    # From a random init (no pretraining) in 48 tiny steps: most replies already end their turn.
    assert before[0] < 0.1 and after[0] >= 0.75, (before, after)
    assert after[2] == 0


# ---- config ----------------------------------------------------------------------------------------

def test_sft_config_checks_its_keys_and_delegates_data():
    cfg = load_config(None, [], job="sft")
    assert cfg["model"]["init_from"] == "crawl2chat-base@candidate" and cfg["checks"]["protocol_adherence_min"] == 0.99
    with pytest.raises(ConfigError, match=r"unknown key 'checks.protocol_adherence_mn'"):
        load_config(None, ["checks.protocol_adherence_mn=0.5"], job="sft")
    with pytest.raises(ConfigError, match=r"unknown section 'checks'"):
        load_config(None, ["checks.protocol_adherence_min=0.5"])          # pretraining has no checks
    with pytest.raises(ConfigError, match=r"data\.mixture\.weightz"):       # the data schema's own check
        load_config(None, ["data.mixture.weightz=1"], job="sft")
    with pytest.raises(ConfigError, match=r"model.n_layer.*init_from"):
        from training.trainer import build_model
        build_model(load_config(None, ["model.n_layer=2"], job="sft"))


# ---- two ranks -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_ranks_normalize_by_the_global_trained_token_count(mixture, base_export, tiny_tok, tmp_path):
    """Two CPU ranks under the deepspeed launcher, two micro-batches each: step 1's loss and gradient
    norm are those of Σ CE over all four micro-batches' trained tokens / their total count, recomputed
    here from each rank's own windows at the base weights."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from training.sft import PackedLoader
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "run"
    over = ["train.steps=1", "train.zero_stage=2", "train.batch_tokens=2048", "train.micro_batch=4",
            "eval.every=1", "checkpoint.every=1", "eval.sample_every=0", "log.mlflow=false", "eval.prompts=[]"]
    cmd = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2", "--master_port",
           str(29900 + os.getpid() % 90), "--module", "training.sft", "--data", str(mixture),
           "--init-from", str(base_export), "--out", str(out), *[a for o in over for a in ("--set", o)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo), "LOCAL_SIZE": "2"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "MLFLOW_RUN_ID"):
        env.pop(k, None)
    p = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert json.loads((out / "summary.json").read_text())["world_size"] == 2

    packed = pack_conversations(tiny_tok, load_conversations(mixture, "train"), seq_len=BLOCK)
    model = load_model(base_export).train()
    seed = load_config(None, [], job="sft")["train"]["seed"]
    total = torch.zeros(())
    count = 0
    for r in (0, 1):
        loader = PackedLoader(packed, 4, rank=r, world_size=2, seed=seed)
        for _ in range(2):
            x, y, segments = loader.next_batch()
            total = total + model(x, y, reduction="sum", segments=segments)
            count += int((y != IGNORE).sum())
    loss = total / count
    loss.backward()
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
    assert first["train/trained_tokens"] == count
    assert first["train/loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert first["train/grad_norm"] == pytest.approx(norm.item(), rel=1e-3)
