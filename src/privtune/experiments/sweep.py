"""Run a study: every configuration trained and evaluated, resumable, one failure never stopping the others.

Layout of the study directory ``DIR``::

    DIR/study.toml            the study as last run
    DIR/data/<name>/          generated datasets (idempotent: the same spec writes nothing new)
    DIR/runs/<run_id>/        one run directory per configuration (run.json, model/, eval.json, sweep.json)
    DIR/results.sqlite        one row per configuration (privtune.experiments.store)
    DIR/results.csv           the same rows, rewritten after each sweep

A configuration is *done* when its run finished (run.json ``status`` completed or budget_exhausted), ``eval.json``
exists (causal-LM runs; a classification run is scored by training: test accuracy and macro-F1 in run.json), and
``sweep.json`` records the same evaluation options. A resumed sweep skips done configurations, resumes
interrupted training from its last checkpoint (``privtune.training.run.resume``: the privacy ledger comes back with
it), re-evaluates when only the evaluation is missing, and by default retries failed ones.

Each configuration runs in a fresh process (``spawn``), ``workers`` of them at a time, each with
``cores // workers`` torch threads: a run's peak memory is its own and a crash stays in its run. ``workers=0`` runs
them in the sweep's own process instead (debugging). Only this process writes the store; workers send back what
happened. On Linux a worker dies with the sweep (a killed sweep leaves no orphan training into a run directory).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from rich.markup import escape

from privtune.errors import ConfigError, PrivtuneError, fmt
from privtune.experiments.config import RunConfig, Study, load_study
from privtune.experiments.store import CSV_FILE, STORE_FILE, ResultStore, make_row, recorded_study_name
from privtune.utils import owned
from privtune.utils.fsio import atomic_write_json, atomic_write_text, exclusive_lock
from privtune.utils.progress import console, make_progress

RUNS_DIR = "runs"
SWEEP_FILE = "sweep.json"
FINISHED = ("completed", "budget_exhausted")


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


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text("utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def run_state(run_dir: Path, eval_options: dict[str, Any]) -> str:
    """``done``, ``evaluate`` (trained, not evaluated with these options), ``resume`` or ``new``."""
    record = _read_json(run_dir / "run.json")
    if record is None:
        return "new"
    if record.get("status") not in FINISHED:
        return "resume"
    marker = _read_json(run_dir / SWEEP_FILE)
    evaluated = (run_dir / "eval.json").is_file() or not needs_evaluation(record)
    if evaluated and marker is not None and marker.get("eval_options") == eval_options:
        return "done"
    return "evaluate"


def needs_evaluation(record: dict[str, Any]) -> bool:
    """Causal-LM runs are evaluated (privtune.evaluation scores next-token predictions); classification runs are
    scored by training itself (run.json ``test_accuracy``, ``macro_f1``)."""
    return record.get("task", "lm") == "lm"


def execute(cfg: dict[str, Any], run_dir: str, data_dir: str, eval_options: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume) and evaluate one configuration; never raises for a run's own failure.

    Returns ``{"status": "completed"|"failed", "stage", "error", "wall_s"}``.
    """
    from privtune.evaluation.evaluate import evaluate_run
    from privtune.experiments.validate import eval_config
    from privtune.training.config import TrainConfig
    from privtune.training.run import resume, train

    t0 = time.perf_counter()
    path = Path(run_dir)
    stage = "train"
    try:
        state = run_state(path, eval_options)
        if state == "new":
            result = train(TrainConfig.from_dict(cfg["train"]), out=path)
        elif state == "resume":
            result = resume(path)
        if state in ("new", "resume") and result.status not in FINISHED:
            raise ConfigError(fmt("run status", "completed", result.status))
        stage = "eval"
        only, ecfg = eval_config(eval_options)
        if needs_evaluation(_read_json(path / "run.json") or {}):
            evaluate_run(path, data_dir, only=only, config=ecfg)
        atomic_write_json(path / SWEEP_FILE, {"run_id": cfg["run_id"], "grid": cfg["grid"],
                                              "eval_options": eval_options})
        return {"status": "completed", "stage": None, "error": None, "wall_s": time.perf_counter() - t0}
    except PrivtuneError as e:
        err = str(e)
    except Exception as e:  # a bug or a library error in one run must not stop the study
        tb = traceback.extract_tb(e.__traceback__)
        where = f" ({Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
        err = f"{type(e).__name__}: {e}{where}"
    return {"status": "failed", "stage": stage, "error": err.splitlines()[0] if err else "failed",
            "wall_s": time.perf_counter() - t0}


def _init_worker(threads: int) -> None:
    os.environ["PRIVTUNE_PROGRESS"] = "0"        # the sweep shows progress; workers stay quiet
    os.environ["OMP_NUM_THREADS"] = str(threads)
    with contextlib.suppress(Exception):          # Linux: die with the sweep process (no orphan training)
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    import torch

    torch.set_num_threads(threads)


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """In-process runs must not open their own live display inside the sweep's."""
    old = os.environ.get("PRIVTUNE_PROGRESS")
    os.environ["PRIVTUNE_PROGRESS"] = "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PRIVTUNE_PROGRESS", None)
        else:
            os.environ["PRIVTUNE_PROGRESS"] = old


class Sweep:
    """One execution of a study into a directory (see the module docstring)."""

    def __init__(self, study: Study, out: str | Path, *, workers: int = 1, retry_failed: bool = True):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ConfigError(fmt("--workers", "a non-negative integer (0: in the sweep's own process)", workers))
        self.study, self.dir, self.workers, self.retry_failed = study, Path(out), workers, retry_failed
        self.configs = study.expand()
        self._seq = {rc.run_id: i for i, rc in enumerate(self.configs)}
        self.result = SweepResult(self.dir)

    # -- files -------------------------------------------------------------------------------------------------
    def run_dir(self, rc: RunConfig) -> Path:
        return self.dir / RUNS_DIR / rc.run_id

    def _payload(self, rc: RunConfig) -> dict[str, Any]:
        data_dir = self.study.datasets[rc.dataset].location(self.dir)
        return {"run_id": rc.run_id, "grid": rc.grid(), "train": rc.train_config(data_dir)}

    def _row(self, rc: RunConfig, status: str, stage: str | None = None, error: str | None = None) -> dict[str, Any]:
        d = self.run_dir(rc)
        run_json = _read_json(d / "run.json")
        eval_json = _read_json(d / "eval.json") if status == "completed" else None
        return make_row(run_id=rc.run_id, status=status, stage=stage, error=error, grid=rc.grid(),
                        run_dir=str(d.relative_to(self.dir)) if d.exists() else None, run_json=run_json,
                        eval_json=eval_json, seq=self._seq[rc.run_id])

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
                if self.workers == 0:
                    self._run_inline(store, todo, progress, task)
                else:
                    self._run_processes(store, todo, progress, task)
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

    def _start(self, store: ResultStore, rc: RunConfig) -> None:
        row = self._row(rc, "running")
        store.upsert(row)

    def _run_inline(self, store: ResultStore, todo: list[RunConfig], progress: Any, task: Any) -> None:
        """``workers=0``: in this process (for debugging; peak-memory figures then accumulate across runs)."""
        for rc in todo:
            progress.update(task, description=f"sweep {self.study.name}: {rc.run_id}")
            self._start(store, rc)
            p = self._payload(rc)
            with _quiet_progress():
                out = execute(p, str(self.run_dir(rc)), p["train"]["data"], self.study.eval)
            self._record(store, rc, out["status"], out["stage"], out["error"], out["wall_s"])
            progress.advance(task)

    def _run_processes(self, store: ResultStore, todo: list[RunConfig], progress: Any, task: Any) -> None:
        """One fresh spawned process per configuration, at most ``workers`` at a time.

        A fresh process per run keeps each run's peak memory (process RSS) its own and a crash (segfault, OOM
        kill) confined to its run.
        """
        import multiprocessing as mp
        from multiprocessing.connection import wait as wait_any

        ctx = mp.get_context("spawn")
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        queue = list(todo)
        running: dict[Any, tuple[RunConfig, Any, Any]] = {}     # sentinel -> (config, process, pipe end)
        try:
            while queue or running:
                while queue and len(running) < self.workers:
                    rc = queue.pop(0)
                    self._start(store, rc)
                    p = self._payload(rc)
                    recv, send = ctx.Pipe(duplex=False)
                    proc = ctx.Process(target=_worker, args=(send, threads, p, str(self.run_dir(rc)),
                                                             p["train"]["data"], self.study.eval), daemon=True)
                    try:
                        proc.start()
                    except OSError as e:   # the child died while being started (killed, out of memory)
                        send.close()
                        recv.close()
                        self._record(store, rc, "failed", "train", f"the worker process could not start ({e})", 0.0)
                        progress.advance(task)
                        continue
                    send.close()
                    running[proc.sentinel] = (rc, proc, recv)
                names = ", ".join(rc.method + (f" ε={rc.epsilon:g}" if rc.epsilon else "") for rc, _, _ in
                                  running.values())
                progress.update(task, description=f"sweep {self.study.name}: {names}")
                for sentinel in wait_any(list(running)):
                    rc, proc, recv = running.pop(sentinel)
                    try:
                        out = recv.recv() if recv.poll() else None
                    except EOFError:               # died before sending its result
                        out = None
                    proc.join()
                    recv.close()
                    if out is None:
                        out = {"status": "failed", "stage": "train", "wall_s": 0.0,
                               "error": f"the worker process died (exit code {proc.exitcode}: killed or out of memory)"}
                    self._record(store, rc, out["status"], out["stage"], out["error"], out["wall_s"])
                    progress.advance(task)
        finally:
            for _, proc, _ in running.values():   # interrupted: stop the runs (they resume next time)
                proc.terminate()
                proc.join()


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
                record = _read_json(sweep.run_dir(rc) / "run.json") or {}
                if run_state(sweep.run_dir(rc), study.eval) == "done":
                    store.upsert(sweep._row(rc, "completed"))
                elif record.get("status") == "failed":
                    store.upsert(sweep._row(rc, "failed", "train", record.get("error")))
                else:
                    store.upsert(sweep._row(rc, "pending"))
            store.export_csv(d / CSV_FILE)
    return moved


def _worker(conn: Any, threads: int, payload: dict[str, Any], run_dir: str, data_dir: str,
            eval_options: dict[str, Any]) -> None:
    _init_worker(threads)
    conn.send(execute(payload, run_dir, data_dir, eval_options))
    conn.close()


def run_sweep(study: str | Path | Study, *, out: str | Path, workers: int = 1,
              retry_failed: bool = True) -> SweepResult:
    """Run (or resume) ``study`` into the study directory ``out``; see the module docstring."""
    if not isinstance(study, Study):
        study = load_study(study)
    return Sweep(study, out, workers=workers, retry_failed=retry_failed).run()
