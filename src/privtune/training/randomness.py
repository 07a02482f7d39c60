"""Where a DP run's secret coins come from: the Gaussian noise and the Poisson sampling masks.

The (epsilon, delta) guarantee of DP-SGD holds against an adversary who does not know the mechanism's random draws.
Anyone who can regenerate the noise can subtract it from a released update and is left with the clipped gradient
sum, for which no guarantee holds. So the noise and the masks must not be a function of anything written down.
Everything else — initialisation, dropout, the non-private shuffle order, RGP's projections — is not part of the
mechanism and stays a function of ``--seed`` for reproducibility.

Three sources (run.json ``dp_randomness``):

- ``secret`` (default): a 256-bit key drawn from the operating system's entropy (:func:`secrets.randbits`) when a
  training session starts, held in memory only — never written to run.json, the ledger, checkpoints or logs; a
  resumed session draws a new key. The draws of mechanism invocation ``d`` (its ledger index) come from a PCG64
  generator keyed by ``(key, stream, d)`` through NumPy's ``SeedSequence`` (all 256 bits enter its state): fast,
  independent per invocation, and unpredictable without the key.
- ``secure`` (``--secure-rng``): every uniform straight from the OS CSPRNG, and the noise built against
  floating-point attacks (:mod:`privtune.training.dp.noise`), as Opacus' secure mode.
- ``seeded`` (``--noise-seed N``): the same generators keyed by ``N`` — reproducible, for tests and debugging. N is
  in run.json, and the guarantee does not hold against anyone who knows it: run.json (``privacy_warnings``), the CLI
  and the report say so.

Multi-process runs: rank 0's draws decide (it broadcasts the batch and alone adds the noise,
:mod:`privtune.training.distributed`); the other ranks' keys are never used for anything released.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SOURCES = ("secret", "secure", "seeded")
KEY_BITS = 256
#: stream labels mixed into the key (kept from the former seed-derived streams: 1 masks, 3 noise)
MASK_STREAM, NOISE_STREAM = 1, 3
#: user-level DP: which records of a sampled user enter a step (``--max-records-per-user``)
SUBSET_STREAM = 4


def secure_uniform(n: int) -> np.ndarray:
    """``n`` uniforms in [0, 1) with 53 random bits each, from the OS CSPRNG."""
    raw = np.frombuffer(os.urandom(8 * n), dtype=np.uint64)
    return (raw >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def keyed_rng(key: int, stream: int, draw: int) -> np.random.Generator:
    """The PCG64 generator of ``(key, stream, draw)``; every bit of ``key`` enters its state."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(key), spawn_key=(int(stream), int(draw)))))


@dataclass(frozen=True)
class DPRandomness:
    """The source of one session's noise and Poisson masks (see the module docstring). The key is never shown."""

    source: str
    key: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"unknown randomness source {self.source!r}")

    @classmethod
    def secret(cls) -> "DPRandomness":
        return cls("secret", secrets.randbits(KEY_BITS))

    @classmethod
    def secure(cls) -> "DPRandomness":
        return cls("secure")

    @classmethod
    def seeded(cls, seed: int) -> "DPRandomness":
        return cls("seeded", int(seed))

    @classmethod
    def for_plan(cls, plan: Any) -> "DPRandomness":
        """The source a privacy plan asks for: ``secure_rng``, else ``noise_seed``, else a fresh secret key."""
        if plan.secure_rng:
            return cls.secure()
        if getattr(plan, "noise_seed", None) is not None:
            return cls.seeded(plan.noise_seed)
        return cls.secret()

    def uniforms(self, n: int, *, draw: int) -> np.ndarray:
        """``n`` uniforms in [0, 1) for the Poisson mask of mechanism invocation ``draw``."""
        if self.source == "secure":
            return secure_uniform(n)
        return keyed_rng(self.key, MASK_STREAM, draw).random(n)

    def subset_rng(self, *, draw: int) -> np.random.Generator:
        """The generator choosing which records of each sampled user enter invocation ``draw`` (user-level DP with
        ``--max-records-per-user``): part of the mechanism's coins, as secret as the masks."""
        if self.source == "secure":
            return np.random.Generator(np.random.PCG64(int.from_bytes(os.urandom(32), "big")))
        return keyed_rng(self.key, SUBSET_STREAM, draw)

    def add_noise_(self, tensors: list[Any], std: float, *, draw: int) -> None:
        """Add the Gaussian noise of invocation ``draw`` to ``tensors`` in place (:func:`~.dp.noise.add_noise_`)."""
        from privtune.training.dp.noise import add_noise_, noise_generator

        if self.source == "secure":
            add_noise_(tensors, std, secure=True)
        else:
            add_noise_(tensors, std, generator=noise_generator(self.key, draw))


def run_fields(plan: Any) -> dict[str, Any]:
    """run.json's description of a DP run's randomness (``plan``: a PrivacyPlan or None); never the key."""
    if plan is None:
        return {"dp_randomness": None, "noise_seed": None}
    source = "secure" if plan.secure_rng else ("seeded" if plan.noise_seed is not None else "secret")
    return {"dp_randomness": source, "noise_seed": plan.noise_seed}
