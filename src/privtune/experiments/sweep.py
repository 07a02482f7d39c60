"""Run a study: every configuration trained and evaluated, resumable, one failure never stopping the others.

Layout of the study directory ``DIR``::

    DIR/study.toml            the study as last run
    DIR/data/<name>/          generated datasets (idempotent: the same spec writes nothing new)
    DIR/runs/<run_id>/        one run directory per configuration (run.json, model/, eval.json, sweep.json)
    DIR/results.sqlite        one row per configuration (privtune.experiments.store)
    DIR/results.csv           the same rows, rewritten after each sweep
    DIR/.sweep.lock           held by the sweep running on DIR (one at a time)
    DIR/.running/             ray backend: one file per running task (host, pid), removed when it ends

A configuration is *done* when its run finished (run.json ``status`` completed or budget_exhausted), ``eval.json``
exists (causal-LM runs; a classification run is scored by training: test accuracy and macro-F1 in run.json), and
``sweep.json`` records the same evaluation options. A resumed sweep skips done configurations, resumes
interrupted training from its last checkpoint (``privtune.training.run.resume``: the privacy ledger comes back with
it), re-evaluates when only the evaluation is missing, and by default retries failed ones.

Where the configurations run is the *backend*'s business (:mod:`privtune.experiments.backends`): ``local`` (the
default) runs each in a fresh spawned process on this machine, ``workers`` at a time; ``ray`` runs each as a Ray
task on a cluster, with the CPUs and GPUs the study's ``[resources]`` ask for. Everything else is this module's and
the same for every backend: the study directory's lock (one sweep per directory), which configurations run
(skipped, resumed, re-evaluated, retried), the results store (written by this process only: workers send back what
happened) and the progress display.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape

from privtune.errors import ConfigError, PrivtuneError, fmt
from privtune.experiments.backends import Backend, make_backend
from privtune.experiments.config import RunConfig, Study, load_study
from privtune.experiments.job import (FINISHED, SWEEP_FILE, Job, execute, needs_evaluation,  # noqa: F401
                                      read_json, run_state)
from privtune.experiments.store import CSV_FILE, STORE_FILE, ResultStore, make_row, recorded_study_name
from privtune.utils import owned
from privtune.utils.fsio import atomic_write_text, exclusive_lock
from privtune.utils.progress import console, make_progress

RUNS_DIR = "runs"


@dataclass
class RunOutcome:
    """What happened to one configuration in this sweep."""

    run_id: str
    status: str                 # completed | failed | skipped (already done) | kept-failed
    stage: str | None = None    # data | train | eval, for failures
    error: str | None = None
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SweepResult:
    study_dir: Path
    outcomes: list[RunOutcome] = field(default_factory=list)
    wall_s: float = 0.0

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status in ("failed", "kept-failed")]

    def to_dict(self) -> dict[str, Any]:
        return {"study_dir": str(self.study_dir), "wall_s": round(self.wall_s, 2),
                "completed": self.count("completed"), "skipped": self.count("skipped"), "failed": len(self.failed),
                "outcomes": [o.to_dict() for o in self.outcomes]}


class Sweep:
    """One execution of a study into a directory (see the module docstring)."""

    def __init__(self, study: Study, out: str | Path, *, workers: int | None = None, retry_failed: bool = True,
                 backend: str | Backend = "local", address: str | None = None):
        self.backend = backend if isinstance(backend, Backend) else make_backend(backend, workers=workers,
                                                                                 address=address)
        self.study, self.dir, self.retry_failed = study, Path(out), retry_failed
        self.configs = study.expand()
        self._seq = {rc.run_id: i for i, rc in enumerate(self.configs)}
        self.result = SweepResult(self.dir)

    # -- files -------------------------------------------------------------------------------------------------
    def run_dir(self, rc: RunConfig) -> Path:
        return self.dir / RUNS_DIR / rc.run_id

    def _job(self, rc: RunConfig) -> Job:
        """What a worker needs for ``rc``; absolute paths, the same on every machine that shares the directory."""
        root = self.dir.resolve()
        data_dir = str(self.study.datasets[rc.dataset].location(root))
        label = rc.method + (f" ε={rc.epsilon:g}" if rc.epsilon else "") + \
            (f" per {rc.privacy_unit}" if rc.privacy_unit else "")
        return Job(run_id=rc.run_id, label=label, run_dir=str(root / RUNS_DIR / rc.run_id), data_dir=data_dir,
                   payload={"run_id": rc.run_id, "grid": rc.grid(), "train": rc.train_config(data_dir)},
                   eval_options=self.study.eval, resources=self.study.resources_of(rc.method))

    def _row(self, rc: RunConfig, status: str, stage: str | None = None, error: str | None = None) -> dict[str, Any]:
        d = self.run_dir(rc)
        run_json = read_json(d / "run.json")
        eval_json = read_json(d / "eval.json") if status == "completed" else None
        from privtune.training.trajectory import TRAJECTORY_FILE, read_points

        return make_row(run_id=rc.run_id, status=status, stage=stage, error=error, grid=rc.grid(),
                        run_dir=str(d.relative_to(self.dir)) if d.exists() else None, run_json=run_json,
                        eval_json=eval_json, seq=self._seq[rc.run_id], trajectory=read_points(d / TRAJECTORY_FILE))

    def _prepare_data(self) -> dict[str, str]:
        """Generate the study's synthetic datasets; returns ``{dataset: error}`` for those that failed."""
        from privtune.data.synth import synth_dataset

        failed = {}
        for ds in self.study.datasets.values():
            if ds.generator is None:
                continue
            o = dict(ds.options)
            kw = {"n_train": o.pop("train", None), "n_test": o.pop("test", None), **o}
            digits = kw.pop("canary_digits", None)
            if digits:  # a smaller (or larger) candidate space than the default 6 digits; secret drawn from the seed
                rng = random.Random(f"privtune:{kw.get('seed', 0)}:canary-digits:{digits}")
                kw["canary"] = "".join(rng.choice("0123456789") for _ in range(digits))
            try:
                synth_dataset(ds.generator, out=ds.location(self.dir), overwrite=True, **kw)
            except PrivtuneError as e:
                failed[ds.name] = str(e)
        return failed

    # -- the sweep ---------------------------------------------------------------------------------------------
    def run(self) -> SweepResult:
        t0 = time.perf_counter()
        check_study_dir(self.dir, self.study.name)
        with self.backend.session():   # e.g. joined the Ray cluster: a wrong address has written nothing
            self.dir.mkdir(parents=True, exist_ok=True)
            with _sweep_lock(self.dir):
                self._run()
        self.result.wall_s = time.perf_counter() - t0
        return self.result

    def _run(self) -> None:
        if self.study.source:
            atomic_write_text(self.dir / "study.toml", self.study.source)
        with ResultStore(self.dir) as store:
            store.put_study({"name": self.study.name, "config": self.study.to_dict(), "toml": self.study.source,
                             "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            store.delete_missing({rc.run_id for rc in self.configs})
            data_errors = self._prepare_data()
            todo: list[RunConfig] = []
            for rc in self.configs:
                previous = store.get(rc.run_id)
                if rc.dataset in data_errors:
                    self._record(store, rc, "failed", "data", data_errors[rc.dataset], 0.0)
                elif run_state(self.run_dir(rc), self.study.eval) == "done":
                    store.upsert(self._row(rc, "completed"))
                    self.result.outcomes.append(RunOutcome(rc.run_id, "skipped"))
                elif previous and previous["status"] == "failed" and not self.retry_failed:
                    self.result.outcomes.append(RunOutcome(rc.run_id, "kept-failed", previous["stage"],
                                                           previous["error"]))
                else:
                    store.upsert(self._row(rc, "pending"))
                    todo.append(rc)
            with make_progress() as progress:
                task = progress.add_task(f"sweep {self.study.name}", total=len(self.configs))
                progress.update(task, completed=len(self.configs) - len(todo))
                if todo:
                    console.print(escape(f"{self.study.name}: {len(todo)} run(s) to do ({self.backend.describe()})"),
                                  highlight=False)
                events = _Events(self, store, progress, task, todo)
                self.backend.run([self._job(rc) for rc in todo], events, study_dir=self.dir)
            store.export_csv(self.dir / CSV_FILE)

    def _record(self, store: ResultStore, rc: RunConfig, status: str, stage: str | None, error: str | None,
                wall_s: float) -> None:
        store.upsert(self._row(rc, status, stage, error))
        self.result.outcomes.append(RunOutcome(rc.run_id, status, stage, error, wall_s))
        if status == "completed":
            console.print(f"[green]done[/] {escape(rc.run_id)} ({wall_s:.0f} s)", highlight=False)
        else:
            console.print(f"[red]failed[/] {escape(f'{rc.run_id} at {stage}: {error}')}", highlight=False,
                          soft_wrap=True)


class _Events:
    """The sweep's side of a backend's reports: store rows, outcomes and the progress line (runs done, running,
    waiting), the same for every backend."""

    def __init__(self, sweep: Sweep, store: ResultStore, progress: Any, task: Any, todo: list[RunConfig]):
        self.sweep, self.store, self.progress, self.task = sweep, store, progress, task
        self.configs = {rc.run_id: rc for rc in todo}
        self.running: dict[str, str] = {}
        self.waiting = len(todo)

    def started(self, job: Job) -> None:
        self.store.upsert(self.sweep._row(self.configs[job.run_id], "running"))
        self.running[job.run_id] = job.label
        self.waiting -= 1
        self._describe()

    def finished(self, job: Job, outcome: dict[str, Any]) -> None:
        if self.running.pop(job.run_id, None) is None:
            self.waiting -= 1               # failed before it could start
        self.sweep._record(self.store, self.configs[job.run_id], outcome["status"], outcome["stage"],
                           outcome["error"], outcome["wall_s"])
        self.progress.advance(self.task)
        self._describe()

    def _describe(self) -> None:
        text = f"sweep {self.sweep.study.name}: " + (", ".join(self.running.values()) or "-")
        if self.waiting:
            text += f" ({self.waiting} waiting)"
        self.progress.update(self.task, description=escape(text))


def _sweep_lock(study_dir: Path) -> Any:
    return exclusive_lock(study_dir / ".sweep.lock", fmt(
        "--out", "a study directory no other sweep is using", str(study_dir),
        "Wait for the other `privtune sweep` (or demo) to finish."))


def check_study_dir(study_dir: Path, name: str) -> None:
    """A sweep writes into ``study_dir``: refuse it unless it is new, empty, or the directory of the study
    ``name`` (results.sqlite or study.toml; the name results.sqlite records, when it records one)."""
    if study_dir.exists() and not study_dir.is_dir():
        raise ConfigError(fmt("--out", "a directory path", str(study_dir), "It is a file: choose another path."))
    if not study_dir.is_dir() or owned.is_empty(study_dir):
        return
    kind = owned.recognise(study_dir)
    if kind == "study":
        recorded = recorded_study_name(study_dir)
        if recorded is None or recorded == name:
            return
        held = f"the results of study {recorded!r}"
    else:
        held = f"a privtune {kind}" if kind else "files privtune did not write"
    raise ConfigError(fmt("--out", f"a new or empty directory, or the directory of study {name!r}", str(study_dir),
                          f"It holds {held}: choose another --out."))


def rebuild_store(study_dir: str | Path) -> Path | None:
    """Rebuild ``DIR/results.sqlite`` (and results.csv) from ``DIR/study.toml`` and the run directories.

    Every configuration of the study gets its row again: ``completed`` with its run.json and eval.json figures
    when its run directory is done, ``failed`` (with run.json's error) when its training failed, ``pending``
    otherwise (the next ``privtune sweep`` runs it). A store already there, damaged or not, is moved aside to
    ``results.sqlite.old-<time>``, never deleted; its path is returned (None when there was none).
    """
    d = Path(study_dir)
    toml = d / "study.toml"
    if not toml.is_file():
        raise ConfigError(fmt("DIR", "a study directory with study.toml (written by `privtune sweep`)", str(d),
                              "Re-run the study with `privtune sweep STUDY --out DIR`: finished runs are read back, "
                              "not trained again."))
    import re

    from privtune.experiments.config import parse_study, tomllib

    text = toml.read_text("utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(fmt(str(toml), "valid TOML", "a parse error", f"({e}).")) from None
    if "name" not in data:  # the study was named after its file; the store that knew it may be the damaged one
        data["name"] = recorded_study_name(d) or re.sub(r"[^\w.-]+", "_", d.resolve().name) or "study"
    study = parse_study(data, base_dir=d, where=str(toml), check_paths=False)
    study.source = text
    sweep = Sweep(study, d)
    with _sweep_lock(d):
        moved = None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for suffix in ("", "-wal", "-shm", "-journal"):
            p = d / f"{STORE_FILE}{suffix}"
            if p.exists():
                dest = d / f"{STORE_FILE}.old-{stamp}{suffix}"
                os.replace(p, dest)
                moved = moved or dest
        with ResultStore(d) as store:
            store.put_study({"name": study.name, "config": study.to_dict(), "toml": text,
                             "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            for rc in sweep.configs:
                record = read_json(sweep.run_dir(rc) / "run.json") or {}
                if run_state(sweep.run_dir(rc), study.eval) == "done":
                    store.upsert(sweep._row(rc, "completed"))
                elif record.get("status") == "failed":
                    store.upsert(sweep._row(rc, "failed", "train", record.get("error")))
                else:
                    store.upsert(sweep._row(rc, "pending"))
            store.export_csv(d / CSV_FILE)
    return moved


def run_sweep(study: str | Path | Study, *, out: str | Path, workers: int | None = None, retry_failed: bool = True,
              backend: str = "local", address: str | None = None) -> SweepResult:
    """Run (or resume) ``study`` into the study directory ``out``; see the module docstring.

    ``backend``: where the runs execute (``local`` or ``ray``, :mod:`privtune.experiments.backends`). ``workers``:
    local, configurations at a time (default 1; 0: in this process); ray, runs submitted at once (default all).
    ``address``: ray only, the cluster to join (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``; default: start a
    local instance).
    """
    if not isinstance(study, Study):
        study = load_study(study)
    return Sweep(study, out, workers=workers, retry_failed=retry_failed, backend=backend, address=address).run()
