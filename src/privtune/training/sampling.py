"""Which training examples each optimizer step uses.

- :class:`PoissonSampler` (DP runs): every example joins the step-``t`` batch independently with probability
  ``q = expected_batch / N`` — the sampling the accountants assume (Abadi et al. 2016; Mironov, Talwar and Zhang
  2019). Batch sizes vary (Binomial(N, q)); a batch can be empty and the step still counts and adds noise.
- :class:`ShuffleSampler` (non-DP runs): fixed batches of exactly ``batch_size`` from a stream of per-epoch
  permutations, so that non-private runs use the same logical batch and number of steps as private ones.

Both are stateless: resuming at step ``t`` needs no saved generator state. The shuffle order is a function of
``(seed, epoch)`` (reproducible). A Poisson mask is part of the DP mechanism: it comes from the run's
:class:`~privtune.training.randomness.DPRandomness` (by default a secret key never written down) and depends on
``draw``, the ledger index of the mechanism invocation, so that a DP step executed again after a crash gets fresh,
independent randomness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from privtune.errors import ConfigError, fmt
from privtune.training.randomness import DPRandomness


def step_rng(seed: int, *parts: int) -> np.random.Generator:
    """A generator determined by ``(seed, *parts)`` alone (SeedSequence mixes the entropy)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *[int(p) for p in parts]]))


@dataclass(frozen=True)
class PoissonSampler:
    """Poisson sampling with rate ``sample_rate`` over ``n`` examples, with the masks drawn from ``randomness``."""

    n: int
    sample_rate: float
    randomness: DPRandomness
    name = "poisson"

    def __post_init__(self):
        if not (0.0 < self.sample_rate <= 1.0):
            raise ConfigError(fmt("sample_rate", "in (0, 1]", self.sample_rate))

    def batch(self, step: int, *, draw: int | None = None) -> np.ndarray:
        """Indices of the examples in the batch of ``step``; ``draw`` (default ``step``) is the ledger index of the
        invocation, which distinguishes repeated executions of a step."""
        u = self.randomness.uniforms(self.n, draw=step if draw is None else draw)
        return np.flatnonzero(u < self.sample_rate)

    @property
    def expected_batch_size(self) -> float:
        return self.n * self.sample_rate


@dataclass(frozen=True)
class UserPoissonSampler:
    """User-level Poisson sampling: every *user* joins the step-``t`` batch independently with probability
    ``q = expected users / N_users``; a sampled user brings all their records, or ``max_records_per_user`` of them
    chosen uniformly at random without replacement per step. The mask and the choice come from ``randomness``
    (the mechanism's secret coins), keyed by ``draw``. ``users``: the record indices of each user."""

    users: tuple[np.ndarray, ...]
    sample_rate: float
    randomness: DPRandomness
    max_records_per_user: int | None = None
    name = "poisson-users"

    def __post_init__(self):
        if not (0.0 < self.sample_rate <= 1.0):
            raise ConfigError(fmt("sample_rate", "in (0, 1]", self.sample_rate))

    @property
    def n(self) -> int:
        return len(self.users)

    def batch_users(self, step: int, *, draw: int | None = None) -> list[np.ndarray]:
        """The record indices of each sampled user of ``step`` (whole users, at most M records each)."""
        d = step if draw is None else draw
        chosen = np.flatnonzero(self.randomness.uniforms(self.n, draw=d) < self.sample_rate)
        out = [np.asarray(self.users[u], dtype=np.int64) for u in chosen]
        m = self.max_records_per_user
        if m is not None and any(len(r) > m for r in out):
            rng = self.randomness.subset_rng(draw=d)
            out = [r if len(r) <= m else np.sort(rng.choice(r, size=m, replace=False)) for r in out]
        return out

    def batch(self, step: int, *, draw: int | None = None) -> np.ndarray:
        users = self.batch_users(step, draw=draw)
        return np.concatenate(users) if users else np.empty(0, dtype=np.int64)

    @property
    def expected_batch_size(self) -> float:
        """Expected *users* per step (the DP update divides the noisy sum by it)."""
        return self.n * self.sample_rate

    @property
    def expected_records(self) -> float:
        """Expected records per step: ``q * sum_u min(|u|, M)``."""
        m = self.max_records_per_user
        return self.sample_rate * float(sum(len(u) if m is None else min(len(u), m) for u in self.users))


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


def split_micro_users(users: list[np.ndarray], physical_batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pack whole users into micro-batches of at most ``physical_batch_size`` records: ``(indices, groups)`` with
    ``groups`` the user ``0 .. G-1`` of each index within its micro-batch. A user's records are never split (their
    summed gradient is clipped as one); a user with more records than the bound gets a micro-batch of their own,
    larger than the bound (cap it with ``--max-records-per-user``)."""
    out: list[tuple[np.ndarray, np.ndarray]] = []
    cur: list[np.ndarray] = []
    size = 0
    for recs in users:
        if cur and size + len(recs) > physical_batch_size:
            out.append(_pack(cur))
            cur, size = [], 0
        cur.append(recs)
        size += len(recs)
    if cur:
        out.append(_pack(cur))
    return out


def _pack(users: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    idx = np.concatenate(users).astype(np.int64)
    groups = np.concatenate([np.full(len(r), k, dtype=np.int64) for k, r in enumerate(users)])
    return idx, groups


def split_micro(indices: np.ndarray, physical_batch_size: int) -> list[np.ndarray]:
    """Split a logical batch into physical micro-batches of at most ``physical_batch_size`` (memory bound)."""
    if len(indices) == 0:
        return []
    return [indices[i:i + physical_batch_size] for i in range(0, len(indices), physical_batch_size)]
