"""One progress display for long work (rich), quiet when not attached to a terminal or when asked."""

from __future__ import annotations

import os
import sys
from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

T = TypeVar("T")

console = Console(stderr=True)


def progress_enabled() -> bool:
    """Progress bars are shown on an interactive stderr unless PRIVTUNE_PROGRESS=0."""
    env = os.environ.get("PRIVTUNE_PROGRESS")
    if env is not None:
        return env not in ("0", "false", "no", "")
    return sys.stderr.isatty()


def make_progress(*extra_columns) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    *extra_columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                    disable=not progress_enabled(), transient=False)


def track(it: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar (or silently)."""
    if total is None and hasattr(it, "__len__"):
        total = len(it)  # type: ignore[arg-type]
    with make_progress() as p:
        task = p.add_task(escape(description), total=total)  # plain text: a path's [brackets] are kept
        for x in it:
            yield x
            p.advance(task)
