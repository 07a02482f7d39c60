"""Multi-process training (data parallel): ``torchrun --nproc_per_node N -m privtune train ...`` or ``--nproc N``.

Every process (rank) builds the same model; rank 0 draws the logical batch and broadcasts it (a DP run's Poisson masks
come from rank 0's secret key, :mod:`privtune.training.randomness`: no key is shared or written anywhere), and each
rank takes the examples ``r, r + N, ...`` of it. DP methods: each rank forms the clipped per-example sum of its share with its own engine; rank 0 alone adds
the Gaussian noise ``N(0, sigma^2 C^2 I)`` to *its* share; one all-reduce (sum) then gives every rank

    sum_{i in batch} clip_C(g_i) + N(0, sigma^2 C^2 I)

so the noise enters exactly once, as in one process (and as Opacus' distributed optimizer does). Adding it before
the all-reduce, on one rank, is the safe choice: the noise is drawn by one generator only (rank 0's secret key, or
its CSPRNG under ``--secure-rng``, stays local to rank 0; no secret has to be shared for ranks to agree), and no
process ever holds the un-noised sum of the whole batch. Non-private methods all-reduce their gradients (mean over the logical batch).
Identical gradients and identical optimizer steps keep the replicas identical.

Rank 0 alone writes the run directory: run.json, the ledger (every rank keeps the same ledger in memory, so the
budget guard stops all ranks at the same step), checkpoints and the model. On several machines the run directory
must be on a shared file system (resume reads its checkpoint on every rank).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from privtune.errors import ConfigError, PrivtuneError, TrainingError, fmt


@dataclass(frozen=True)
class Dist:
    """This process's place in a data-parallel group (``world == 1``: a single process, every call a no-op)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, idx: np.ndarray) -> np.ndarray:
        """This rank's examples of the logical batch ``idx``."""
        return idx[self.rank::self.world] if self.world > 1 else idx

    def same_batch(self, idx: np.ndarray, n: int) -> np.ndarray:
        """Rank 0's logical batch on every rank (broadcast as a membership mask over the ``n`` examples)."""
        if self.world == 1:
            return idx
        import torch.distributed as dist

        mask = torch.zeros(n, dtype=torch.uint8)
        if self.main:
            mask[torch.as_tensor(idx, dtype=torch.long)] = 1
        dist.broadcast(mask, src=0)
        return np.flatnonzero(mask.numpy())

    def all_reduce(self, tensors: Sequence[torch.Tensor], op: str = "sum") -> None:
        """In-place all-reduce of ``tensors`` (flattened into one buffer per dtype and device: one call each)."""
        if self.world == 1 or not tensors:
            return
        import torch.distributed as dist

        groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
        for t in tensors:
            groups.setdefault((t.dtype, t.device), []).append(t)
        for ts in groups.values():
            flat = torch.cat([t.reshape(-1) for t in ts])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
            off = 0
            for t in ts:
                t.copy_(flat[off:off + t.numel()].view_as(t))
                off += t.numel()

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank."""
        if self.world == 1:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src=0)

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


SINGLE = Dist()


def from_env() -> Dist:
    """The group torchrun set up (``RANK``/``WORLD_SIZE``), joined on first use; :data:`SINGLE` otherwise.

    With CUDA, each rank uses GPU ``LOCAL_RANK`` modulo the GPUs it sees (several ranks may share one GPU: a test
    setup, or small models) and the group is ``cpu:gloo,cuda:nccl``: NCCL for the gradients on the GPU, gloo for
    the few CPU tensors (the step's loss and clip statistics, the ``--secure-rng`` batch). NCCL refuses two ranks on
    one GPU; ``PRIVTUNE_DIST_BACKEND=gloo`` then runs every collective on gloo (slower, same result).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend=_backend())
    return Dist(rank=dist.get_rank(), world=dist.get_world_size())


def _backend() -> str:
    """The process-group backend string for this process (see :func:`from_env`); sets the rank's GPU."""
    choice = os.environ.get("PRIVTUNE_DIST_BACKEND", "").strip().lower() or None
    if choice not in (None, "nccl", "gloo"):
        raise ConfigError(fmt("PRIVTUNE_DIST_BACKEND", "nccl or gloo (or unset)", choice))
    if not torch.cuda.is_available():
        if choice == "nccl":
            raise ConfigError(fmt("PRIVTUNE_DIST_BACKEND", "gloo on a machine without CUDA", choice))
        return "gloo"
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return "gloo" if choice == "gloo" else "cpu:gloo,cuda:nccl"


def launch(*, nproc: int, out: str | Path | None = None, config: dict[str, Any] | None = None,
           resume: str | Path | None = None, lr: float | None = None, timeout: float | None = None) -> None:
    """Run training in ``nproc`` local processes with ``torch.distributed.run`` (what ``--nproc N`` does);
    ``lr``: the learning rate a resumed run continues with."""
    if not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(fmt("--nproc", "a positive integer", nproc))
    with tempfile.TemporaryDirectory(prefix="privtune-launch-") as tmp:
        args = ["--resume", str(resume)] if resume is not None else []
        if resume is not None and lr is not None:
            args += ["--lr", repr(float(lr))]
        if config is not None:
            path = Path(tmp) / "config.json"
            path.write_text(json.dumps(config), "utf-8")
            args = ["--config-json", str(path), "--out", str(out)]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "privtune.training.distributed", *args]
        import privtune

        src = str(Path(privtune.__file__).resolve().parent.parent)  # importable from a source tree too
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
               "PYTHONPATH": os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])])}
        proc = subprocess.run(cmd, env=env, timeout=timeout, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or "").splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error: ")] or [ln for ln in lines if "Error" in ln] or lines
        raise TrainingError(f"`--nproc {nproc}` training must finish in every process. Found exit status "
                            f"{proc.returncode}: {errors[-1] if errors else 'no output'}")


def _worker(argv: list[str] | None = None) -> None:
    """Entry point of each process started by :func:`launch`."""
    from privtune.training.config import TrainConfig
    from privtune.training.run import resume, train

    ap = argparse.ArgumentParser()
    ap.add_argument("--config-json")
    ap.add_argument("--out")
    ap.add_argument("--resume")
    ap.add_argument("--lr", type=float)
    a = ap.parse_args(argv)
    try:
        if a.resume:
            resume(a.resume, lr=a.lr)
        else:
            train(TrainConfig.from_dict(json.loads(Path(a.config_json).read_text("utf-8"))), out=a.out)
    except PrivtuneError as e:  # one line for launch() to report
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    _worker()
