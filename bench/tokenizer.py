"""Tokenizer benchmark: BPE training time, shard-writer encoding throughput vs raw `encode_batch`,
and compression (bytes per token) on held-out English. Prints JSON.

    .venv/bin/python bench/tokenizer.py                      # 20 MB training sample, extrapolated
    .venv/bin/python bench/tokenizer.py --train-mb 100       # the full 100 MB measurement

Corpus: CPython documentation prose (the sample crawl's English pool), the sample crawl's
foreign-language sentences, and the docstrings of the standard library and of every installed
package (~50 MB of distinct English technical prose, all offline). Every distinct paragraph is used
once, then documents are remixed by a seeded RNG (paragraph choice, word rotation, inserted numbers
and identifiers) up to the size asked. Paragraphs are split 90/10 by hash: training text never
contains the held-out paragraphs that compression is measured on.

Encoding is measured single-threaded (TOKENIZERS_PARALLELISM=false) in CPU seconds of this
process, so the figure is per core and holds on a shared, loaded machine; training uses every core
the machine gives it and is reported in wall seconds (and CPU seconds).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _held_out(p: str) -> bool:
    return hashlib.blake2b(p.encode(), digest_size=4).digest()[0] < 26  # ~10%


_DOCSTRING = re.compile(r'"""(.*?)"""', re.S)


def docstrings() -> list[str]:
    """Distinct prose-like docstrings (>= 200 chars, >= 80% letters/spaces) of stdlib + site-packages."""
    seen: dict[str, None] = {}
    for key in ("stdlib", "purelib"):
        for f in sorted(Path(sysconfig.get_paths()[key]).rglob("*.py")):
            try:
                src = f.read_text("utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            for m in _DOCSTRING.finditer(src):
                d = m.group(1).strip()
                if len(d) >= 200 and sum(c.isalpha() or c == " " for c in d) >= 0.8 * len(d):
                    seen.setdefault(d)
    return list(seen)


def paragraph_pools():
    from pipelines.samplecrawl.texts import FOREIGN, english_paragraphs
    english = list(english_paragraphs())
    doc = docstrings()
    foreign = [s for sents in FOREIGN.values() for s in sents]
    return ([p for p in english + doc if not _held_out(p)], [p for p in english if _held_out(p)],
            [p for p in doc if _held_out(p)], foreign)


def documents(pool: list[str], foreign: list[str], mb: float, seed: int = 0):
    """Documents of 3-8 paragraphs until `mb` MB of UTF-8 text: every pool paragraph once (in a
    seeded order), then remixed ones."""
    rng = random.Random(seed)
    target, size, n = int(mb * 1e6), 0, 0
    fresh = pool[:]
    rng.shuffle(fresh)
    while size < target:
        paras = []
        for _ in range(rng.randint(3, 8)):
            if fresh:
                paras.append(fresh.pop())
                continue
            words = rng.choice(pool).split(" ")
            k = rng.randrange(len(words))
            # rotate, and plant a number / identifier so documents are not exact repeats
            words = words[k:] + words[:k]
            words.insert(rng.randrange(len(words) + 1), rng.choice(
                [str(rng.randint(0, 10 ** rng.randint(1, 6))), f"var_{rng.randint(0, 9999)}",
                 f"v{rng.randint(1, 3)}.{rng.randint(0, 20)}"]))
            paras.append(" ".join(words))
        if rng.random() < 0.1:
            paras.append(" ".join(rng.choice(foreign) for _ in range(3)))
        doc = "\n\n".join(paras)
        size += len(doc.encode("utf-8"))
        n += 1
        yield (f"doc-{n:08d}", doc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train-mb", type=float, default=20.0)
    ap.add_argument("--full-mb", type=float, default=100.0, help="size the training time is extrapolated to")
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--encode-mb", type=float, default=10.0)
    args = ap.parse_args()

    from pipelines.shards import write_token_shards
    from pipelines.tokenizer import bytes_per_token, load_tokenizer, train_tokenizer
    t0 = time.perf_counter()
    train_pool, held_out, held_out_doc, foreign = paragraph_pools()
    corpus_seconds = time.perf_counter() - t0
    result = {"cores": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 1), "vocab_size": args.vocab,
              "corpus": {"distinct_train_paragraphs_mb": round(sum(len(p.encode()) for p in train_pool) / 1e6, 1),
                         "build_seconds": round(corpus_seconds, 1)}}

    with tempfile.TemporaryDirectory() as tmp:
        texts = [t for _, t in documents(train_pool, foreign, args.train_mb, seed=0)]
        mb = sum(len(t.encode()) for t in texts) / 1e6
        t0, c0 = time.perf_counter(), time.process_time()
        tok_dir = train_tokenizer(texts, args.vocab, Path(tmp) / "tok")
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        del texts
        result["train"] = {"measured_mb": round(mb, 2), "seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
                           f"extrapolated_seconds_for_{args.full_mb:g}_mb": round(wall * args.full_mb / mb, 1),
                           "extrapolation": "linear in corpus size" if mb < args.full_mb else "none (measured)"}
        tok = load_tokenizer(tok_dir)
        result["train"]["merges"] = tok.meta["merges"]

        # Encoding, single core: the shard writer end to end vs encode_batch on the same texts.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        docs = list(documents(train_pool, foreign, args.encode_mb, seed=1))
        texts = [t for _, t in docs]
        enc_mb = sum(len(t.encode()) for t in texts) / 1e6
        batch = 512
        runs = {"encode_batch": lambda b: tok.hf.encode_batch(b, add_special_tokens=False),
                "encode_batch_fast": lambda b: tok.hf.encode_batch_fast(b, add_special_tokens=False)}
        best = {k: float("inf") for k in (*runs, "shard_writer")}
        for _ in range(5):  # best of five, interleaved: single runs of the same call vary by 1.5x here
            for name, fn in runs.items():
                t0 = time.process_time()
                for i in range(0, len(texts), batch):
                    fn(texts[i:i + batch])
                best[name] = min(best[name], time.process_time() - t0)
            t0 = time.process_time()
            write_token_shards(docs, Path(tmp) / "shards", tok,
                               {"val_fraction": 0.01, "shard_tokens": 1_000_000, "encode_batch_docs": batch})
            best["shard_writer"] = min(best["shard_writer"], time.process_time() - t0)
        result["encode_single_core"] = {
            "mb": round(enc_mb, 2), "documents": len(docs),
            **{f"{k}_mb_per_cpu_s": round(enc_mb / v, 2) for k, v in best.items()},
            "ratio_writer_to_encode_batch": round(best["encode_batch"] / best["shard_writer"], 3),
            "ratio_writer_to_encode_batch_fast": round(best["encode_batch_fast"] / best["shard_writer"], 3)}

        held = bytes_per_token(tok, held_out)
        held_doc = bytes_per_token(tok, held_out_doc)
        result["bytes_per_token"] = {"held_out_cpython_docs_prose": round(held["bytes_per_token"], 3),
                                     "held_out_cpython_docs_mb": round(held["bytes"] / 1e6, 3),
                                     "held_out_docstrings": round(held_doc["bytes_per_token"], 3),
                                     "held_out_docstrings_mb": round(held_doc["bytes"] / 1e6, 2)}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
