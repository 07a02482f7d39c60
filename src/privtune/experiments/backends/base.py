"""The interface between a sweep and the engine that places its runs."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Iterator, Protocol, Sequence

from privtune.errors import ConfigError, fmt
from privtune.experiments.job import Job
from privtune.registry import Registry


class SweepEvents(Protocol):
    """What a backend tells the sweep, always from the sweep's own process and thread."""

    def started(self, job: Job) -> None:
        """``job`` began executing on a worker (not merely queued)."""

    def finished(self, job: Job, outcome: dict[str, Any]) -> None:
        """``job`` ended: ``outcome`` is :func:`privtune.experiments.job.execute`'s dict (``status``, ``stage``,
        ``error``, ``wall_s``), or one the backend made for a worker that died."""


class Backend(ABC):
    """Runs configurations somewhere and reports each start and end through :class:`SweepEvents`.

    Contract: every job given to :meth:`run` gets exactly one ``finished`` call (a worker that died is a failed
    outcome, never an exception), preceded by ``started`` once it began; a job is run at most once per call (no
    silent re-execution: a failure is visible, and the next sweep resumes it from its checkpoint); when :meth:`run`
    is interrupted (Ctrl-C), the backend stops its runs before returning, so that nothing writes into the study
    directory once the sweep has released its lock.
    """

    name: ClassVar[str] = ""

    def __init__(self, *, workers: int | None = None, address: str | None = None):
        self.workers, self.address = workers, address

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Set up what :meth:`run` needs (a cluster connection) before the sweep writes anything; no-op here."""
        yield

    @abstractmethod
    def run(self, jobs: Sequence[Job], events: SweepEvents, *, study_dir: Path) -> None:
        """Run every job of ``jobs`` (in order of submission) and report through ``events``."""

    def describe(self) -> str:
        return self.name


BACKENDS: Registry[type[Backend]] = Registry("--backend")


def make_backend(name: str = "local", *, workers: int | None = None, address: str | None = None) -> Backend:
    """The backend registered as ``name``, given the sweep's options (each backend checks the ones it takes)."""
    if not isinstance(name, str):
        raise ConfigError(fmt("--backend", f"one of {', '.join(BACKENDS.names())}", name))
    return BACKENDS.get(name)(workers=workers, address=address)


def check_workers(workers: Any, *, minimum: int, meaning: str) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < minimum:
        raise ConfigError(fmt("--workers", meaning, workers))
