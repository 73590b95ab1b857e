"""Heuristic quality stages of the FineWeb recipe, in pipeline order.

    gopher_repetition -> gopher_quality -> c4_lines -> c4_quality -> fineweb_quality

Each takes its config section as keyword arguments; the two C4 stages share the `c4` section.
"""
from __future__ import annotations

from pipelines.quality.c4 import C4LineCleaner, C4QualityFilter
from pipelines.quality.fineweb import FineWebQualityFilter
from pipelines.quality.gopher_quality import GopherQualityFilter
from pipelines.quality.gopher_repetition import GopherRepetitionFilter

__all__ = ["GopherRepetitionFilter", "GopherQualityFilter", "C4LineCleaner", "C4QualityFilter",
           "FineWebQualityFilter", "build_quality_stages"]


def build_quality_stages(cfg: dict) -> list:
    """The five quality stages built from a loaded data config (pipelines.config.load_config)."""
    return [GopherRepetitionFilter(**cfg["gopher_repetition"]),
            GopherQualityFilter(**cfg["gopher_quality"]),
            C4LineCleaner(**cfg["c4"]),
            C4QualityFilter(**cfg["c4"]),
            FineWebQualityFilter(**cfg["fineweb_quality"])]
