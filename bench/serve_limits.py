"""What `crawl2chat serve`'s request limits cost and save (issue 23 point 4); prints JSON.

    .venv/bin/python bench/serve_limits.py

- parse: the worst body the limits let in (2 MiB of one-character messages: counted and refused
  before validation) against the 8 MB body of 239k messages the old limits parsed and validated.
- stop scan: PartStream.feed per token with stop strings at the length limit (4 x 256 characters)
  and, for scale, the old hold-back scan (every prefix of the stop string tested each token) on a
  20k-character stop string (the 200k one takes minutes per token).
All in this process, one thread; no server.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def best_of(fn, n: int = 3) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


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
        "machine": "2 x86_64 cores shared, no GPU",
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
