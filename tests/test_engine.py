"""Inference engine on tiny real models (CPU): KV-cache decoding equals uncached GPT.generate, batched
rows equal rows alone, sampling is reproducible, streaming decodes incrementally, and the tool state
machine forces tool output (masked) into the row that called it."""
from __future__ import annotations

import random
import threading
import time

import pytest
import torch

from engine_fixtures import (script_table, table_model, tiny_export, tiny_gpt,  # noqa: F401 (fixtures)
                             tiny_rope_export, tiny_tok, tiny_tokenizer_dir)
from pipelines.errors import ConfigError, InputError, UserError
from training.conversations import parse_assistant, render_for_completion
from training.engine.engine import Engine, SamplingParams, sample
from training.model import KVCache

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=["wpe", "rope"])
def engine(request, tiny_export, tiny_rope_export):
    """Learned positions + LayerNorm, and RoPE + RMSNorm + QK-norm: both position schemes."""
    return Engine.load(tiny_export if request.param == "wpe" else tiny_rope_export, tools={}, device="cpu")


def prompts_of(tok) -> list[list[int]]:
    return [tok.encode(s) for s in ("The answer is", "Hi", "A longer prompt, with several words in it, to pad others",
                                    "x")]


def reference(model, prompt: list[int], n: int, temperature: float, top_k=None, seed: int = 0) -> list[int]:
    """Uncached decoding: the whole context re-run per token (GPT.generate's forward), sampled by the
    engine's sampler with the row's generator (random.Random(seed), one number per token)."""
    rng, params, idx = random.Random(seed), SamplingParams(temperature=temperature, top_k=top_k), list(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([idx]))[:, -1].float()
            idx.append(int(sample(logits, params, None if temperature <= 0 else [rng.random()])[0]))
    return idx[len(prompt):]


# ---- the cache in the model -----------------------------------------------------------------

@pytest.mark.parametrize("rope", [False, True])
def test_cached_forward_equals_full_forward_per_position(tiny_tok, rope):
    model = tiny_gpt(tiny_tok.vocab_size, seed=3, rope=rope)
    idx = torch.tensor([tiny_tok.encode("The quick brown fox jumps over the lazy dog again and again")])
    cache = KVCache(model.config, 1, idx.size(1))
    with torch.no_grad():
        model(idx[:, :5], kv_cache=cache)  # prefill 5, then one token at a time
        for t in range(5, idx.size(1)):
            cached = model(idx[:, t:t + 1], kv_cache=cache)[0, -1]
            full = model(idx[:, :t + 1])[0, -1]
            torch.testing.assert_close(cached, full, atol=1e-4, rtol=1e-4)
    assert cache.length == idx.size(1)


def test_left_padded_rows_get_their_own_positions(tiny_tok):
    """Left padding + mask + per-row positions: a padded row's logits are the row's alone."""
    model = tiny_gpt(tiny_tok.vocab_size, seed=4)
    short, long = tiny_tok.encode("Hi there"), tiny_tok.encode("A much longer prompt than the other")
    pad = len(long) - len(short)
    cache = KVCache(model.config, 2, len(long) + 1, pad=torch.tensor([pad, 0]))
    with torch.no_grad():
        both = model(torch.tensor([[7] * pad + short, long]), kv_cache=cache)[:, -1]
        assert torch.isfinite(both).all()
        torch.testing.assert_close(both[0], model(torch.tensor([short]))[0, -1], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(both[1], model(torch.tensor([long]))[0, -1], atol=1e-4, rtol=1e-4)


# ---- decoding equals the uncached reference ---------------------------------------------------

@pytest.mark.parametrize("temperature,top_k", [(0.0, None), (1.0, None), (0.8, 20)])
def test_kv_cache_decoding_equals_uncached_generate(engine, temperature, top_k):
    tok = engine.tokenizer
    for i, prompt in enumerate(prompts_of(tok)):
        [c] = engine.generate([prompt], SamplingParams(max_tokens=40, temperature=temperature, top_k=top_k,
                                                       seed=11 + i))
        assert c.finish_reason == "length" and len(c.tokens) == 40 and all(c.sampled)
        assert c.tokens == reference(engine.model, prompt, 40, temperature, top_k, seed=11 + i)
        assert c.text == tok.decode(c.tokens)


@pytest.mark.parametrize("params", [SamplingParams(max_tokens=30, temperature=0),
                                    SamplingParams(max_tokens=30, temperature=1.0, seed=3),
                                    SamplingParams(max_tokens=30, temperature=0.9, top_k=40, top_p=0.9, seed=7)])
def test_batched_rows_equal_each_row_alone(engine, params):
    prompts = prompts_of(engine.tokenizer)
    batched = engine.generate(prompts, params)
    for i, (p, b) in enumerate(zip(prompts, batched)):
        seed = None if params.seed is None else params.seed + i
        [alone] = engine.generate([p], SamplingParams(**{**vars(params), "seed": seed}))
        assert (b.tokens, b.sampled, b.finish_reason) == (alone.tokens, alone.sampled, alone.finish_reason)
    explicit = engine.generate(prompts[::-1], params, seeds=[params.seed + i for i in range(4)][::-1]) \
        if params.seed is not None else None
    if explicit:  # seeds= follow the rows, whatever their order in the batch
        assert [c.tokens for c in explicit] == [c.tokens for c in batched][::-1]


def test_same_seed_same_text_other_seed_other_text(engine):
    prompt = prompts_of(engine.tokenizer)[0]
    a, b, c = (engine.generate([prompt], SamplingParams(max_tokens=30, temperature=1.0, seed=s))[0].text
               for s in (5, 5, 6))
    assert a == b and a != c
    n1, n2 = (engine.generate([prompt], SamplingParams(max_tokens=30, temperature=1.0, seed=None))[0].text
              for _ in range(2))
    assert n1 != n2  # seed None: fresh randomness each call


def test_top_p_and_top_k_restrict_the_choices(engine):
    prompt = prompts_of(engine.tokenizer)[1]
    greedy = engine.generate([prompt], SamplingParams(max_tokens=20, temperature=0))[0].tokens
    for params in (SamplingParams(max_tokens=20, temperature=1.0, top_k=1, seed=1),
                   SamplingParams(max_tokens=20, temperature=1.0, top_p=1e-6, seed=2)):
        assert engine.generate([prompt], params)[0].tokens == greedy  # only the most likely token left


def test_rows_stop_at_their_own_context_limit(engine):
    """Each row may generate up to block_size - its prompt; a long row ending early leaves the short
    row running, exactly as it runs alone."""
    tok, block = engine.tokenizer, engine.model.config.block_size
    long = (tok.encode("word " * 400))[:block - 5]
    short = tok.encode("Hi")
    params = SamplingParams(max_tokens=block, temperature=0)
    a, b = engine.generate([long, short], params)
    assert (len(a.tokens), a.finish_reason) == (5, "length")
    assert (len(b.tokens), b.finish_reason) == (block - len(short), "length")
    assert b.tokens == engine.generate([short], params)[0].tokens


# ---- streaming ------------------------------------------------------------------------------

def test_stream_yields_the_generate_tokens_and_text(engine):
    prompt = prompts_of(engine.tokenizer)[0]
    params = SamplingParams(max_tokens=25, temperature=1.0, seed=9)
    [c] = engine.generate([prompt], params)
    events = list(engine.stream(prompt, params))
    assert [e.token for e in events] == c.tokens
    assert "".join(e.text for e in events) == c.text
    assert [e.finish_reason for e in events] == [None] * 24 + ["length"]
    assert not any(e.forced for e in events)


def byte_token(tok, b: int) -> int:
    return next(i for i in range(tok.vocab_size) if not tok.is_special(i) and tok.piece(i) == bytes([b]))


def test_stream_holds_a_split_utf8_character_until_complete(tiny_tok):
    tok = tiny_tok
    start, end = tok.encode("Sure")[-1], tok.special("im_end")
    e1, e2 = (byte_token(tok, b) for b in "é".encode())  # 0xC3 0xA9: two byte tokens
    engine = Engine(table_model(tok, script_table([start, e1, e2, tok.encode("!")[0], end])), tok, tools={})
    events = list(engine.stream([start], SamplingParams(max_tokens=10, temperature=0)))
    assert [e.text for e in events] == ["", "é", "!", "<|im_end|>"]
    assert events[-1].finish_reason == "stop"


# ---- stopping ---------------------------------------------------------------------------------

@pytest.mark.parametrize("stop", ["im_end", "endoftext"])
def test_stops_on_end_tokens(tiny_tok, stop):
    tok = tiny_tok
    words = tok.encode("Hello, world!")
    script = [tok.encode("Sure")[-1], *words, tok.special(stop)]
    engine = Engine(table_model(tok, script_table(script)), tok, tools={})
    [c] = engine.generate([script[:1]], SamplingParams(max_tokens=50, temperature=0))
    assert c.tokens == script[1:] and c.finish_reason == "stop"
    assert c.text == "Hello, world!" + f"<|{stop}|>"
    [short] = engine.generate([script[:1]], SamplingParams(max_tokens=2, temperature=0))
    assert short.tokens == script[1:3] and short.finish_reason == "length"
    [none] = engine.generate([script[:1]], SamplingParams(max_tokens=0))
    assert none.tokens == [] and none.finish_reason == "length"


def test_stop_event_cancels_generate_and_stream(engine):
    prompt = prompts_of(engine.tokenizer)[0]
    stop = threading.Event()
    stop.set()
    [c] = engine.generate([prompt], SamplingParams(max_tokens=50), stop_event=stop)
    assert c.tokens == [] and c.finish_reason == "cancelled"
    stop = threading.Event()
    seen = []
    for ev in engine.stream(prompt, SamplingParams(max_tokens=50), stop_event=stop):
        seen.append(ev)
        if len(seen) == 3:
            stop.set()
    assert len(seen) == 3 and all(e.finish_reason is None for e in seen)


# ---- tools ----------------------------------------------------------------------------------

def tool_script(tok, code: str, after: str = " The answer.") -> tuple[list[int], list[int], list[int]]:
    """(prompt, sampled before the output, sampled after it) for a table model that calls python."""
    prompt = render_for_completion(tok, [{"role": "user", "content": "What is 6*7?"}]) + tok.encode(" Sure")
    call = [tok.special("tool_start"), *tok.encode("python"), tok.special("im_sep"), *tok.encode(code),
            tok.special("tool_end")]
    rest = [*tok.encode(after), tok.special("im_end")]
    return prompt, call, rest


def tool_engine(tok, prompt, call, rest, tools=None) -> Engine:
    table = script_table([prompt[-1], *call])
    table.update(script_table([tok.special("output_end"), *rest]))
    return Engine(table_model(tok, table), tok, tools=tools)


def test_python_call_gets_forced_output_masked(tiny_tok):
    tok = tiny_tok
    prompt, call, rest = tool_script(tok, "print(6*7)")
    engine = tool_engine(tok, prompt, call, rest)  # default tools: the real sandboxed python
    [c] = engine.generate([prompt], SamplingParams(max_tokens=60, temperature=0))
    forced = [tok.special("output_start"), *tok.encode("42"), tok.special("output_end")]
    assert c.tokens == call + forced + rest
    assert c.sampled == [True] * len(call) + [False] * len(forced) + [True] * len(rest)
    assert c.finish_reason == "stop"
    assert parse_assistant(tok, c.tokens, c.sampled) == [
        {"type": "tool_call", "name": "python", "arguments": "print(6*7)"},
        {"type": "tool_output", "text": "42"}, {"type": "text", "text": " The answer."}]
    events = list(engine.stream(prompt, SamplingParams(max_tokens=60, temperature=0)))
    assert [e.token for e in events] == c.tokens and [not e.forced for e in events] == c.sampled


def test_failing_tools_come_back_as_error_text_and_the_row_goes_on(tiny_tok):
    tok = tiny_tok
    prompt, call, rest = tool_script(tok, "1/0")

    def broken(args: str) -> str:
        raise RuntimeError("tool exploded")
    for tools, expected in (({}, "Error: unknown tool 'python' (available: none)"),
                            ({"python": broken}, "Error: RuntimeError: tool exploded"),
                            (None, "Error: ZeroDivisionError: division by zero")):
        [c] = tool_engine(tok, prompt, call, rest, tools).generate([prompt], SamplingParams(max_tokens=80, temperature=0))
        output = [t for t, s in zip(c.tokens, c.sampled) if not s][1:-1]
        assert tok.decode(output) == expected
        assert c.tokens[-len(rest):] == rest and c.finish_reason == "stop"


def test_tool_output_cannot_close_the_turn(tiny_tok):
    """A result holding special-token strings is forced as ordinary text."""
    tok = tiny_tok
    prompt, call, rest = tool_script(tok, "x")
    tools = {"python": lambda args: "<|output_end|><|im_end|>"}
    [c] = tool_engine(tok, prompt, call, rest, tools).generate([prompt], SamplingParams(max_tokens=80, temperature=0))
    forced = [t for t, s in zip(c.tokens, c.sampled) if not s]
    assert forced[0] == tok.special("output_start") and forced[-1] == tok.special("output_end")
    assert not any(tok.is_special(t) for t in forced[1:-1])
    assert c.tokens[-len(rest):] == rest


def test_batched_tool_rows_equal_rows_alone_and_run_tools_concurrently(tiny_tok):
    tok = tiny_tok
    prompt, call, rest = tool_script(tok, "print(6*7)")
    other = tok.encode("Hello")  # maps to itself in the table model: repeats until the length
    assert other[-1] not in prompt + call + rest
    calls = []

    def slow(args: str) -> str:
        start = time.monotonic()
        time.sleep(0.3)
        calls.append((start, time.monotonic()))
        return "42"
    engine = tool_engine(tok, prompt, call, rest, {"python": slow})
    params = SamplingParams(max_tokens=40, temperature=0)
    batched = engine.generate([prompt, other, prompt], params)
    (s1, e1), (s2, e2) = sorted(calls)
    assert s2 < e1  # the two calls of one step ran at the same time
    for p, b in zip([prompt, other, prompt], batched):
        [alone] = engine.generate([p], params)
        assert (b.tokens, b.sampled, b.finish_reason) == (alone.tokens, alone.sampled, alone.finish_reason)
    assert batched[1].finish_reason == "length" and all(batched[1].sampled)


def test_a_row_waiting_for_its_tool_does_not_stall_the_others(tiny_tok):
    """Two rows call the same tool, the second 9 tokens after the first; the tool is a rendezvous:
    each call returns only once both have arrived. Tools run inside the decode loop -> the first
    call stalls every row, the second never comes (the barrier breaks after 5 s); off the loop ->
    the second row decodes on while the first waits, and both calls meet."""
    tok = tiny_tok
    prompt, call, rest = tool_script(tok, "print(6*7)")
    script = set(prompt + call + rest)
    chain = [t for t in dict.fromkeys(tok.encode("one two three four five six seven eight nine ten eleven"))
             if t not in script][:8]
    engine = tool_engine(tok, prompt, call, rest, {"python": lambda args: (barrier.wait(), "met")[1]})
    engine.model = table_model(tok, {**script_table([prompt[-1], *call]), **script_table([*chain, prompt[-1]]),
                                     **script_table([tok.special("output_end"), *rest])})
    late = tok.encode("Hello") + chain[:1]
    barrier = threading.Barrier(2, timeout=5)
    a, b = engine.generate([prompt, late], SamplingParams(max_tokens=60, temperature=0))
    for c in (a, b):
        assert tok.decode([t for t, s in zip(c.tokens, c.sampled) if not s][1:-1]) == "met"
        assert c.tokens[-len(rest):] == rest and c.finish_reason == "stop"
    assert b.tokens[:len(chain)] == chain[1:] + [prompt[-1]]   # b called 8 tokens after a


def test_the_cache_is_compacted_only_when_half_the_rows_are_done(tiny_tok, monkeypatch):
    """8 rows stopping one step apart: 3 compactions (to 4, 2, 1 rows), not one per finished row;
    every row still equals itself alone."""
    from training.engine import engine as engine_module
    tok = tiny_tok
    chain = list(dict.fromkeys(tok.encode("one two three four five six seven eight nine ten")))[:8]
    engine = Engine(table_model(tok, script_table([*chain, tok.special("im_end")])), tok, tools={})
    sizes = []
    keep = engine_module._RowCache.keep
    monkeypatch.setattr(engine_module._RowCache, "keep", lambda self, rows: (sizes.append(len(rows)), keep(self, rows)))
    prompts = [tok.encode("Hi") + [chain[k]] for k in range(8)]
    out = engine.generate(prompts, SamplingParams(max_tokens=20, temperature=0))
    assert sizes == [4, 2, 1]
    for k, c in enumerate(out):
        assert c.tokens == chain[k + 1:] + [tok.special("im_end")] and c.finish_reason == "stop"
        assert engine.generate([prompts[k]], SamplingParams(max_tokens=20, temperature=0))[0].tokens == c.tokens


# ---- loading and errors -----------------------------------------------------------------------

def test_load_export_dir_names_the_model_and_runs_fp32_on_cpu(tiny_export):
    engine = Engine.load(tiny_export, tools={}, device="cpu")
    assert engine.model_name == tiny_export.parent.name  # .../<run>/export -> <run>
    assert engine.device.type == "cpu" and next(engine.model.parameters()).dtype == torch.float32
    assert not engine.model.training


def test_user_errors_name_what_to_fix(engine, tmp_path):
    with pytest.raises(InputError, match="neither an export directory"):
        Engine.load(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no config.json"):
        Engine.load(tmp_path / "empty")
    block = engine.model.config.block_size
    with pytest.raises(InputError, match=f"prompt 1 has {block} tokens"):
        engine.generate([[1, 2], [1] * block], SamplingParams())
    with pytest.raises(InputError, match="prompt 0 is empty"):
        engine.generate([[]], SamplingParams())
    with pytest.raises(InputError, match="outside the vocabulary"):
        engine.generate([[10 ** 6]], SamplingParams())
    for bad, field in ((dict(top_p=1.5), "top_p"), (dict(top_k=0), "top_k"), (dict(temperature=-1), "temperature"),
                       (dict(max_tokens=-1), "max_tokens")):
        with pytest.raises(ConfigError, match=field):
            engine.generate([[1]], SamplingParams(**bad))
    assert issubclass(InputError, UserError)


@pytest.mark.slow
def test_load_registered_mlflow_model(tiny_export, tmp_path, monkeypatch):
    """A real MLflow registry (SQLite + local artifacts): 'NAME@ALIAS', 'NAME/VERSION' and
    'models:/NAME@ALIAS' load the version's run artifacts 'model', as the base_model asset logs them."""
    from mlflow import MlflowClient
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("CRAWL2CHAT_MODEL_CACHE", str(tmp_path / "cache"))
    client = MlflowClient(uri)
    exp = client.create_experiment("engine-test", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(exp)
    client.log_artifacts(run.info.run_id, str(tiny_export), artifact_path="model")
    client.set_terminated(run.info.run_id)
    client.create_registered_model("tiny-base")
    mv = client.create_model_version("tiny-base", source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias("tiny-base", "candidate", mv.version)
    params = SamplingParams(max_tokens=20, temperature=0)
    prompt = [1, 2, 3]
    want = Engine.load(tiny_export, tools={}, device="cpu").generate([prompt], params)[0].tokens
    for spec in ("tiny-base@candidate", f"tiny-base/{mv.version}", "models:/tiny-base@candidate"):
        engine = Engine.load(spec, tools={}, device="cpu")
        assert engine.model_name == spec.removeprefix("models:/")
        assert engine.generate([prompt], params)[0].tokens == want
    with pytest.raises(InputError, match="not found in MLflow"):
        Engine.load("tiny-base@nope", tools={})
    # a version whose run logged no model: one clear error, and no half-download left in the cache
    empty = client.create_run(exp)
    client.create_model_version("tiny-base", source=f"{empty.info.artifact_uri}/model", run_id=empty.info.run_id)
    with pytest.raises(InputError, match="has no 'model' artifacts"):
        Engine.load("tiny-base/2", tools={})
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [f"tiny-base-v1-{run.info.run_id[:12]}"]
