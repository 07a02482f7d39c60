"""Which training examples each optimizer step uses.

- :class:`PoissonSampler` (DP runs): every example joins the step-``t`` batch independently with probability
  ``q = expected_batch / N`` — the sampling the accountants assume (Abadi et al. 2016; Mironov, Talwar and Zhang
  2019). Batch sizes vary (Binomial(N, q)); a batch can be empty and the step still counts and adds noise.
- :class:`ShuffleSampler` (non-DP runs): fixed batches of exactly ``batch_size`` from a stream of per-epoch
  permutations, so that non-private runs use the same logical batch and number of steps as private ones.

Both are stateless functions of ``(seed, step, draw)``: resuming at step ``t`` needs no saved generator state, and a
DP step executed again after a crash gets fresh, independent randomness because its ``draw`` (the ledger index of
the mechanism invocation) differs. ``secure=True`` draws Poisson masks from the operating system's CSPRNG
(``os.urandom``) instead, as secure-RNG mode requires; such runs are not reproducible.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from privtune.errors import ConfigError, fmt


def step_rng(seed: int, *parts: int) -> np.random.Generator:
    """A generator determined by ``(seed, *parts)`` alone (SeedSequence mixes the entropy)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *[int(p) for p in parts]]))


def secure_uniform(n: int) -> np.ndarray:
    """``n`` uniforms in [0, 1) with 53 random bits each, from the OS CSPRNG."""
    raw = np.frombuffer(os.urandom(8 * n), dtype=np.uint64)
    return (raw >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


@dataclass(frozen=True)
class PoissonSampler:
    """Poisson sampling with rate ``sample_rate`` over ``n`` examples."""

    n: int
    sample_rate: float
    seed: int
    secure: bool = False
    name = "poisson"

    def __post_init__(self):
        if not (0.0 < self.sample_rate <= 1.0):
            raise ConfigError(fmt("sample_rate", "in (0, 1]", self.sample_rate))

    def batch(self, step: int, *, draw: int | None = None) -> np.ndarray:
        """Indices of the examples in the batch of ``step``; ``draw`` distinguishes repeated executions."""
        u = secure_uniform(self.n) if self.secure else step_rng(self.seed, 1, step, step if draw is None else draw).random(self.n)
        return np.flatnonzero(u < self.sample_rate)

    @property
    def expected_batch_size(self) -> float:
        return self.n * self.sample_rate


@dataclass(frozen=True)
class ShuffleSampler:
    """Batches of exactly ``batch_size`` taken in order from a stream of per-epoch permutations."""

    n: int
    batch_size: int
    seed: int
    name = "shuffle"

    def __post_init__(self):
        if not (1 <= self.batch_size <= self.n):
            raise ConfigError(fmt("batch_size", f"between 1 and the number of training records ({self.n})",
                                  self.batch_size))

    def _perm(self, epoch: int) -> np.ndarray:
        return step_rng(self.seed, 2, epoch).permutation(self.n)

    def batch(self, step: int, *, draw: int | None = None) -> np.ndarray:
        start = (step - 1) * self.batch_size
        out = []
        while len(out) < self.batch_size:
            epoch, pos = divmod(start + len(out), self.n)
            take = min(self.batch_size - len(out), self.n - pos)
            out.extend(self._perm(epoch)[pos:pos + take].tolist())
        return np.asarray(out, dtype=np.int64)

    @property
    def expected_batch_size(self) -> float:
        return float(self.batch_size)


def planned_steps(*, n: int, batch_size: int, epochs: float | None, steps: int | None) -> int:
    """Steps of a run: given directly, or ``ceil(epochs * N / B)`` (epochs = steps * q for Poisson sampling)."""
    if steps is not None:
        if steps < 1:
            raise ConfigError(fmt("--steps", "a positive integer", steps))
        return int(steps)
    if epochs is None or not epochs > 0:
        raise ConfigError(fmt("--epochs", "a positive number", epochs))
    return max(1, math.ceil(epochs * n / batch_size))


def split_micro(indices: np.ndarray, physical_batch_size: int) -> list[np.ndarray]:
    """Split a logical batch into physical micro-batches of at most ``physical_batch_size`` (memory bound)."""
    if len(indices) == 0:
        return []
    return [indices[i:i + physical_batch_size] for i in range(0, len(indices), physical_batch_size)]
