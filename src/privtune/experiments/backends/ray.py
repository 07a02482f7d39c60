"""``--backend ray``: each configuration is one Ray task on a cluster (``pip install 'privtune[ray]'``).

The task runs exactly what a local worker runs (:func:`privtune.experiments.job.run_job`), with the CPUs and GPUs
the study asks for that method (``[resources]``, :class:`~privtune.experiments.job.Resources`); Ray places it where
they are free. Choices, and why:

- **The study directory is shared.** Run directories are written by the tasks straight into ``DIR/runs/`` (a
  shared file system mounted at the same path on every node); nothing travels through Ray's object store but a
  small outcome dict. The driver (this process) alone writes the results store, as with the local backend. A task
  that does not see the study directory fails at once with a one-line error naming its node.
- **No retries** (``max_retries=0``). A worker that dies (killed, out of memory, node lost) fails its run visibly,
  with the reason, and the other runs go on; the next sweep resumes it from its checkpoint, ledger included. Ray's
  silent re-execution would have been safe for privacy (a resumed run charges every step it ran) but would hide
  the failure and repeat an out-of-memory crash as it was.
- **A fresh worker process per run** (``max_calls=1``): the run's peak memory (``ru_maxrss``) is its own, and a
  GPU run releases its memory when it ends, as with the local backend's spawned processes.
- **Started, not queued.** Each task writes ``DIR/.running/<run_id>.json`` (host, pid) when it begins, so the store
  and the progress line say ``running`` only for runs that really run; queued ones stay ``pending``.
- **Nothing outlives the sweep.** Interrupted (Ctrl-C), the driver cancels its tasks (force) before it releases
  the study directory; a driver that dies takes its tasks with it (Ray ends a job's tasks with its driver).

``address``: ``None`` starts a local Ray instance on this machine (unless this process already joined one: then it
is used as it is); ``auto`` joins the cluster this machine belongs to (``ray start``); ``HOST:PORT`` a head node's
GCS, ``ray://HOST:PORT`` a cluster through Ray Client. ``workers`` caps the runs submitted at once (default: all,
Ray queues them until resources free up).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from privtune.errors import ConfigError, MissingDependencyError, fmt
from privtune.experiments.backends.base import BACKENDS, Backend, SweepEvents, check_workers
from privtune.experiments.job import Job, init_worker, run_job
from privtune.utils.fsio import atomic_write_json

#: Where running tasks announce themselves, inside the study directory.
RUNNING_DIR = ".running"
#: Seconds between looks at the start markers while waiting for results.
POLL_S = 0.5
#: Environment variables of the driver that tasks inherit when set (a shared model cache, offline flags).
FORWARDED_ENV = ("PRIVTUNE_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependencyError(fmt("--backend ray", "used with Ray installed", "ray missing",
                                         "Install it with `pip install 'privtune[ray]'`.")) from None
    return ray


@BACKENDS.register("ray")
class RayBackend(Backend):
    name = "ray"

    def __init__(self, *, workers: int | None = None, address: str | None = None):
        if workers is not None:
            check_workers(workers, minimum=1, meaning="a positive integer (runs submitted at once) with --backend "
                          "ray")
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise ConfigError(fmt("--address", "auto, HOST:PORT or ray://HOST:PORT", address))
        import_ray()  # fail before anything is written
        super().__init__(workers=workers, address=address)
        self._cluster = "?"

    def describe(self) -> str:
        return f"Ray ({self._cluster})"

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        ray = import_ray()
        started_here = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"address": self.address, "include_dashboard": False,
                                      "log_to_driver": True, "logging_level": "warning"}
            if self.address is None:  # a local instance: its workers import privtune from where this process does
                import privtune

                src = str(Path(privtune.__file__).resolve().parent.parent)
                path = os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])])
                kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
            _check_reachable(self.address)   # Ray itself would retry an unreachable address for minutes
            try:
                ray.init(**kwargs)
            except Exception as e:  # no cluster there, a refused connection, Ray Client not installed, ...
                first = (str(e).strip().splitlines() or [""])[0][:200]
                raise ConfigError(fmt("--address", "a reachable Ray cluster (auto, HOST:PORT or ray://HOST:PORT)",
                                      self.address, f"Ray said: {type(e).__name__}: {first}")) from None
            started_here = True
        try:
            res = ray.cluster_resources()
            self._cluster = f"{res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs"
            yield
        finally:
            if started_here:
                ray.shutdown()

    def run(self, jobs: Sequence[Job], events: SweepEvents, *, study_dir: Path) -> None:
        ray = import_ray()
        markers = Path(study_dir).resolve() / RUNNING_DIR
        markers.mkdir(parents=True, exist_ok=True)
        for stale in markers.glob("*.json"):  # left by a driver that died (this one holds the study's lock)
            stale.unlink(missing_ok=True)
        task = ray.remote(max_retries=0, max_calls=1)(ray_task)
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        queue = list(jobs)
        inflight: dict[Any, Job] = {}
        started: set[str] = set()
        try:
            while queue or inflight:
                while queue and (self.workers is None or len(inflight) < self.workers):
                    job = queue.pop(0)
                    r = job.resources
                    opts: dict[str, Any] = {"num_cpus": r.cpus, "num_gpus": r.gpus, "name": f"privtune:{job.run_id}"}
                    if env:
                        opts["runtime_env"] = {"env_vars": env}
                    ref = task.options(**opts).remote(job, str(markers / f"{job.run_id}.json"))
                    inflight[ref] = job
                done, _ = ray.wait(list(inflight), num_returns=1, timeout=POLL_S)
                begun = {m.stem for m in markers.glob("*.json")}   # one directory listing, also on NFS
                for job in inflight.values():   # which of the submitted ones have begun
                    if job.run_id not in started and job.run_id in begun:
                        started.add(job.run_id)
                        events.started(job)
                for ref in done:
                    job = inflight.pop(ref)
                    out = _outcome(ray, ref)
                    if job.run_id not in started:
                        started.add(job.run_id)
                        events.started(job)
                    (markers / f"{job.run_id}.json").unlink(missing_ok=True)
                    events.finished(job, out)
        finally:
            if inflight:   # interrupted: stop the runs before the sweep releases the study directory
                for ref in inflight:
                    with contextlib.suppress(Exception):
                        ray.cancel(ref, force=True)
                with contextlib.suppress(Exception):
                    ray.wait(list(inflight), num_returns=len(inflight), timeout=30)


def _check_reachable(address: str | None, timeout: float = 10.0) -> None:
    """A ``HOST:PORT`` or ``ray://HOST:PORT`` address must answer a TCP connection (``auto`` and ``None`` are
    Ray's to resolve)."""
    if address is None or address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(fmt("--address", "auto, HOST:PORT or ray://HOST:PORT", address))
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConfigError(fmt("--address", "a reachable Ray cluster (auto, HOST:PORT or ray://HOST:PORT)", address,
                              f"Nothing answers there ({type(e).__name__}): start the head node with "
                              "`ray start --head`, or check the host and port.")) from None


def _outcome(ray: Any, ref: Any) -> dict[str, Any]:
    """The task's own outcome, or a failed one for a task Ray could not finish."""
    try:
        return ray.get(ref)
    except ray.exceptions.WorkerCrashedError:
        error = "the Ray worker running it died (killed or out of memory)"
    except ray.exceptions.OutOfMemoryError:
        error = "Ray's memory monitor killed it (its node ran out of memory)"
    except ray.exceptions.TaskCancelledError:
        error = "the Ray task was cancelled"
    except ray.exceptions.RayError as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        error = f"Ray could not run it ({type(e).__name__}: {first})"
    return {"status": "failed", "stage": "train", "error": error, "wall_s": 0.0}


def ray_task(job: Job, marker: str) -> dict[str, Any]:
    """One configuration, in a Ray worker: check the shared study directory, announce the start, run the job."""
    host = socket.gethostname()
    study_runs = Path(marker).parent
    for what, path in (("the study directory", study_runs), ("the dataset", Path(job.data_dir))):
        if not path.is_dir():
            return {"status": "failed", "stage": "train", "wall_s": 0.0, "error": fmt(
                "--out", "on a file system every Ray node sees, at the same path", str(path),
                f"{what.capitalize()} is missing on node {host}: mount the study directory there (NFS, ...).")}
    init_worker(max(1, int(job.resources.cpus)))
    atomic_write_json(marker, {"run_id": job.run_id, "host": host, "pid": os.getpid(),
                               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return run_job(job)
