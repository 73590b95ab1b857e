"""Tools the engine can run mid-generation: name -> function(arguments text) -> result text.

A tool never raises (errors come back as text for the model to read); the engine also catches
anything a tool raises anyway, so a bad tool cannot end a generation. `python` is always there;
`search` when a search index is given. `isolation_line` says what confines the python tool (or why
it is disabled: it fails closed where its sandbox cannot be built).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

Tool = Callable[[str], str]


def default_tools(search_index_path: Path | str | None = None) -> dict[str, Tool]:
    from training.engine.python_tool import python_tool
    tools: dict[str, Tool] = {"python": python_tool}
    if search_index_path is not None:
        from training.engine.search import search_tool
        tools["search"] = search_tool(search_index_path)
    return tools


def isolation_line(tools: dict[str, Tool]) -> str | None:
    """What confines the python tool, for `serve` and `chat` to print at start (None without it)."""
    if "python" not in tools:
        return None
    from training.engine.python_tool import confinement
    conf = confinement()
    label = {"bubblewrap": "sandboxed by bubblewrap", "disabled": "DISABLED",
             "unconfined": "UNCONFINED (unsafe)"}[conf.mechanism]
    return f"python tool {label}: {conf.detail}"


def run_tool(tools: dict[str, Tool], name: str, arguments: str) -> str:
    """The result text of calling `name`; unknown tools and exceptions become error text."""
    tool = tools.get(name)
    if tool is None:
        known = ", ".join(sorted(tools)) or "none"
        return f"Error: unknown tool {name!r} (available: {known})"
    try:
        return str(tool(arguments))
    except Exception as e:  # noqa: BLE001 - a tool that breaks its contract still must not stop the engine
        return f"Error: {type(e).__name__}: {e}"
