"""Data config: one YAML file with a section per stage (default: configs/fineweb_v1.yaml)."""
from __future__ import annotations

from pathlib import Path

import yaml

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "fineweb_v1.yaml"


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """The default config, updated section by section from `path` and then `overrides`."""
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for extra in ([yaml.safe_load(Path(path).read_text())] if path else []) + [overrides or {}]:
        for section, values in extra.items():
            if isinstance(values, dict) and isinstance(cfg.get(section), dict):
                cfg[section].update(values)
            else:
                cfg[section] = values
    return cfg
