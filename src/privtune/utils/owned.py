"""privtune's own directories, recognised by what privtune stamps in them, and what must never be replaced.

``--overwrite`` deletes what is at ``--out`` before the new output takes its place, so it may only replace a
directory privtune wrote itself: a dataset (``dataset.json`` with privtune's fields), a run (``run.json``) or a
study (``results.sqlite`` or ``study.toml``), holding nothing privtune did not put there. It never replaces the
source being read, the current directory, the home directory, or a parent of any of them: a user's files are
never lost to a mistyped ``--out``.

This module knows the layouts by file name only (it sits below the modules that write them).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from privtune.errors import ConfigError, fmt


@dataclass(frozen=True)
class Layout:
    """A kind of directory privtune writes: the file that marks it and every top-level name privtune puts there."""

    kind: str
    markers: tuple[str, ...]               # any one present (and valid) marks the directory
    names: frozenset[str]
    keys: tuple[str, ...] = ()             # JSON markers must be an object holding these keys

    def marked(self, path: Path) -> bool:
        for m in self.markers:
            p = path / m
            if not p.is_file():
                continue
            if not m.endswith(".json"):
                return True
            try:
                d = json.loads(p.read_text("utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(d, dict) and all(k in d for k in self.keys):
                return True
        return False


LAYOUTS = (
    Layout("dataset", ("dataset.json",), frozenset({"dataset.json", "train.jsonl", "test.jsonl", "valid.jsonl"}),
           keys=("name", "source", "content_hash")),
    Layout("run", ("run.json",), frozenset({"run.json", "ledger.json", "checkpoints", "model", "eval.json",
                                            "eval-other", "sweep.json", "trajectory.jsonl"}),
           keys=("method", "status", "config")),
    Layout("study", ("results.sqlite", "study.toml"),
           frozenset({"study.toml", "data", "runs", "results.sqlite", "results.sqlite-wal", "results.sqlite-shm",
                      "results.sqlite-journal", "results.csv", "report.html", "report.md", "plots", "demo.json"})),
)
LOCKS = frozenset({".lock", ".sweep.lock"})


def recognise(path: str | os.PathLike) -> str | None:
    """``"dataset"``, ``"run"`` or ``"study"`` when ``path`` is a directory privtune marked as such, else None."""
    path = Path(path)
    if not path.is_dir():
        return None
    for layout in LAYOUTS:
        if layout.marked(path):
            return layout.kind
    return None


def strangers(path: str | os.PathLike, kind: str) -> list[str]:
    """Top-level entries of ``path`` that privtune does not write in a directory of ``kind`` (sorted)."""
    names = next(lay.names for lay in LAYOUTS if lay.kind == kind)
    out = []
    for p in Path(path).iterdir():
        n = p.name
        if n in names or n in LOCKS:
            continue
        # temporaries of atomic writes: ".NAME.tmp-*", ".NAME.old-*", ".NAME.<random>"
        if n.startswith(".") and any(n.startswith(f".{k}.") for k in names):
            continue
        out.append(n)
    return sorted(out)


def is_empty(path: Path) -> bool:
    """No entry but a lock file a killed process left behind."""
    return path.is_dir() and all(p.name in LOCKS for p in path.iterdir())


def protected(path: str | os.PathLike, sources: Iterable[tuple[str, str | os.PathLike | None]] = ()) -> str | None:
    """Why ``path`` must never be replaced (``"the current directory"``, ``"a parent of the import source"``...),
    or None. ``sources``: ``(what, path)`` pairs of inputs being read."""
    target = Path(path).resolve()
    places: list[tuple[str, Path]] = [("the current directory", Path.cwd().resolve())]
    home = _home()
    if home is not None:
        places.append(("your home directory", home))
    places += [(what, Path(p).resolve()) for what, p in sources if p is not None]
    for what, place in places:
        if target == place:
            return what
        if place.is_relative_to(target):
            return f"a parent of {what}"
    return None


def _home() -> Path | None:
    try:
        return Path.home().resolve()
    except (RuntimeError, KeyError, OSError):  # no HOME and no passwd entry
        return None


def check_out(path: str | os.PathLike, *, overwrite: bool, what: str = "--out",
              sources: Iterable[tuple[str, str | os.PathLike | None]] = (), produces: str = "dataset") -> Path:
    """Refuse an output path that must not be written (see the module docstring); return it as a Path.

    Always refused: a file, and anything :func:`protected` names. With ``overwrite``, an existing non-empty
    directory is refused unless it is privtune's own and holds nothing else. Without it, the caller decides
    (an identical dataset, for instance, is a no-op).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(fmt(what, "a directory path", str(path), "It is a file: choose another path."))
    sources = list(sources)
    reason = protected(path, sources)
    if reason is not None:
        raise ConfigError(fmt(what, f"a new directory for the {produces}", str(path),
                              f"It is {reason}, which privtune never writes over: name a new directory, "
                              f"e.g. {what} data/mine."))
    if overwrite and path.is_dir() and not is_empty(path):
        kind = recognise(path)
        if kind is None:
            raise ConfigError(fmt(what, "a privtune dataset, run or study directory to be replaced by --overwrite",
                                  str(path), "It holds files privtune did not write: choose another path, or "
                                  "move them away yourself."))
        extra = strangers(path, kind)
        if extra:
            raise ConfigError(fmt(what, f"a {kind} directory holding only what privtune wrote, to be replaced by "
                                  "--overwrite", str(path), f"It also holds {_names(extra)}: choose another path, "
                                  "or move those away yourself."))
    return path


def _names(names: list[str], n: int = 3) -> str:
    shown = ", ".join(repr(x) for x in names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")
