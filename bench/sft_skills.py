"""What an SFT run taught, on held-out prompts: one JSON line per model.

    .venv/bin/python bench/sft_skills.py --model lake/models/chat/<run>/export --mixture lake/post_training/sft_mixture \
        --shards lake/tokens/<crawl> --clean lake/crawls/<crawl>/clean [--model ...]

Per model (temperature 0 unless said; every prompt held out by construction, training/conversations):
  identity            held-out "who are you" paraphrases: the reply says the configured name
  identity_system     the same under held-out system prompts (identity.SYSTEM_HELDOUT)
  arithmetic          held-out expressions and word problems, python tool on: the final number
  counting, spelling  held-out letter questions (corpus words), python tool on
  tool_call_valid     python tool calls of those replies that parse (ast.parse)
  idk_unknown         held-out questions about invented entities (the eval suite's unknown_entities): the reply refuses
  protocol            the chat_model check's own sampling: gate prompts x samples at its temperature
  bpb                 bits per byte on the val token shards (the base's held-out clean text)
Each rate with n and a Wilson 95% interval. Timings are not the point here; the wall time is printed.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rate(k: int, n: int) -> dict:
    from training.evals.intervals import wilson
    lo, hi = wilson(k, n) if n else (None, None)
    return {"rate": round(k / n, 4) if n else None, "k": k, "n": n,
            "ci95": [round(lo, 4), round(hi, 4)] if n else None}


def _replies(engine, messages: list[list[dict]], max_tokens: int = 128):
    from training.conversations.render import render_for_completion
    from training.evals.core import Sampling, generate_rows, reply_parts
    prompts = [render_for_completion(engine.tokenizer, m) for m in messages]
    done = generate_rows(engine, prompts, list(range(len(prompts))), Sampling(max_tokens=max_tokens))
    return [reply_parts(engine.tokenizer, c) for c in done]


def evaluate(export: str, mixture: str | None, shards: str | None, clean: str | None, name: str, n: int,
             protocol_prompts: int, protocol_samples: int) -> dict:
    from pipelines.io import read_documents
    from training.conversations import identity
    from training.conversations.reasoning import corpus_words
    from training.engine.engine import Engine
    from training.engine.tools import default_tools
    from training.evals.core import reply_text
    from training.evals.generative import identity_items, reasoning_items, unknown_entity_items
    t0 = time.time()
    engine = Engine.load(export, tools=default_tools())
    words = corpus_words(d.text for i, d in zip(range(2000), read_documents([Path(clean)]))) if clean else None
    out: dict = {"model": export}
    calls = valid = 0

    def score(task: str, items, system: str | None = None):
        nonlocal calls, valid
        msgs = [([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": it.question}]
                for it in items]
        right = 0
        for it, parts in zip(items, _replies(engine, msgs)):
            right += bool(it.check(reply_text(parts))[0])
            for p in parts:
                if p["type"] == "tool_call" and p["name"] == "python":
                    calls += 1
                    try:
                        ast.parse(p["arguments"])
                        valid += 1
                    except SyntaxError:
                        pass
        out[task] = _rate(right, len(items))

    ident = identity_items(name, systems=False)
    score("identity", ident)
    k = n_sys = 0
    for s in identity.system_prompts("heldout"):
        score("_tmp", ident, s)
        k, n_sys = k + out["_tmp"]["k"], n_sys + out["_tmp"]["n"]
    out.pop("_tmp")
    out["identity_system"] = _rate(k, n_sys)
    for task in ("arithmetic", "counting", "spelling"):
        score(task, reasoning_items(task, n, words=words))
    out["tool_call_valid"] = _rate(valid, calls)
    unknown = unknown_entity_items(n)   # the eval suite's task; its tool calls are not counted above
    replies = _replies(engine, [[{"role": "user", "content": it.question}] for it in unknown])
    out["idk_unknown"] = _rate(sum(it.check(reply_text(p))[0] for it, p in zip(unknown, replies)), len(unknown))
    if mixture:
        from training.conversations.heldout import gate_prompts, generator_heldout_prompts
        from training.evals.protocol import protocol_adherence
        from training.sft import load_conversations
        gate, _ = gate_prompts(load_conversations(mixture, "train"), load_conversations(mixture, "val"),
                               protocol_prompts, extra=generator_heldout_prompts())
        p = protocol_adherence(engine, gate * protocol_samples, 176, 0.7)
        out["protocol"] = _rate(p["adherent"], p["prompts"])
    if shards:
        from training.evals.lm import BitsPerByte
        r = BitsPerByte(shards).run(engine, 0)
        out["bpb"] = {"value": round(r.score, 4), "windows": r.n}
    out["wall_s"] = round(time.time() - t0, 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="export directory (repeat for several)")
    ap.add_argument("--mixture", help="the SFT mixture (train/ val/): the protocol gate's prompts")
    ap.add_argument("--shards", help="token shards root with a val split: bits per byte")
    ap.add_argument("--clean", help="clean_text directory: the corpus words of the letter questions")
    ap.add_argument("--name", default="crawl2chat")
    ap.add_argument("--n", type=int, default=60, help="held-out items per task")
    ap.add_argument("--protocol-prompts", type=int, default=64)
    ap.add_argument("--protocol-samples", type=int, default=10)
    args = ap.parse_args()
    for m in args.model:
        print(json.dumps(evaluate(m, args.mixture, args.shards, args.clean, args.name, args.n,
                                  args.protocol_prompts, args.protocol_samples)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
