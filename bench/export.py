"""Export cost and parity at a real model size; prints JSON.

For each family (GPT-2 shape, Llama, Qwen3) a random model of --preset (default gpt2-124m: 12 x 768,
context 1024; vocabulary --vocab, default 50257 so the padded rows are cut) is exported as
pretraining exports it, then: seconds and bytes of the transformers directory and of the GGUF file
per dtype, and the largest fp32 logit difference to our model of transformers reading each
(AutoModelForCausalLM.from_pretrained(dir) / (dir, gguf_file=...)) over one window of --tokens.
Weights keep GPT-2's init (std 0.02), so logits are those of an untrained model of that size.

    python bench/export.py [--preset gpt2-124m] [--families gpt2 llama qwen3] [--dtypes f32 q8_0]
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

SWITCHES = {"gpt2": {}, "llama": dict(rope=True, rmsnorm=True, mlp="swiglu", bias=False, tie_embeddings=False),
            "qwen3": dict(rope=True, rmsnorm=True, mlp="swiglu", qk_norm=True, bias=False, tie_embeddings=False)}


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="gpt2-124m")
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--families", nargs="+", default=list(SWITCHES), choices=list(SWITCHES))
    ap.add_argument("--dtypes", nargs="+", default=["f32", "q8_0"])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM

    from pipelines.tokenizer import train_tokenizer
    from training.export import export_state
    from training.interop.cli import export
    from training.model import GPT, preset
    out: dict = {"preset": args.preset, "vocab": args.vocab, "threads": args.threads, "families": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from pydoc_data.topics import topics
        tok = train_tokenizer(list(topics.values()), vocab_size=args.vocab, out_dir=tmp / "tok", max_chars=300_000)
        x = torch.randint(0, args.vocab, (1, args.tokens), generator=torch.Generator().manual_seed(0))
        for fam in args.families:
            torch.manual_seed(0)
            model = GPT(preset(args.preset, vocab_size=args.vocab, **SWITCHES[fam])).eval()
            src = export_state(model.state_dict(), model.config, tmp / fam / "export", tokenizer_dir=tok)
            with torch.no_grad():
                ours = model.lm_head(model._trunk(x, None))
            row: dict = {"params": sum(p.numel() for p in model.parameters())}
            t = time.perf_counter()
            hf = export(str(src), "hf", tmp / fam / "hf")
            row["hf"] = {"seconds": round(time.perf_counter() - t, 2), "bytes": size(hf)}
            with torch.no_grad():
                theirs = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()(x).logits
            row["hf"]["max_abs_logit_diff"] = float((ours - theirs).abs().max())
            del theirs
            for dtype in args.dtypes:
                t = time.perf_counter()
                f = export(str(src), "gguf", tmp / fam / f"gguf-{dtype}", dtype=dtype)
                r = {"seconds": round(time.perf_counter() - t, 2), "bytes": f.stat().st_size}
                try:
                    with torch.no_grad():
                        m = AutoModelForCausalLM.from_pretrained(f.parent, gguf_file=f.name, dtype=torch.float32)
                        r["max_abs_logit_diff"] = float((ours - m.eval()(x).logits).abs().max())
                except (ValueError, RuntimeError) as e:   # the loader's own limits (see tests/test_export_gguf.py)
                    r["transformers_gguf_loader"] = str(e).splitlines()[0][:200]
                row[f"gguf_{dtype}"] = r
            row["logit_scale"] = float(ours.abs().max())
            out["families"][fam] = row
            print(json.dumps({fam: row}), file=sys.stderr)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
