"""One configuration of a study, as a unit of work: where it stands, and the function that trains and evaluates it.

Every sweep backend (:mod:`privtune.experiments.backends`) runs the same :func:`run_job` in its worker (a spawned
process, a Ray task, or the sweep's own process), so a run behaves the same wherever it is placed: it resumes from
its checkpoint with its privacy ledger, it never raises for its own failure, and it writes only its run directory.
The sweep process (the *driver*) alone writes the results store.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from privtune.errors import ConfigError, PrivtuneError, fmt
from privtune.utils.fsio import atomic_write_json

SWEEP_FILE = "sweep.json"
FINISHED = ("completed", "budget_exhausted")


@dataclass(frozen=True)
class Resources:
    """What one run asks of a backend that places runs on machines (Ray): CPU cores and GPUs.

    ``cpus`` also sets the run's torch threads there. Fractions (``gpus = 0.5``: two runs share a GPU) follow Ray's
    rule: a quantity above 1 is a whole number.
    """

    cpus: float = 1
    gpus: float = 0

    def to_dict(self) -> dict[str, float]:
        return {"cpus": self.cpus, "gpus": self.gpus}


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to run one configuration (plain data: it is pickled to spawned processes and Ray)."""

    run_id: str
    label: str                      # for progress lines, e.g. "dp-lora ε=8"
    payload: dict[str, Any]         # {"run_id", "grid", "train": TrainConfig keyword arguments}
    run_dir: str                    # absolute: the same path on every machine of a cluster
    data_dir: str
    eval_options: dict[str, Any]
    resources: Resources = field(default_factory=Resources)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text("utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def run_state(run_dir: Path, eval_options: dict[str, Any]) -> str:
    """``done``, ``evaluate`` (trained, not evaluated with these options), ``resume`` or ``new``."""
    record = read_json(run_dir / "run.json")
    if record is None:
        return "new"
    if record.get("status") not in FINISHED:
        return "resume"
    marker = read_json(run_dir / SWEEP_FILE)
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
        if needs_evaluation(read_json(path / "run.json") or {}):
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


def init_worker(threads: int) -> None:
    """Set up a worker process for runs: quiet (the sweep shows progress) and ``threads`` torch threads."""
    os.environ["PRIVTUNE_PROGRESS"] = "0"
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def run_job(job: Job) -> dict[str, Any]:
    """What every backend's worker runs for one configuration (see :func:`execute`)."""
    return execute(job.payload, job.run_dir, job.data_dir, job.eval_options)


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
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
