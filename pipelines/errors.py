"""User mistakes get one clear line, not a traceback.

Every error a user can cause and fix (a bad config, an output path the project did not write, an
unreadable input, a damaged token shard) is a `UserError` subclass whose message names the path or
the field and says what to do. The CLI prints `crawl2chat: error: <message>` and exits 2; Dagster
shows the same message as the step failure. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """A mistake in the input or the environment that the user can fix; the message says how."""

    exit_code = 2


class ConfigError(UserError):
    """The data or training config is malformed: unknown key, wrong type, value out of range."""


class OutputExistsError(UserError):
    """The output path holds something the project did not write (refused unless --force)."""


class InputError(UserError):
    """An input file is missing, unreadable or damaged beyond what the stage can skip."""


class UnsafePathError(UserError):
    """A listing entry or path would reach outside its root or to a host it is not listed for."""


class OutputError(UserError):
    """The output location cannot be written: read-only, full, not permitted, not a directory."""
