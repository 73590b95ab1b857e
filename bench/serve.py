"""`crawl2chat serve` over HTTP: time to first token and tokens/s through the API; prints JSON.

A random `tiny` model (4 x 256, the demo's shape, special tokens' logits zeroed so every reply runs
to max_tokens) exported like a trained one and served by the real subprocess (`python -m
pipelines.cli serve`). Each request streams (SSE) a reply to a short and to a long prompt; the
figures are medians over --requests. The same prompt through Engine.stream in this process gives
the engine's own rate, so the server's cost (HTTP, JSON per chunk, the thread hop) shows apart.

    python bench/serve.py [--requests 5] [--max-tokens 128] [--device cpu|cuda] [--threads 1]

ttft_ms: POST sent -> first chunk with text (prefill + first token + HTTP). tokens_per_s: completion
tokens / (last chunk - first chunk), i.e. decode as the client sees it.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
import torch  # noqa: E402


def build_export(out: Path, preset_name: str, vocab: int) -> Path:
    from pydoc_data.topics import topics

    from pipelines.tokenizer import load_tokenizer, train_tokenizer
    from training.export import export_state
    from training.model import GPT, preset
    tok_dir = train_tokenizer(list(topics.values()), vocab_size=vocab, out_dir=out / "tokenizer", max_chars=200_000)
    tok = load_tokenizer(tok_dir)
    torch.manual_seed(0)
    model = GPT(preset(preset_name, vocab_size=vocab))
    with torch.no_grad():  # tied head: zero the special rows so no reply ends early
        model.wte.weight[[i for i in range(vocab) if tok.is_special(i)]] = 0.0
    return export_state(model.state_dict(), model.config, out / "export", tokenizer_dir=tok_dir)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stream_once(url: str, messages: list[dict], max_tokens: int) -> dict:
    t0 = time.perf_counter()
    first = last = None
    usage = None
    with requests.post(f"{url}/v1/chat/completions", stream=True, timeout=600,
                       json={"messages": messages, "stream": True, "max_tokens": max_tokens, "seed": 0,
                             "stream_options": {"include_usage": True}}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            elif chunk["choices"][0]["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
    n = usage["completion_tokens"]
    return {"ttft_s": first - t0, "tokens": n, "decode_tokens_per_s": (n - 1) / max(last - first, 1e-9),
            "total_s": last - t0, "prompt_tokens": usage["prompt_tokens"]}


def engine_rate(export: Path, messages: list[dict], max_tokens: int, device: str) -> dict:
    """The same request through Engine.stream in this process: first token and decode rate without HTTP."""
    from training.conversations.render import render_for_completion
    from training.engine.engine import Engine, SamplingParams
    engine = Engine.load(export, tools={}, device=device)
    prompt = render_for_completion(engine.tokenizer, messages)
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        times = [time.perf_counter() for _ in engine.stream(prompt, SamplingParams(max_tokens=max_tokens, seed=0))]
        runs.append({"ttft_s": times[0] - t0, "decode_tokens_per_s": (len(times) - 1) / (times[-1] - times[0])})
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads of the server and the engine (default: 1 on CPU, where the "
                         "shared box's other load makes more threads spin and slow down many times over)")
    args = ap.parse_args()
    if args.threads is None and args.device == "cpu":
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    export = build_export(tmp, args.preset, args.vocab)
    port = free_port()
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}))
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "--model", str(export), "--port",
                             str(port), "--device", args.device], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.time()
        while True:
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                if proc.poll() is not None or time.time() - t0 > 180:
                    sys.exit("the server did not start")
            time.sleep(0.2)
        startup_s = time.time() - t0
        context = requests.get(f"{url}/health", timeout=5).json()["context"]
        long_words = (context - args.max_tokens - 24) // 2  # " w" pairs: about one token each
        prompts = {"short": [{"role": "user", "content": "Hello, how are you?"}],
                   "long": [{"role": "user", "content": " ".join(["word", "list"] * long_words)}]}
        results = {}
        for name, messages in prompts.items():
            stream_once(url, messages, args.max_tokens)  # warm-up
            runs = [stream_once(url, messages, args.max_tokens) for _ in range(args.requests)]
            api = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            eng = engine_rate(export, messages, args.max_tokens, args.device)
            results[name] = {
                "prompt_tokens": api["prompt_tokens"], "completion_tokens": api["tokens"],
                "ttft_ms": round(1000 * api["ttft_s"], 1),
                "tokens_per_s": round(api["decode_tokens_per_s"], 1),
                "engine_ttft_ms": round(1000 * eng["ttft_s"], 1),
                "engine_tokens_per_s": round(eng["decode_tokens_per_s"], 1),
                "server_overhead_pct": round(100 * (eng["decode_tokens_per_s"] / api["decode_tokens_per_s"] - 1), 1),
            }
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    print(json.dumps({"bench": "serve", "device": args.device, "preset": args.preset, "context": context,
                      "vocab_size": args.vocab, "max_tokens": args.max_tokens, "requests": args.requests,
                      "server_startup_s": round(startup_s, 1), "cpu_threads": torch.get_num_threads(),
                      **results}, indent=1))


if __name__ == "__main__":
    main()
