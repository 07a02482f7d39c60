"""``--backend local`` (the default): this machine, one fresh spawned process per configuration.

``workers`` processes at a time, each with ``cores // workers`` torch threads: a run's peak memory is its own and a
crash (segfault, out-of-memory kill) stays in its run. ``workers=0`` runs the configurations in the sweep's own
process instead (debugging; peak-memory figures then accumulate across runs). On Linux a worker dies with the sweep
(``PR_SET_PDEATHSIG``), so a killed sweep leaves no orphan training into a run directory.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Sequence

from privtune.errors import ConfigError, fmt
from privtune.experiments.backends.base import BACKENDS, Backend, SweepEvents, check_workers
from privtune.experiments.job import Job, init_worker, quiet_progress, run_job


@BACKENDS.register("local")
class LocalBackend(Backend):
    name = "local"

    def __init__(self, *, workers: int | None = None, address: str | None = None):
        if address is not None:
            raise ConfigError(fmt("--address", "used with --backend ray only", address,
                                  "Drop --address, or pass --backend ray."))
        workers = 1 if workers is None else workers
        check_workers(workers, minimum=0, meaning="a non-negative integer (0: in the sweep's own process)")
        super().__init__(workers=workers)

    def describe(self) -> str:
        return "in this process" if self.workers == 0 else f"{self.workers} local process(es) at a time"

    def run(self, jobs: Sequence[Job], events: SweepEvents, *, study_dir: Path) -> None:
        if self.workers == 0:
            for job in jobs:
                events.started(job)
                with quiet_progress():
                    out = run_job(job)
                events.finished(job, out)
        else:
            self._run_processes(jobs, events)

    def _run_processes(self, jobs: Sequence[Job], events: SweepEvents) -> None:
        import multiprocessing as mp
        from multiprocessing.connection import wait as wait_any

        ctx = mp.get_context("spawn")
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        queue = list(jobs)
        running: dict[Any, tuple[Job, Any, Any]] = {}     # sentinel -> (job, process, pipe end)
        try:
            while queue or running:
                while queue and len(running) < self.workers:
                    job = queue.pop(0)
                    recv, send = ctx.Pipe(duplex=False)
                    proc = ctx.Process(target=_worker, args=(send, threads, job), daemon=True)
                    try:
                        proc.start()
                    except OSError as e:   # the child died while being started (killed, out of memory)
                        send.close()
                        recv.close()
                        events.finished(job, _failed(f"the worker process could not start ({e})"))
                        continue
                    send.close()
                    running[proc.sentinel] = (job, proc, recv)
                    events.started(job)
                for sentinel in wait_any(list(running)):
                    job, proc, recv = running.pop(sentinel)
                    try:
                        out = recv.recv() if recv.poll() else None
                    except EOFError:               # died before sending its result
                        out = None
                    proc.join()
                    recv.close()
                    if out is None:
                        out = _failed(f"the worker process died (exit code {proc.exitcode}: killed or out of memory)")
                    events.finished(job, out)
        finally:
            for _, proc, _ in running.values():   # interrupted: stop the runs (they resume next time)
                proc.terminate()
                proc.join()


def _failed(error: str) -> dict[str, Any]:
    return {"status": "failed", "stage": "train", "error": error, "wall_s": 0.0}


def _worker(conn: Any, threads: int, job: Job) -> None:
    init_worker(threads)
    with contextlib.suppress(Exception):          # Linux: die with the sweep process (no orphan training)
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    conn.send(run_job(job))
    conn.close()
