"""The model card (README.md) of an exported model: what it is, what it was trained on and how it
traces back, from the export's own metadata and, where the MLflow tracking store has them, the
registered versions, the runs of the lineage, the crawl and the eval scores (training/evals'
readers, the same the report card uses). A fact that is not recorded is left out, never guessed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

from training.interop.families import FAMILIES, family
from training.model import GPTConfig

log = logging.getLogger(__name__)
STAGE_NAMES = {"pretrain": "pretrained base", "sft": "chat (SFT)", "rl": "chat (RL)", "rlhf": "chat (RLHF)",
               "rm": "reward"}


def lineage_facts(run_id: str | None, tracking_uri: str | None) -> dict:
    """{"versions": [...], "crawl": {...}, "clean_text_digest", "data_config_digest", "evals": {...}}
    for the registered version trained by `run_id`; {} where MLflow has no such version."""
    if not run_id or not tracking_uri:
        return {}
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    try:
        from training.evals.card_data import crawl_facts, data_runs, eval_facts
        from training.evals.registry import STAGES, Version, dataset_input, lineage_of
        client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
        found = client.search_model_versions(f"run_id = '{run_id}'")
        stage = {name: (s, kind) for s, name, kind in STAGES}
        mine = [Version(stage[mv.name][0], mv.name, stage[mv.name][1], mv) for mv in found if mv.name in stage]
        if not mine:
            return {}
        chain = lineage_of(client, mine[0])
        out: dict = {"versions": [{"ref": v.ref, "stage": v.stage, "run_id": v.mv.run_id} for v in chain]}
        runs = data_runs(client, client.get_run(chain[0].mv.run_id)) if chain[0].stage == "BASE" else {}
        if runs.get("clean_text"):
            crawl = crawl_facts(client, runs) or {}
            out["crawl"] = {k: crawl.get(k) for k in ("crawl", "batches", "files", "docs_in", "docs_out")}
            params = runs["clean_text"].data.params
            out["data_config_digest"] = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
            clean = dataset_input(runs["token_shards"], "clean_text")
            out["clean_text_digest"] = clean[0] if clean else None
        evals = eval_facts(client, mine[0])
        if evals:
            out["evals"] = {t["task"]: t.get("score") for t in evals["summary"].get("tasks", [])}
            out["eval_run_id"] = evals["run_id"]
        return out
    except (MlflowException, OSError) as e:  # the store is unreachable: a card without lineage, not none
        log.warning("model card: no lineage from MLflow at %s (%s)", tracking_uri, e)
        return {}


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _params(export_dir: Path, cfg: GPTConfig) -> int:
    """Parameters as exported (padded vocabulary rows cut), from the safetensors header alone."""
    from safetensors import safe_open
    n = 0
    with safe_open(str(export_dir / "model.safetensors"), "pt") as f:
        for k in f.keys():
            shape = f.get_slice(k).get_shape()
            rows = cfg.vocab_size if k in ("wte.weight", "lm_head.weight") else shape[0]
            n += rows * math.prod(shape[1:])
    return n


def model_card(name: str, export_dir: Path, meta: dict, lineage: dict) -> str:
    """README.md with a Hugging Face YAML header."""
    cfg = GPTConfig.from_dict(meta["model"])
    fam = family(cfg)
    params = _params(Path(export_dir), cfg)
    lines = ["---", "library_name: transformers", "pipeline_tag: text-generation",
             f"tags: [crawl2chat, {fam}]", "---", "", f"# {name}", "",
             f"A {STAGE_NAMES.get(meta.get('stage'), 'language')} model trained with crawl2chat from Common Crawl, exported as "
             f"`{FAMILIES[fam][1]}` (llama.cpp architecture `{FAMILIES[fam][2]}`): standard code, no "
             "`trust_remote_code`.", "", "## Model", "",
             "| | |", "|---|---|",
             f"| layers x width (heads) | {cfg.n_layer} x {cfg.n_embd} ({cfg.n_head}) |",
             f"| context | {cfg.block_size} tokens |", f"| vocabulary | {cfg.vocab_size} (byte-level BPE) |",
             f"| positions, norm, MLP | {'RoPE' if cfg.rope else 'learned'}, {'RMSNorm' if cfg.rmsnorm else 'LayerNorm'}"
             f"{' + QK-norm' if cfg.qk_norm else ''}, {cfg.mlp.upper()} |",
             f"| embeddings | {'tied' if cfg.tie_embeddings else 'untied'} head |"]
    lines.append(f"| parameters | {params:,} |")
    figures = {k: v for k, v in meta.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)
               and k not in ("format", "dtype", "stage")}
    if figures:
        lines += ["", "## Training", "", "| figure | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in sorted(figures.items())]
    if lineage.get("versions"):
        lines += ["", "## Lineage (MLflow)", "", "| stage | registered version | MLflow run |", "|---|---|---|"]
        lines += [f"| {v['stage']} | {v['ref']} | `{v['run_id']}` |" for v in lineage["versions"]]
    crawl = lineage.get("crawl")
    if crawl:
        lines += ["", "## Data", "", f"Common Crawl `{crawl.get('crawl')}`, WARC batches "
                  f"{', '.join(crawl.get('batches') or []) or '-'} ({_fmt(crawl.get('files'))} files): "
                  f"{_fmt(crawl.get('docs_in'))} documents in, {_fmt(crawl.get('docs_out'))} kept after URL filter, "
                  "extraction, language ID, quality filters, near-dedup and PII scrubbing.",
                  f"clean_text digest `{lineage.get('clean_text_digest')}`, data config digest "
                  f"`{lineage.get('data_config_digest')}`."]
    if lineage.get("evals"):
        lines += ["", f"## Evaluation (MLflow run `{lineage.get('eval_run_id')}`)", "", "| task | score |", "|---|---:|"]
        lines += [f"| {t} | {_fmt(s)} |" for t, s in lineage["evals"].items()]
    lines += ["", "## Chat protocol", "",
              "`<|endoftext|><|im_start|>ROLE<|im_sep|>CONTENT<|im_end|>`, the reply opened by "
              "`<|im_start|>assistant<|im_sep|>` and ended by `<|im_end|>` (generation_config stops on it and on "
              "`<|endoftext|>`). Assistant tool calls are content parts: `<|tool_start|>python<|im_sep|>CODE"
              "<|tool_end|>`, then the runtime's `<|output_start|>RESULT<|output_end|>`; the chat template renders "
              "messages with parts `{type: text | tool_call | tool_output}` exactly as crawl2chat trained on them. "
              "Unlike crawl2chat's own renderer, the template turns text that spells a special token into that token.",
              "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
              "tok = AutoTokenizer.from_pretrained(DIR); model = AutoModelForCausalLM.from_pretrained(DIR)",
              "ids = tok.apply_chat_template([{\"role\": \"user\", \"content\": \"Hello!\"}], add_generation_prompt=True,",
              "                              return_tensors=\"pt\", return_dict=True)",
              "out = model.generate(**ids, max_new_tokens=64, do_sample=False)",
              "print(tok.decode(out[0, ids[\"input_ids\"].shape[1]:], skip_special_tokens=True))", "```", ""]
    return "\n".join(lines)
