"""Inference engine throughput; prints JSON.

1. Decode tokens/s with the KV cache (Engine.generate) against the uncached GPT.generate, which re-runs
   the whole context per token, at context 256 and 1024 (prompt = context - new tokens).
2. Batched throughput: generated tokens/s of the whole batch at batch 1, 8 and 32, prompts of
   different lengths (left padding exercised), prefill included, and its decode-only rate.
3. Rollouts as RL samples them (--rollouts, or --only rollouts): batch 32, temperature 1 with a seed
   per row, with and without a call of the real python tool (training.engine.tools.default_tools,
   the bubblewrap sandbox) in half the rows, each row calling at its own step. The calls are
   scripted on top of the random model by a forward hook (the row's last token -> a forced next
   token; special tokens otherwise never sampled, so every row runs to max_tokens): the forward's
   cost is the real model's. Generated tokens (forced tool output included) per second, best of 2.
   A third case calls a tool that only waits 0.25 s (the python tool's latency here) and costs no
   CPU: the engine's overlap alone, without the sandbox's CPU and its one-slot-per-core queue.

A random `tiny` model (4 x 256) with block_size 1280 so that context 1024 fits (the trained preset
has 256; the weights' values do not change the speed). Greedy decoding, the stop tokens' logits
zeroed so every row runs to max_tokens. CPU: fp32, one intra-op thread unless --threads. CUDA: bf16.

    python bench/engine.py [--preset tiny] [--device cpu|cuda] [--threads 1] [--new-tokens 32]
    python bench/engine.py --only rollouts [--rollout-tokens 64]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def build(preset_name: str, vocab: int, block: int, device: str):
    from pydoc_data.topics import topics

    from pipelines.tokenizer import load_tokenizer, train_tokenizer
    from training.engine.engine import Engine
    from training.model import GPT, preset
    tok_dir = train_tokenizer(list(topics.values()), vocab_size=vocab, out_dir=tempfile.mkdtemp(), max_chars=200_000)
    tok = load_tokenizer(tok_dir)
    torch.manual_seed(0)
    model = GPT(preset(preset_name, vocab_size=vocab, block_size=block))
    with torch.no_grad():  # tied head: zero special rows so greedy never stops early
        model.wte.weight[[i for i in range(vocab) if tok.is_special(i)]] = 0.0
    return Engine(model, tok, tools={}, device=device), tok


def sync(engine) -> None:
    if engine.device.type == "cuda":
        torch.cuda.synchronize()


def timed(engine, fn, repeat: int = 3) -> float:
    """Best of `repeat` (the shared box is noisy; the minimum is the least disturbed run)."""
    best = float("inf")
    for _ in range(repeat):
        sync(engine)
        t0 = time.perf_counter()
        fn()
        sync(engine)
        best = min(best, time.perf_counter() - t0)
    return best


def prompt_of(tok, n: int, seed: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    ordinary = [i for i in range(tok.vocab_size) if not tok.is_special(i)]
    return [ordinary[int(j)] for j in torch.randint(0, len(ordinary), (n,), generator=g)]


def cache_vs_uncached(engine, tok, context: int, new: int) -> dict:
    from training.engine.engine import SamplingParams
    prompt = prompt_of(tok, context - new)
    greedy = SamplingParams(max_tokens=new, temperature=0)
    first = timed(engine, lambda: engine.generate([prompt], SamplingParams(max_tokens=1, temperature=0)))
    full = timed(engine, lambda: engine.generate([prompt], greedy))
    idx = torch.tensor([prompt], device=engine.device)
    with torch.inference_mode():
        uncached = timed(engine, lambda: engine.model.generate(idx, new, temperature=0), repeat=1)
    cached_tok_s = (new - 1) / max(full - first, 1e-9)
    uncached_tok_s = new / uncached
    return {"context": context, "new_tokens": new, "prefill_ms": round(1000 * first, 1),
            "cached_decode_tok_s": round(cached_tok_s, 1), "uncached_generate_tok_s": round(uncached_tok_s, 2),
            "speedup": round(cached_tok_s / uncached_tok_s, 1)}


def batched(engine, tok, batch: int, new: int) -> dict:
    from training.engine.engine import SamplingParams
    prompts = [prompt_of(tok, 32 + (17 * i) % 96, seed=i) for i in range(batch)]  # 32..127 tokens
    params = SamplingParams(max_tokens=new, temperature=0)
    first = timed(engine, lambda: engine.generate(prompts, SamplingParams(max_tokens=1, temperature=0)))
    total = timed(engine, lambda: engine.generate(prompts, params))
    return {"batch": batch, "new_tokens": new, "prompt_tokens": sum(map(len, prompts)),
            "tok_s": round(batch * new / total, 1),
            "decode_tok_s": round(batch * (new - 1) / max(total - first, 1e-9), 1)}


def scripted_tool_calls(engine, tok, rows: int, spread: int) -> tuple[list[list[int]], object]:
    """Prompts whose row i (i odd: half the rows) calls python after about (i // 2) * spread / (rows // 2)
    sampled tokens, and the forward hook that scripts it: a chain of ordinary tokens c_0 -> c_1 -> ...
    -> tool_start python <|im_sep|> 6*7 <|tool_end|>; a row enters the chain at its own distance from
    the call. Other rows end their prompt off the chain and sample freely (specials masked)."""
    code = tok.encode("6*7")
    name = tok.encode("python")
    ordinary = [i for i in range(tok.vocab_size) if not tok.is_special(i) and i not in code + name]
    chain = ordinary[:spread]
    script = chain + [tok.special("tool_start"), *name, tok.special("im_sep"), *code, tok.special("tool_end")]
    table = torch.full((tok.vocab_size,), -1, dtype=torch.long)
    table[torch.tensor(script[:-1])] = torch.tensor(script[1:])
    table = table.to(engine.device)
    # never sampled unless scripted: specials (rows run to max_tokens) and the script (rows that do
    # not enter the chain never call)
    never = torch.tensor(sorted({i for i in range(tok.vocab_size) if tok.is_special(i)} | set(script)),
                         device=engine.device)

    def hook(module, args, out):
        nxt = table[args[0][:, -1]]
        out[:, -1, never] = -float("inf")
        hit = (nxt >= 0).nonzero().flatten()
        out[hit, -1, nxt[hit]] = 1e4   # the scripted token (sampling then picks it with probability 1)
        return out
    prompts = []
    for i in range(rows):
        p = prompt_of(tok, 32 + (17 * i) % 96, seed=100 + i)
        p = [t for t in p if t not in script] or [ordinary[-1]]
        if i % 2:   # enter the chain (i // 2) * spread / (rows // 2) tokens before the call
            p.append(chain[(i // 2) * spread // (rows // 2)])
        prompts.append(p)
    return prompts, hook


def _waiting_tool(args: str) -> str:
    time.sleep(0.25)
    return "42"


def rollouts(engine, tok, batch: int, new: int, tool: str | None) -> dict:
    """tool: None (no calls), "python" (the real sandboxed tool) or "wait" (_waiting_tool)."""
    from training.engine.engine import SamplingParams
    from training.engine.tools import default_tools
    engine.tools = {None: {}, "python": default_tools(), "wait": {"python": _waiting_tool}}[tool]
    prompts, hook = scripted_tool_calls(engine, tok, batch, spread=new // 2)
    if tool is None:
        prompts = [p[:-1] if i % 2 else p for i, p in enumerate(prompts)]   # nobody enters the chain
    handle = engine.model.register_forward_hook(hook)
    out = []
    try:
        params = SamplingParams(max_tokens=new, temperature=1.0, seed=0)
        total = timed(engine, lambda: out.append(engine.generate(prompts, params)), repeat=2)
    finally:
        handle.remove()
        engine.tools = {}
    done = out[-1]
    calls = sum(c.tokens.count(tok.special("tool_start")) for c in done)
    outputs = {tok.decode([t for t, s in zip(c.tokens, c.sampled) if not s][1:-1]) for c in done if not all(c.sampled)}
    tokens = sum(len(c.tokens) for c in done)
    return {"batch": batch, "max_tokens": new, "tool_calls": calls, "tool_outputs": sorted(outputs),
            "tokens": tokens, "seconds": round(total, 3), "tok_s": round(tokens / total, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--only", choices=["rollouts"], help="run only this part")
    ap.add_argument("--rollout-batch", type=int, default=32)
    ap.add_argument("--rollout-tokens", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    engine, tok = build(args.preset, args.vocab, 1280, args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = {"bench": "engine", "device": torch.cuda.get_device_name() if engine.device.type == "cuda" else "cpu",
           "dtype": str(next(engine.model.parameters()).dtype).replace("torch.", ""), "preset": args.preset,
           "block_size": 1280, "vocab_size": args.vocab, "threads": torch.get_num_threads(),
           "torch": torch.__version__}
    if args.only is None:
        out["cache_vs_uncached"] = [cache_vs_uncached(engine, tok, c, args.new_tokens) for c in (256, 1024)]
        out["batched"] = [batched(engine, tok, b, 2 * args.new_tokens) for b in (1, 8, 32)]
    out["rollouts"] = {kind: rollouts(engine, tok, args.rollout_batch, args.rollout_tokens, tool)
                       for kind, tool in (("no_tools", None), ("python_in_half", "python"),
                                          ("waiting_tool_in_half", "wait"))}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
