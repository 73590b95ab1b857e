"""A crawl2chat export as a Hugging Face transformers model directory, loadable without remote code:

    config.json, generation_config.json       GPT2LMHeadModel / LlamaForCausalLM / Qwen3ForCausalLM
    model.safetensors (or model-0000k-of-0000n.safetensors + index, above max_shard_size)
    tokenizer.json, tokenizer_config.json     the special tokens, the chat template (chat_template.py)
    README.md                                  the model card (card.py)

Written like every directory output (pipelines/io.py `staged`, kind "hf-export"): built beside the
target and swapped in whole, and a directory crawl2chat did not write is refused before any work.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from pipelines.errors import InputError
from pipelines.io import check_output_target, staged
from training.interop.chat_template import CHAT_TEMPLATE, STOP_TOKENS
from training.interop.families import check_range, family, hf_config, hf_state
from training.model import GPTConfig

KIND = "hf-export"
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def read_export(export_dir: str | Path) -> tuple[dict, GPTConfig]:
    """(config.json metadata, model config) of a crawl2chat export; InputError naming what is wrong."""
    from training.export import FORMAT
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise InputError(f"{export_dir}: no such directory")
    try:
        meta = json.loads((export_dir / "config.json").read_text())
    except (OSError, ValueError):
        meta = None
    missing = [f for f in ("model.safetensors", "tokenizer.json") if not (export_dir / f).is_file()]
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or missing:
        raise InputError(f"{export_dir}: not a crawl2chat model export (one holds model.safetensors, a config.json "
                         f"of format {FORMAT!r} and tokenizer.json, as training writes under <run>/export)")
    return meta, GPTConfig.from_dict(meta["model"])


def export_weights(export_dir: Path, cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """The export's weights under the family's transformers names (fp32, padded vocabulary cut)."""
    from safetensors.torch import load_file
    return hf_state(load_file(str(export_dir / "model.safetensors")), cfg)


def hf_tokenizer(export_dir: Path, context: int):
    """A transformers fast tokenizer over the export's tokenizer.json with the protocol's special
    tokens declared and the chat template set."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast
    from pipelines.tokenizer import BOS, SPECIAL_TOKENS
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_file(str(export_dir / "tokenizer.json")),
                                  bos_token=BOS, eos_token=STOP_TOKENS[0], pad_token=BOS,
                                  additional_special_tokens=[s for s in SPECIAL_TOKENS if s not in (BOS, STOP_TOKENS[0])])
    tok.chat_template = CHAT_TEMPLATE
    tok.model_max_length = context
    return tok


def export_hf(export_dir: str | Path, out: str | Path, card: str, dtype: str = "f32",
              max_shard_size: str | int = "5GB", force: bool = False) -> Path:
    """Write the transformers directory `out` from the crawl2chat export `export_dir`; `card` is the
    README.md text. Refused (nothing written) for an output crawl2chat did not write, an architecture
    with no standard family, or a dtype a weight overflows."""
    from huggingface_hub import save_torch_state_dict
    from transformers import AutoConfig, GenerationConfig
    export_dir = Path(export_dir)
    check_output_target(out, KIND, force)                  # before loading anything
    if dtype not in DTYPES:
        raise InputError(f"--dtype {dtype}: a transformers export is one of {', '.join(DTYPES)}")
    meta, cfg = read_export(export_dir)
    family(cfg)
    weights = export_weights(export_dir, cfg)
    check_range(weights, DTYPES[dtype], str(export_dir))
    weights = {k: v.to(DTYPES[dtype]) for k, v in weights.items()}
    tok = hf_tokenizer(export_dir, cfg.block_size)
    stop = [tok.convert_tokens_to_ids(s) for s in STOP_TOKENS]
    fields = hf_config(cfg, tok.bos_token_id, stop)
    config = AutoConfig.for_model(**{**fields, "dtype": str(DTYPES[dtype]).removeprefix("torch.")})
    with staged(out, kind=KIND, force=force) as tmp:
        save_torch_state_dict(weights, tmp, max_shard_size=max_shard_size)
        config.save_pretrained(tmp)
        GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=stop, pad_token_id=tok.pad_token_id,
                         max_length=cfg.block_size).save_pretrained(tmp)
        tok.save_pretrained(tmp)
        _older_readers(tmp, fields)
        (tmp / "README.md").write_text(card)
    return Path(out)


def _older_readers(directory: Path, fields: dict) -> None:
    """Also spell the configs the way transformers 4.x reads them (vLLM, TGI and most tools pin it):
    5.x writes its own tokenizer class name, the special tokens as extra_special_tokens, the chat
    template only in chat_template.jinja and rope_theta only inside rope_parameters. Both read this."""
    tok_file, cfg_file = directory / "tokenizer_config.json", directory / "config.json"
    tok = json.loads(tok_file.read_text())
    tok["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok["additional_special_tokens"] = tok.pop("extra_special_tokens", [])
    tok["chat_template"] = CHAT_TEMPLATE
    tok_file.write_text(json.dumps(tok, indent=2, ensure_ascii=False) + "\n")
    cfg = json.loads(cfg_file.read_text())
    cfg["torch_dtype"] = cfg.get("dtype")
    if "rope_theta" in fields:
        cfg["rope_theta"] = fields["rope_theta"]
    cfg_file.write_text(json.dumps(cfg, indent=2) + "\n")
