"""Periodic checkpoints: everything needed to continue a run exactly where it stopped.

``RUN/checkpoints/step-0000123/`` holds the trainable tensors (``trainable.safetensors``), the optimizer and LR
scheduler states, the global RNG states (Python, NumPy, torch; dropout draws from them) and ``state.json``
(step, loss curve, counters, the run's ``run_id`` and a copy of the ledger at that point). A DP run's noise and
Poisson masks are keyed by the ledger index and a per-session secret (:mod:`privtune.training.randomness`) that is
never saved: a resumed session draws a new one. A checkpoint directory is written to a temporary sibling and renamed
into place, so a checkpoint either exists whole or not at all; older ones are pruned. A checkpoint damaged later
(a truncated file) is skipped on resume for the newest one that loads whole (:func:`load_newest`).
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from privtune.errors import ResumeError, fmt
from privtune.utils.fsio import atomic_dir, atomic_write_json

CKPT_DIR = "checkpoints"
_PREFIX = "step-"


def rng_state() -> dict[str, Any]:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def save_checkpoint(run_dir: Path, *, step: int, trainable: dict[str, torch.Tensor], optimizer: Any,
                    scheduler: Any, state: dict[str, Any], keep: int = 2) -> Path:
    root = Path(run_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    dest = root / f"{_PREFIX}{step:07d}"
    with atomic_dir(dest, overwrite=True) as tmp:
        save_file({k: v.contiguous() for k, v in trainable.items()}, str(tmp / "trainable.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()},
                   tmp / "training_state.pt")
        atomic_write_json(tmp / "state.json", state)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary directories of interrupted writes are ignored)."""
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX):]))


def latest_step(run_dir: Path) -> int | None:
    """Step of the newest complete checkpoint, or None."""
    ckpts = list_checkpoints(run_dir)
    return int(ckpts[-1].name[len(_PREFIX):]) if ckpts else None


def clean_partial(run_dir: Path) -> None:
    """Remove temporary files and directories left by writes that were killed (they all start with a dot)."""
    for root in (Path(run_dir), Path(run_dir) / CKPT_DIR):
        if not root.is_dir():
            continue
        for p in root.iterdir():
            if p.name.startswith(".") and (".tmp-" in p.name or ".old-" in p.name
                                           or p.name.startswith((".run.json.", ".ledger.json."))):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(trainable tensors, training_state with optimizer/scheduler/rng, state.json)."""
    path = Path(path)
    trainable = load_file(str(path / "trainable.safetensors"))
    training_state = torch.load(path / "training_state.pt", weights_only=False)
    state = json.loads((path / "state.json").read_text("utf-8"))
    return trainable, training_state, state


def checkpoint_steps(run_dir: Path) -> list[int]:
    """Step numbers of every checkpoint directory, whole or damaged (each proves that many steps were taken)."""
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    return sorted(int(p.name[len(_PREFIX):]) for p in root.iterdir()
                  if p.is_dir() and p.name.startswith(_PREFIX) and p.name[len(_PREFIX):].isdigit())


@dataclass
class Checkpoint:
    """A checkpoint loaded whole, and the newer ones skipped as damaged (``(file, reason)``)."""

    path: Path
    step: int
    trainable: dict[str, torch.Tensor]
    training_state: dict[str, Any]
    state: dict[str, Any]
    skipped: list[tuple[str, str]] = field(default_factory=list)


class _Damaged(Exception):
    def __init__(self, file: str, reason: str):
        super().__init__(file, reason)
        self.file, self.reason = file, reason


def _load_whole(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """:func:`load_checkpoint`, raising ``_Damaged(file, reason)`` for the first file that does not load."""
    out = []
    for name, read in (("state.json", lambda f: json.loads(f.read_text("utf-8"))),
                       ("trainable.safetensors", lambda f: load_file(str(f))),
                       ("training_state.pt", lambda f: torch.load(f, weights_only=False))):
        try:
            out.append(read(path / name))
        except Exception as e:  # any parse failure of a truncated or corrupt file (safetensors, pickle, JSON, OS)
            raise _Damaged(str(path / name), f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    state, trainable, training_state = out
    if not isinstance(state, dict) or "train_state" not in state:
        raise _Damaged(str(path / "state.json"), "no train_state")
    return trainable, training_state, state



def load_newest(run_dir: Path, *, run_id: str | None) -> Checkpoint | None:
    """The newest checkpoint of ``run_id`` that loads whole (None when there is no checkpoint at all).

    Damaged newer ones are skipped and listed; when none loads, or a checkpoint is another run's, a one-line
    :class:`ResumeError` names the file.
    """
    root = Path(run_dir) / CKPT_DIR
    skipped: list[tuple[str, str]] = []
    for step in reversed(checkpoint_steps(run_dir)):
        path = root / f"{_PREFIX}{step:07d}"
        try:
            trainable, training_state, state = _load_whole(path)
        except _Damaged as d:
            skipped.append((d.file, d.reason))
            continue
        if state.get("run_id") != run_id:
            raise ResumeError(fmt(f"{path.name} run_id", f"this run's ({run_id})", state.get("run_id"),
                                  f"{path} belongs to another run: remove it or restore this run's checkpoints."))
        return Checkpoint(path=path, step=step, trainable=trainable, training_state=training_state, state=state,
                          skipped=skipped)
    if skipped:
        file, reason = skipped[0]
        raise ResumeError(fmt(file, "a whole checkpoint file", reason, "It is truncated or corrupt and no older "
                              "checkpoint loads: restore it, or move RUN/checkpoints away to restart from step 0 "
                              "(the ledger keeps counting every step already taken)."))
    return None
