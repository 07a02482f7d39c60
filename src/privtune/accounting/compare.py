"""Side-by-side accounting: every accountant on one ledger, calibration by every accountant, ε against steps.

This is the Python API behind ``privtune account`` (the CLI only parses options and prints). An accountant
that cannot handle a ledger (e.g. the Edgeworth expansion far outside its range) yields an
:class:`AccountantFailure` row instead of aborting the comparison.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from privtune.accounting.base import ACCOUNTANTS, Accountant, EpsilonResult, get_accountant
from privtune.accounting.calibrate import CalibrationResult, calibrate_noise
from privtune.accounting.events import (check_dataset_size, check_delta, check_noise_multiplier,
                                        check_sample_rate, check_steps, warn_delta)
from privtune.accounting.ledger import Ledger
from privtune.errors import ConfigError, PrivtuneError, fmt


@dataclass(frozen=True)
class Schedule:
    """Poisson sampling rate q and step count, given directly or from (N, B, epochs): q = B/N, steps =
    ⌈epochs·N/B⌉ (one epoch is N/B steps in expectation)."""

    sample_rate: float
    steps: int
    dataset_size: int | None = None
    batch_size: int | None = None
    epochs: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def resolve_schedule(*, sample_rate: float | None = None, steps: int | None = None,
                     dataset_size: int | None = None, batch_size: int | None = None,
                     epochs: float | None = None) -> Schedule:
    """Turn either (q, steps) or (N, B, epochs) — or a mix such as (N, B, steps) — into one Schedule."""
    if dataset_size is not None:
        dataset_size = check_dataset_size(dataset_size)
    if batch_size is not None:
        batch_size = check_steps(batch_size, "batch_size")
    if sample_rate is not None and batch_size is not None:
        raise ConfigError(fmt("sample_rate", "given alone or as batch_size/dataset_size, not both",
                              sample_rate, "Pass --sample-rate or --dataset-size with --batch-size."))
    if sample_rate is None:
        if dataset_size is None or batch_size is None:
            raise ConfigError(fmt("sample_rate", "given (--sample-rate) or implied by --dataset-size and "
                                                 "--batch-size", None))
        if batch_size > dataset_size:
            raise ConfigError(fmt("batch_size", f"<= dataset_size ({dataset_size})", batch_size))
        sample_rate = batch_size / dataset_size
    sample_rate = check_sample_rate(sample_rate)
    if steps is not None and epochs is not None:
        raise ConfigError(fmt("steps", "given alone or as epochs, not both", steps,
                              "Pass --steps or --epochs."))
    if steps is None:
        if epochs is None:
            raise ConfigError(fmt("steps", "given (--steps) or implied by --epochs", None))
        if not (isinstance(epochs, (int, float)) and math.isfinite(epochs) and epochs > 0):
            raise ConfigError(fmt("epochs", "> 0", epochs))
        steps = max(1, math.ceil(epochs / sample_rate - 1e-9))
    return Schedule(sample_rate=sample_rate, steps=check_steps(steps), dataset_size=dataset_size,
                    batch_size=batch_size, epochs=epochs)


@dataclass(frozen=True)
class AccountantFailure:
    """An accountant that could not answer for this input, with the reason (one line)."""

    accountant: str
    error: str
    certified: bool

    def to_dict(self) -> dict[str, Any]:
        return {"accountant": self.accountant, "error": self.error, "certified": self.certified}


def make_accountants(names: Sequence[str] | None = None, *, order: int | None = None,
                     orderings: str | None = None) -> list[Accountant]:
    """Instantiate ``names`` (default: all registered, certified ones first); ``order`` and ``orderings`` go
    to Edgeworth."""
    if not names:
        names = sorted(ACCOUNTANTS.names(), key=lambda n: not ACCOUNTANTS.get(n).certified)
    options = {k: v for k, v in (("order", order), ("orderings", orderings)) if v is not None}
    return [get_accountant(n, **(options if n == "edgeworth" else {})) for n in names]


def compare(ledger: Ledger, *, delta: float, accountants: Sequence[Accountant],
            on_done: Callable[[], None] | None = None) -> list[EpsilonResult | AccountantFailure]:
    """ε of ``ledger`` at δ by each accountant (each result carries its own wall time, imports excluded; an
    estimate's time includes its certified companion unless a certified accountant listed before computed
    it)."""
    delta = check_delta(delta)
    rows: list[EpsilonResult | AccountantFailure] = []
    for acc in accountants:
        acc.prepare()
        try:
            rows.append(acc.epsilon(ledger, delta=delta))
        except PrivtuneError as e:
            rows.append(AccountantFailure(acc.name, str(e), acc.certified))
        if on_done is not None:
            on_done()
    return rows


def calibrate_each(*, target_epsilon: float, delta: float, schedule: Schedule,
                   accountants: Sequence[Accountant], on_done: Callable[[], None] | None = None,
                   ) -> list[CalibrationResult | AccountantFailure]:
    """The noise multiplier each accountant calibrates for (target ε, δ); estimates are certified upwards."""
    if schedule.dataset_size is not None:
        warn_delta(check_delta(delta), schedule.dataset_size)
    rows: list[CalibrationResult | AccountantFailure] = []
    for acc in accountants:
        acc.prepare()
        try:
            rows.append(calibrate_noise(target_epsilon=target_epsilon, delta=delta, accountant=acc,
                                        sample_rate=schedule.sample_rate, steps=schedule.steps))
        except PrivtuneError as e:
            rows.append(AccountantFailure(acc.name, str(e), acc.certified))
        if on_done is not None:
            on_done()
    return rows


@dataclass(frozen=True)
class Curve:
    """ε(δ) after each of ``steps`` for every accountant; ``nan`` where an accountant failed."""

    noise_multiplier: float
    sample_rate: float
    delta: float
    steps: list[int]
    epsilon: dict[str, list[float]]
    certified: dict[str, bool]
    time_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"noise_multiplier": self.noise_multiplier, "sample_rate": self.sample_rate,
                "delta": self.delta, "steps": self.steps, "time_s": self.time_s,
                "series": [{"accountant": n, "certified": self.certified[n],
                            "epsilon": [e if math.isfinite(e) else None for e in eps]}
                           for n, eps in self.epsilon.items()]}


def epsilon_curve(*, noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                  accountants: Sequence[Accountant], points: int = 25,
                  on_point: Callable[[], None] | None = None) -> Curve:
    """ε at ``points`` step counts evenly spread over [1, steps] for each accountant."""
    sigma, q, n = check_noise_multiplier(noise_multiplier), check_sample_rate(sample_rate), check_steps(steps)
    delta = check_delta(delta)
    points = check_steps(points, "points")
    grid = sorted({max(1, round(n * (i + 1) / points)) for i in range(points)})
    series: dict[str, list[float]] = {}
    times: dict[str, float] = {}
    for acc in accountants:
        start = time.perf_counter()
        values = []
        for k in grid:
            try:
                values.append(acc.epsilon(Ledger.of(noise_multiplier=sigma, sample_rate=q, steps=k),
                                          delta=delta).epsilon)
            except PrivtuneError:
                values.append(math.nan)
            if on_point is not None:
                on_point()
        series[acc.name] = values
        times[acc.name] = time.perf_counter() - start
    return Curve(noise_multiplier=sigma, sample_rate=q, delta=delta, steps=grid, epsilon=series,
                 certified={a.name: a.certified for a in accountants}, time_s=times)


def check_png_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(fmt("--out", "a path ending in .png", str(path)))
    if not path.parent.is_dir():
        raise ConfigError(fmt("--out", "a path in an existing directory", str(path)))
    return path


def plot_curve(curve: Curve, path: str | os.PathLike) -> Path:
    """Write ε against steps as a PNG (atomically). Estimates are dashed and labelled as such."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = check_png_path(path)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, eps in curve.epsilon.items():
        certified = curve.certified[name]
        ax.plot(curve.steps, eps, linestyle="-" if certified else "--",
                marker="." if len(curve.steps) < 40 else None,
                label=f"{name} ({'certified' if certified else 'estimate'})")
    ax.set_xlabel("steps")
    ax.set_ylabel(f"ε at δ = {curve.delta:g}")
    ax.set_title(f"Poisson-subsampled Gaussian, σ = {curve.noise_multiplier:g}, q = {curve.sample_rate:.4g}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
