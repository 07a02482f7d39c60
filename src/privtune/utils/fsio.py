"""Atomic output: write into a temporary sibling, then move into place.

A crash, a kill or a validation error mid-way leaves no partial output at the destination.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from privtune.errors import ConfigError, DataError, fmt


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def ensure_fresh_dir(path: str | os.PathLike, *, what: str = "--out", fix: str = "Choose another path.") -> Path:
    """Refuse a file in the way or an existing directory holding anything but a lock file a killed process left.

    A check, not a claim: two processes can both pass it. Claim the directory with :func:`claim_dir`.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(fmt(what, "a directory path", str(path), "It is a file: choose another path."))
    if path.is_dir() and any(p.name != LOCK_FILE for p in path.iterdir()):
        raise ConfigError(fmt(what, "a new or empty directory", str(path), fix))
    return path


LOCK_FILE = ".lock"


@contextlib.contextmanager
def claim_dir(path: str | os.PathLike, *, busy: str, what: str = "--out",
              fix: str = "Choose another path.") -> Iterator[Path]:
    """Make ``path`` this process's own for the ``with`` block, or fail at once: exactly one of several processes
    claiming the same path wins.

    The directory is created (``mkdir``, atomic) unless it exists empty; the winner holds an exclusive lock on
    ``path/.lock`` for the whole block and is the one that then finds the directory empty (a lock file left by a
    killed process counts as empty: the OS released its lock). A loser raises :class:`ConfigError`: ``busy`` while
    another process holds the lock, the :func:`ensure_fresh_dir` message once the winner has written into it. If
    the block raises before anything but the lock file was written, the claim is undone (a directory this call
    created is removed), so a failed start leaves nothing behind.
    """
    path = ensure_fresh_dir(path, what=what, fix=fix)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir()
        created = True
    except FileExistsError:
        created = False
    with exclusive_lock(path / LOCK_FILE, busy):
        try:
            ensure_fresh_dir(path, what=what, fix=fix)   # under the lock: a winner that finished is seen here
            yield path
        except BaseException:
            if all(p.name == LOCK_FILE for p in path.iterdir()):
                with contextlib.suppress(OSError):
                    (path / LOCK_FILE).unlink()
                    if created:
                        path.rmdir()
            raise


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory next to ``dest``; on success it replaces ``dest`` in one rename.

    On any exception the temporary directory is removed and ``dest`` is untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the result should look like any mkdir
    try:
        yield tmp
        if dest.exists():
            if not overwrite and not is_empty_dir(dest):
                raise ConfigError(fmt("destination", "a new or empty directory", str(dest),
                                      "Choose another path or remove it first."))
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and an atomic rename (fsync'd)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    # numpy scalars and paths show up in results; make them plain JSON.
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def sha256_files(paths: list[Path]) -> str:
    """Content hash over several files, in the given order (names included so a rename changes it)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        h.update(b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def read_text_utf8(path: Path) -> str:
    """A user's text file as UTF-8 (a byte-order mark is dropped); bytes that are not UTF-8 are a one-line error
    with the line and offset where they start."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: bytes at offset {e.start} are not UTF-8. "
                        "Re-encode the file as UTF-8 (e.g. iconv -t UTF-8).") from None


_HELD: set[Path] = set()   # locks this process holds (exclusive_lock is re-entrant within a process)


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, busy: str) -> Iterator[None]:
    """Hold an advisory exclusive lock on the file ``path`` (created if missing) for the ``with`` block; the OS
    releases it when the process dies, even by SIGKILL, so a crash never leaves a stale lock. If another process
    holds it, raise :class:`ConfigError` with the one-line message ``busy``; a nested ``with`` on a lock this
    process already holds is a no-op. No-op where ``fcntl`` is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    key = Path(path).resolve()
    if key in _HELD:
        yield
        return
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(busy) from None
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)


@contextlib.contextmanager
def blocking_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an advisory exclusive lock on the file ``path`` for the ``with`` block, waiting for another holder to
    finish: two processes building the same cached artefact build it once (the second finds it done). Released by
    the OS when the process dies. No-op where ``fcntl`` is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield
