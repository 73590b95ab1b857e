"""Decontamination speed on real web text; prints JSON.

The corpus: realweb's gold main texts (../shared/realweb/html/*.jsonl.gz, field gold_text), repeated
`--repeat` times; the items: the eval suite's generated chat items (identity, arithmetic, counting,
spelling, protocol prompts) plus one planted 30-word excerpt of a corpus page, which must be found.
Reports corpus words scanned per second through training/evals/decontam.py (13-grams, the dedup
stage's normalization and hashing).

    python bench/decontam.py [--repeat 5] [--ngram 13]
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--ngram", type=int, default=13)
    args = ap.parse_args()
    realweb = Path(__file__).resolve().parents[2] / "shared" / "realweb" / "html"
    if not realweb.is_dir():
        sys.exit(f"no realweb data at {realweb}: see /work/shared/realweb/README.md")
    texts = []
    for f in sorted(realweb.glob("*.jsonl.gz")):
        with gzip.open(f, "rt") as fh:
            texts += [r["gold_text"] for line in fh if (r := json.loads(line)).get("gold_text")]
    from training.evals.decontam import find_contamination
    from training.evals.generative import GenerativeTask, Item, identity_items, reasoning_items
    from training.evals.suite import protocol_prompts
    from training.evals.protocol import ProtocolAdherence
    planted = " ".join(texts[len(texts) // 2].split()[40:70])
    tasks = [GenerativeTask("identity", identity_items("crawl2chat")),
             *[GenerativeTask(t, reasoning_items(t, 64)) for t in ("arithmetic", "counting", "spelling")],
             ProtocolAdherence(protocol_prompts(64)),
             GenerativeTask("planted", [Item("planted", planted, "", lambda r: (True, None))])]
    corpus = texts * args.repeat
    words = sum(len(t.split()) for t in corpus)
    t0 = time.perf_counter()
    report = find_contamination(tasks, {"pretraining": corpus}, n=args.ngram)
    seconds = time.perf_counter() - t0
    print(json.dumps({"documents": len(corpus), "words": words, "items": sum(r["items"] for r in report.values()),
                      "checked": sum(r["checked"] for r in report.values()), "seconds": round(seconds, 2),
                      "words_per_s": round(words / seconds), "us_per_word": round(1e6 * seconds / words, 3),
                      "planted_found": report["planted"]["pretraining"] == ["planted"],
                      "flagged": {k: len(r["pretraining"]) for k, r in report.items() if r["pretraining"]}}, indent=1))


if __name__ == "__main__":
    main()
