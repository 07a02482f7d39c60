"""privtune's error types and its one error format.

Every user-facing error reads ``"`name` must be <constraint>. Found <value>."`` followed by the fix, on one line.
The CLI prints the message (no traceback) and exits with status 2; the Python API raises the exception.
"""

from __future__ import annotations

from typing import Any


class PrivtuneError(Exception):
    """Base class for errors caused by the user's input or environment (not by a bug in privtune)."""

    exit_code = 2


class ConfigError(PrivtuneError, ValueError):
    """A parameter or configuration value is invalid."""


class DataError(PrivtuneError, ValueError):
    """A dataset file or record is malformed."""


class BudgetError(PrivtuneError):
    """A privacy budget cannot be met or would be exceeded."""


class ResumeError(PrivtuneError):
    """A run cannot be resumed safely: its ledger or checkpoints are missing, damaged, or from another run."""


class ModelLoadError(PrivtuneError):
    """A model or tokenizer cannot be loaded (offline, missing files, unsupported architecture)."""


class TrainingError(PrivtuneError):
    """Training stopped because a safety check failed (NaN loss, DP hooks not effective, ...)."""


class MissingDependencyError(PrivtuneError, ImportError):
    """An optional dependency is not installed."""


def fmt(name: str, constraint: str, found: Any, fix: str | None = None) -> str:
    """Build the one-line message ``"`name` must be <constraint>. Found <found>. <fix>"``."""
    msg = f"`{name}` must be {constraint}. Found {found!r}."
    if fix:
        msg += f" {fix.strip()}"
    return msg


def require(condition: bool, name: str, constraint: str, found: Any, fix: str | None = None,
            *, error: type[PrivtuneError] = ConfigError) -> None:
    """Raise ``error`` with the standard message unless ``condition`` holds."""
    if not condition:
        raise error(fmt(name, constraint, found, fix))
