"""The post-training data config: the `data:` section of training/configs/sft.yaml.

The file's other sections belong to the SFT trainer; this module reads and checks only `data:`.
Unknown keys, wrong types and out-of-range values are a ConfigError naming the field, as for the
data-pipeline config (pipelines/config.py). Defaults are the field defaults below, so a file may
give only what it changes.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.errors import ConfigError

DEFAULT_FILE = Path(__file__).resolve().parents[1] / "configs" / "sft.yaml"
SOURCES = ("user_conversations", "identity_conversations", "reasoning_conversations", "idk_conversations",
           "general_conversations")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserConfig(Section):
    paths: list[str] = []             # files, directories or globs; JSONL / Parquet (see user.py)


class IdentityConfig(Section):
    name: str = "crawl2chat"
    creator: str = "the crawl2chat team"
    trained_on: str | None = None     # None: "web pages of Common Crawl <crawl>, cleaned ..."
    knowledge_cutoff: str | None = None   # None: the crawl's date (CC-MAIN-2024-10 -> March 2024)
    conversations: int = Field(default=400, ge=0)
    system_fraction: float = Field(default=0.3, ge=0.0, le=1.0)   # share under a system prompt
    seed: int = 0


class GeneralConfig(Section):
    conversations: int = Field(default=400, ge=0)   # small talk, limits, invented entities (general.py)
    unknown_fraction: float = Field(default=0.5, ge=0.0, le=1.0)   # "I don't know" about invented entities
    heldout: int = Field(default=100, ge=0)         # held-out invented-entity questions for the evals
    seed: int = 0


class ReasoningConfig(Section):
    conversations: int = Field(default=800, ge=0)
    heldout: int = Field(default=100, ge=0)        # held-out problems for the evals (never trained)
    tool_fraction: float = Field(default=0.5, ge=0.0, le=1.0)   # counting/spelling through python
    arithmetic: Literal["tool", "steps"] = "tool"  # tool: print(expression) in python; steps: worked in text
    words: Literal["corpus", "builtin"] = "corpus"  # corpus: words of clean_text (builtin if none)
    seed: int = 0


class ProbesConfig(Section):
    model: str | None = None          # Engine.load source; None: the latest base_model export
    max_docs: int = Field(default=2000, ge=1)       # clean_text documents scanned for snippets
    max_probes: int = Field(default=200, ge=0)
    per_doc: int = Field(default=2, ge=1)
    samples: int = Field(default=4, ge=1)           # k answers per question, distinct seeds
    temperature: float = Field(default=0.7, ge=0.0)
    top_k: int | None = Field(default=50, ge=1)
    max_tokens: int = Field(default=12, ge=1)
    prompt: Literal["completion", "chat"] = "completion"   # base models complete text
    knows_at: float = Field(default=1.0, gt=0.0, le=1.0)   # share of right samples for "knows"
    unknown_at: float = Field(default=0.0, ge=0.0, lt=1.0)  # at most this share right: "does not know"
    search: bool = True               # also the variant that calls the search tool (needs an index)
    search_k: int = Field(default=3, ge=1)
    batch_rows: int = Field(default=64, ge=1)       # engine rows per generate() call
    seed: int = 0


class MixtureConfig(Section):
    # Proportions of the mixture (normalized over the sources that have rows).
    weights: dict[str, float] = {"user_conversations": 1.0, "identity_conversations": 1.0,
                                 "reasoning_conversations": 1.0, "idk_conversations": 1.0,
                                 "general_conversations": 1.0}
    rows: int | None = Field(default=None, ge=1)    # None: as many as the weighted sources hold
    val_fraction: float = Field(default=0.05, ge=0.0, lt=1.0)
    # share of SFT's training windows that are clean pretraining text trained on every token
    # (mixture.py); 0 leaves it out
    pretrain_fraction: float = Field(default=0.0, ge=0.0, le=0.9)
    pretrain_val_fraction: float = Field(default=0.01, ge=0.0, lt=1.0)   # the token shards' val_fraction (the
    # sft_mixture asset sets it from the data config's tokenizer.val_fraction)
    seed: int = 0


class PostTrainingData(Section):
    user: UserConfig = UserConfig()
    identity: IdentityConfig = IdentityConfig()
    reasoning: ReasoningConfig = ReasoningConfig()
    general: GeneralConfig = GeneralConfig()
    probes: ProbesConfig = ProbesConfig()
    mixture: MixtureConfig = MixtureConfig()


def load_data_config(path: str | Path | None = None, overrides: dict | None = None) -> PostTrainingData:
    """The `data:` section of `path` (default training/configs/sft.yaml), updated section by section
    from `overrides` ({"identity": {"name": "Ada"}}), checked."""
    from pipelines.config import read_yaml
    path = Path(path) if path else DEFAULT_FILE
    raw = read_yaml(path).get("data") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: data: must be a mapping of sections ({', '.join(PostTrainingData.model_fields)})")
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for section, values in (overrides or {}).items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section].update(values)
        else:
            merged[section] = values
    try:
        cfg = PostTrainingData.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(f"{path}: " + "; ".join(_describe(err) for err in e.errors())) from None
    unknown = sorted(set(cfg.mixture.weights) - set(SOURCES))
    if unknown:
        raise ConfigError(f"{path}: data.mixture.weights: unknown source(s) {', '.join(unknown)}; "
                          f"known: {', '.join(SOURCES)}")
    if any(w < 0 for w in cfg.mixture.weights.values()):
        raise ConfigError(f"{path}: data.mixture.weights: weights must be >= 0 (0 leaves a source out)")
    return cfg


def _describe(err: dict) -> str:
    loc = "data." + ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        *parent, key = [str(p) for p in err["loc"]]
        model = PostTrainingData
        for p in parent:
            model = model.model_fields[p].annotation
        hint = difflib.get_close_matches(key, list(model.model_fields), n=1)
        return f"unknown key '{loc}'" + (f" (did you mean '{hint[0]}'?)" if hint else "") + \
            f"; known: {', '.join(model.model_fields)}"
    return f"{loc}: {err['msg'].removeprefix('Value error, ')} (got {err.get('input')!r})"
