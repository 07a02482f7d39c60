"""Periodic checkpoints: everything needed to continue a run exactly where it stopped.

``RUN/checkpoints/step-0000123/`` holds the trainable tensors (``trainable.safetensors``), the optimizer and LR
scheduler states, the global RNG states (Python, NumPy, torch; dropout draws from them) and ``state.json``
(step, loss curve, counters, a copy of the ledger at that point). Sampler and noise randomness are functions of
``(seed, step, ledger index)`` and need no state of their own. A checkpoint directory is written to a temporary
sibling and renamed into place, so a checkpoint either exists whole or not at all; older ones are pruned.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

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
