"""Data config: one YAML file with a section per stage (default: configs/fineweb_v1.yaml).

`load_config` merges the default file, a user file and overrides section by section, then checks
the result against the schema below: an unknown section or key (`langauge:`), a wrong type
(`threshold: high`) or a value out of range (`threshold: 2.0`, which would silently drop every
document) is a `ConfigError` naming the file, the field and the allowed values. The CLI and the
Dagster resource both load through here, so both refuse the same mistakes.

Every size (bytes, documents, tokens, processes) has an upper bound too: a typo such as
`max_body_bytes: 1000000000000` is one config error here, not an allocation failure deep in a
library (fastwarc aborted the process with a Rust backtrace).

The schema only checks; the dict it returns keeps the file's values (the stages take their own
sections as keyword arguments, and MLflow logs them as params).
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipelines.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "fineweb_v1.yaml"

Fraction = Field(ge=0.0, le=1.0)
OptFraction = Field(default=None, ge=0.0, le=1.0)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class WarcReaderConfig(Section):
    mime_types: list[str] = Field(min_length=1)
    only_http_ok: bool
    # a body is held (and fastwarc allocates its read buffer) up to this: 1 GiB is far past any page
    max_body_bytes: int = Field(default=4 << 20, gt=0, le=1 << 30)
    max_invalid_bytes_frac: float = Field(default=0.005, ge=0.0, le=0.1)


class URLFilterConfig(Section):
    blocklist_dir: str | None = None
    soft_banned_min: int = Field(ge=1)
    categories: list[str] | None = None


class ExtractionConfig(Section):
    backend: Literal["trafilatura", "resiliparse"]
    timeout_s: float | None = Field(default=None, gt=0)
    wall_timeout_s: float | None = Field(default=None, gt=0)
    max_tags: int | None = Field(default=None, gt=0)  # the extraction work budget (extraction.py)
    workers: int = Field(ge=0, le=1024)
    lookahead: int = Field(ge=1, le=1024)
    extractor: str | None = None
    resiliparse_collapse_blank_lines: bool
    favor_precision: bool
    fast: bool = False  # trafilatura without its fallback extractors: faster, decisions differ (extraction.py)
    prefilter_languages: list[str] | None = None  # opt-in early language reject (extraction.language_prefiltered)
    prefilter_min_score: float = Field(default=0.8, ge=0.0, le=1.0)
    prefilter_model_path: str | None = None
    include_comments: bool
    deduplicate: bool


class LanguageConfig(Section):
    languages: list[str] | None
    threshold: float = Fraction
    model_path: str | None = None
    newline_replacement: str


class GopherRepetitionConfig(Section):
    dup_line_frac: float | None = OptFraction
    dup_para_frac: float | None = OptFraction
    dup_line_char_frac: float | None = OptFraction
    dup_para_char_frac: float | None = OptFraction
    top_n_grams: dict[int, float] | None = None
    dup_n_grams: dict[int, float] | None = None


class GopherQualityConfig(Section):
    min_doc_words: int | None = Field(default=None, ge=0)
    max_doc_words: int | None = Field(default=None, ge=1)
    min_avg_word_length: float | None = Field(default=None, ge=0)
    max_avg_word_length: float | None = Field(default=None, gt=0)
    max_symbol_word_ratio: float | None = Field(default=None, ge=0)
    max_bullet_lines_ratio: float | None = OptFraction
    max_ellipsis_lines_ratio: float | None = OptFraction
    max_non_alpha_words_ratio: float | None = OptFraction
    min_stop_words: int | None = Field(default=None, ge=0)
    stop_words: list[str] | None = None
    count_distinct_stop_words: bool


class C4Config(Section):
    max_word_length: int | None = Field(default=None, ge=1)
    min_words_per_line: int | None = Field(default=None, ge=0)
    min_num_sentences: int | None = Field(default=None, ge=0)
    remove_citations: bool
    filter_no_terminal_punct: bool
    filter_lorem_ipsum: bool
    filter_javascript: bool
    filter_curly_bracket: bool
    filter_policy: bool


class FineWebQualityConfig(Section):
    line_punct_thr: float = Fraction
    line_punct_exclude_zero: bool
    short_line_thr: float = Fraction
    short_line_length: int = Field(ge=1)
    char_duplicates_ratio: float = Fraction
    new_line_ratio: float = Field(ge=0.0)
    stop_chars: list[str]


class MinhashConfig(Section):
    num_perm: int = Field(ge=1, le=1 << 14)
    bands: int = Field(ge=1, le=1 << 14)
    rows: int = Field(ge=1, le=1 << 14)
    shingle_words: int = Field(ge=1, le=1 << 10)
    seed: int

    @model_validator(mode="after")
    def _bands_cover_perms(self):
        if self.bands * self.rows != self.num_perm:
            raise ValueError(f"bands * rows must equal num_perm ({self.bands} * {self.rows} != {self.num_perm})")
        return self


class PIIConfig(Section):
    mode: Literal["fineweb", "placeholder"]
    entities: list[Literal["EMAIL_ADDRESS", "PHONE_NUMBER", "IP_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "US_SSN",
                           "PERSON"]]
    only_public_ips: bool
    ner: bool
    phone_regions: list[str]
    phone_leniency: int = Field(ge=0, le=3)
    score_threshold: float = Fraction
    window_margin: int = Field(ge=0, le=1 << 16)


class ChecksConfig(Section):
    min_language_share: float = Fraction
    dedup_rate_min: float = Fraction
    dedup_rate_max: float = Fraction
    pii_sample_docs: int = Field(ge=0, le=1 << 24)

    @model_validator(mode="after")
    def _range(self):
        if self.dedup_rate_min > self.dedup_rate_max:
            raise ValueError(f"dedup_rate_min {self.dedup_rate_min} is above dedup_rate_max {self.dedup_rate_max}")
        return self


class TokenizerConfig(Section):
    vocab_size: int = Field(ge=264, le=1 << 22)   # 256 bytes + 8 reserved specials at least
    max_chars: int | None = Field(default=None, ge=1, le=1 << 40)
    max_docs: int | None = Field(default=None, ge=1, le=1 << 32)
    min_frequency: int = Field(ge=1)
    val_fraction: float = Field(ge=0.0, lt=1.0)
    shard_tokens: int = Field(ge=1, le=1 << 32)
    encode_batch_docs: int = Field(ge=1, le=1 << 20)


class DataConfig(Section):
    name: str
    warc_reader: WarcReaderConfig
    url_filter: URLFilterConfig
    extraction: ExtractionConfig
    language: LanguageConfig
    gopher_repetition: GopherRepetitionConfig
    gopher_quality: GopherQualityConfig
    c4: C4Config
    fineweb_quality: FineWebQualityConfig
    minhash: MinhashConfig
    pii: PIIConfig
    checks: ChecksConfig
    tokenizer: TokenizerConfig


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping from `path`, or a ConfigError saying where the file is broken."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config file ({e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {what}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a data config is a mapping of sections (warc_reader:, language:, ...), "
                          f"not a {type(data).__name__}")
    return data


def validate_config(cfg: dict, source: str = "data config") -> dict:
    """Check a merged config against the schema; ConfigError lists every problem, one per field."""
    try:
        DataConfig.model_validate(cfg)
    except ValidationError as e:
        raise ConfigError(f"{source}: " + "; ".join(_describe(err) for err in e.errors())) from None
    return cfg


def _describe(err: dict) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "config"
    if err["type"] == "extra_forbidden":
        *parent, key = [str(p) for p in err["loc"]]
        model = DataConfig
        for p in parent:
            model = model.model_fields[p].annotation
        known = list(model.model_fields)
        hint = difflib.get_close_matches(key, known, n=1)
        what = "section" if not parent else "key"
        return (f"unknown {what} '{loc}'" + (f" (did you mean '{'.'.join(parent + hint)}'?)" if hint else "")
                + f"; known: {', '.join(known)}")
    got = err.get("input")
    shown = repr(got) if not isinstance(got, dict) else "a mapping"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg[0].lower() + msg[1:]} (got {shown})"


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """The default config, updated section by section from `path` and then `overrides`, validated."""
    cfg = read_yaml(DEFAULT_CONFIG)
    for extra in ([read_yaml(path)] if path else []) + [overrides or {}]:
        for section, values in extra.items():
            if isinstance(values, dict) and isinstance(cfg.get(section), dict):
                cfg[section].update(values)
            else:
                cfg[section] = values
    return validate_config(cfg, str(path) if path else "default data config")
