"""What `crawl2chat serve`'s request limits cost and save (issue 23 point 4); prints JSON.

    .venv/bin/python bench/serve_limits.py

- parse: the worst body the limits let in (2 MiB of one-character messages: counted and refused
  before validation) against the 8 MB body of 239k messages the old limits parsed and validated.
- stop scan: PartStream.feed per token with stop strings at the length limit (4 x 256 characters)
  and, for scale, the old hold-back scan (every prefix of the stop string tested each token) on a
  20k-character stop string (the 200k one takes minutes per token).
- stalled bodies: 40 clients each send 1.9 MB of a 2 MB body and stall, then close; the server's
  RSS before, while they stall and 3 s after they closed (a real uvicorn in this process, the tests'
  tiny model; the memory of abandoned bodies goes back to the system).
All in this process.
"""
from __future__ import annotations

import json
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def best_of(fn, n: int = 3) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def rss_mb() -> int:
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) // 1024


def stalled_bodies(clients: int = 40) -> dict:
    from engine_fixtures import _never_sampled, build_tokenizer, export_model, tiny_gpt
    from pipelines.tokenizer import load_tokenizer
    from serve_fixtures import serving
    from training.engine.engine import Engine
    from training.engine.server import create_app
    d = Path(tempfile.mkdtemp())
    tok_dir = build_tokenizer(d / "tok")
    tok = load_tokenizer(tok_dir)
    engine = Engine.load(export_model(tiny_gpt(tok.vocab_size, special_ids=_never_sampled(tok)), d / "export",
                                      tok_dir), tools={}, device="cpu")
    with serving(create_app(engine)) as url:
        port = int(url.rsplit(":", 1)[1])
        out = {"stalled_clients": clients, "rss_start_mb": rss_mb()}
        socks = []
        for _ in range(clients):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                      b"\r\nContent-Length: 2000000\r\n\r\n" + b" " * 1_900_000)
            socks.append(s)
        time.sleep(3)
        out["rss_stalled_mb"] = rss_mb()
        for s in socks:
            s.close()
        time.sleep(3)
        out["rss_after_close_mb"] = rss_mb()
    return out


def main() -> None:
    from training.engine.openai_protocol import ApiError, ChatRequest, Limits, parse_request
    from training.engine.reply_parts import PartStream

    limits = Limits()
    at_limit = json.dumps({"messages": [{"role": "user", "content": "x"}] * 60_000})[:limits.max_body_bytes - 2]
    at_limit = at_limit[:at_limit.rfind("},") + 1] + "]}"
    old = json.dumps({"messages": [{"role": "user", "content": "x"}] * 239_000}).encode()

    def parse_new():
        try:
            parse_request(at_limit.encode(), limits)
        except ApiError:
            pass

    def parse_old():  # FastAPI's path before: json.loads, then pydantic builds every message
        ChatRequest.model_validate(json.loads(old))

    class Tok:
        special_ids = {}

        def special(self, name):
            return -1 - hash(name) % 1000

    words = [f"w{i % 97} " for i in range(200)]

    def scan(stops):
        s = PartStream(Tok(), stops)
        for i, w in enumerate(words):
            s.feed(i + 10_000, w, False)

    def old_scan(stop: str, tokens: int = 3):
        held = ""
        for w in words[:tokens]:
            s = held + w
            keep = max((k for k in range(1, len(stop)) if s.endswith(stop[:k])), default=0)
            held = s[len(s) - keep:]

    stops = ["ab" * 128, "q" * 256, "\n\nUser:" + "x" * 249, "w1 w2 " * 42]
    out = {
        "body_at_limit_bytes": len(at_limit), "parse_at_limit_s": round(best_of(parse_new), 4),
        "old_body_bytes": len(old), "parse_old_body_s": round(best_of(parse_old, 1), 3),
        "stop_scan_per_token_us_4x256": round(1e6 * best_of(lambda: scan(stops)) / len(words), 1),
        "old_stop_scan_per_token_s_20k": round(best_of(lambda: old_scan("ab" * 10_000), 1) / 3, 3),
        **stalled_bodies(),
        "machine": "2 x86_64 cores shared, no GPU",
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
