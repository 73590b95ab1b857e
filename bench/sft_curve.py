"""Held-out skills against SFT steps (issue 22's curve): does a longer SFT of the demo's base buy the
skills the demo's model lacks? One SFT run per step count, each from the same base export and mixture
with its own full schedule (warmup, decay to 0), then bench/sft_skills.py's figures of each export.

    .venv/bin/python bench/sft_curve.py --lake lake --steps 100 200 400 [--n 60] [--protocol-samples 4]
        [--pretrain-fraction 0.25] [--evaluate lake/models/chat/<run>/export]

The lake is a `make demo` lake: the newest base export (models/base/*/export), the SFT mixture
(post_training/sft_mixture), the token shards (tokens/*/: bits per byte) and clean text (letter
questions' words). One JSON line per step count (steps, training wall seconds, then sft_skills' rates
with n and 95% intervals), as each finishes; the SFT runs go under --work (default a temp dir).
--pretrain-fraction F trains on a copy of the mixture with F of its windows clean pretraining text
(data.mixture.pretrain_fraction: nanochat's midtraining idea, to keep the base's bits per byte), from
the token shards' train split as their manifest splits it. --evaluate scores existing exports too
(e.g. the demo's own chat model), labelled with the steps in their summary.json.
Training here is one process without the DeepSpeed launcher (the trainer's single-process path), on
the same trainer, config and data as the chat_model asset; checkpoints and MLflow are off.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def newest(pattern: str, root: Path) -> Path:
    found = sorted(root.glob(pattern), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"error: nothing matches {root / pattern}: run `make demo` first (or pass --lake)")
    return found[-1]


def mixture_with_pretraining(lake: Path, mixture: Path, shards: Path, clean: Path, fraction: float,
                             work: Path) -> Path:
    """A copy of the lake's SFT mixture whose pretrain/ holds clean text of the shards' train split."""
    from assets.post_training import MIXED, conversations_path
    from assets.resources import LakeResource
    from pipelines.io import read_documents
    from training.conversations.config import load_data_config
    from training.conversations.mixture import write_mixture
    cfg = load_data_config().mixture
    cfg.pretrain_fraction = fraction
    cfg.pretrain_val_fraction = json.loads((shards / "manifest.json").read_text())["split_rule"]["val_fraction"]
    out = work / f"mixture-pretrain-{fraction}"
    paths = {name: conversations_path(LakeResource(root=str(lake)), name) for name in MIXED}
    write_mixture(paths, out, cfg, read_documents([clean]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lake", default="lake", type=Path)
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 200, 400])
    ap.add_argument("--config", default="training/configs/sft.yaml")
    ap.add_argument("--work", type=Path, help="where the SFT runs go (default: a temporary directory)")
    ap.add_argument("--n", type=int, default=60, help="held-out items per task")
    ap.add_argument("--protocol-prompts", type=int, default=64)
    ap.add_argument("--protocol-samples", type=int, default=4)
    ap.add_argument("--pretrain-fraction", type=float, default=0.0, help="share of SFT windows of clean text")
    ap.add_argument("--evaluate", action="append", default=[], help="an existing export to score too (repeatable)")
    args = ap.parse_args()
    from sft_skills import evaluate
    base = newest("models/base/*/export", args.lake)
    mixture = args.lake / "post_training" / "sft_mixture"
    shards = newest("tokens/*/val", args.lake).parent
    clean = newest("crawls/*/clean", args.lake)
    work = args.work or Path(tempfile.mkdtemp(prefix="sft-curve-"))
    if args.pretrain_fraction:
        mixture = mixture_with_pretraining(args.lake, mixture, shards, clean, args.pretrain_fraction, work)

    def skills(export) -> dict:
        return evaluate(str(export), str(mixture), str(shards), str(clean), "crawl2chat", args.n,
                        args.protocol_prompts, args.protocol_samples)
    for export in args.evaluate:
        summary = Path(export).parent / "summary.json"
        steps = json.loads(summary.read_text()).get("step") if summary.exists() else None
        print(json.dumps({"steps": steps, "pretrain_fraction": None, "given": str(export), **skills(export)}), flush=True)
    for steps in args.steps:
        out = work / f"sft-{steps}"
        t0 = time.time()
        cmd = [sys.executable, "-m", "training.sft", "--config", args.config, "--data", str(mixture),
               "--init-from", str(base), "--out", str(out), "--set", f"train.steps={steps}",
               "--set", "log.mlflow=false", "--set", "checkpoint.every=0", "--set", f"eval.every={steps}",
               "--set", "eval.sample_every=0"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        train_s = round(time.time() - t0, 1)
        print(json.dumps({"steps": steps, "pretrain_fraction": args.pretrain_fraction, "train_s": train_s,
                          "base": str(base), **skills(out / "export")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
