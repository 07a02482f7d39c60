"""What happened, kept apart from how it is accounted (the dp-accounting design).

An event is an immutable description of a randomised mechanism; accountants interpret events, events never
compute privacy. privtune's DP-SGD step is one event::

    SelfComposedEvent(PoissonSampledEvent(sample_rate=q, event=GaussianEvent(noise_multiplier=σ)),
    count=steps)

Quantities (units):

* ``noise_multiplier`` σ: standard deviation of the Gaussian noise divided by the L2 sensitivity (the clipping
norm
  C in DP-SGD). Dimensionless, σ > 0.
* ``sample_rate`` q: probability that one record is in a batch under Poisson sampling, q = expected batch size
/ N,
  0 < q <= 1.
* ``count``: number of adaptive compositions (training steps), an integer >= 1.

The validators below are shared by the ledger, the accountants and calibration, so every entry point rejects
the same bad input with the same one-line message.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from privtune.errors import ConfigError, fmt


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ConfigError(fmt(name, "a finite number", value))
    return float(value)


def check_noise_multiplier(value: Any, name: str = "noise_multiplier") -> float:
    """σ must be a finite number > 0 (σ = 0 is not private; use no accountant at all)."""
    v = _real(name, value)
    if v <= 0:
        raise ConfigError(fmt(name, "> 0 (noise std / clipping norm)", value,
                              "Pass a positive noise multiplier, e.g. 1.0."))
    return v


def check_sample_rate(value: Any, name: str = "sample_rate") -> float:
    """q must lie in (0, 1]: the Poisson inclusion probability of one record."""
    v = _real(name, value)
    if not 0 < v <= 1:
        raise ConfigError(fmt(name, "in (0, 1] (expected batch size / dataset size)", value,
                              "Pass batch_size / dataset_size, e.g. 0.01."))
    return v


def check_delta(value: Any, name: str = "delta") -> float:
    """δ must lie in the open interval (0, 1)."""
    v = _real(name, value)
    if not 0 < v < 1:
        raise ConfigError(fmt(name, "in (0, 1)", value, "Use a delta well below 1/dataset_size, e.g. 1e-5."))
    return v


def check_epsilon(value: Any, name: str = "epsilon") -> float:
    """ε must be a finite number > 0 when it is a target or a query point."""
    v = _real(name, value)
    if v <= 0:
        raise ConfigError(fmt(name, "> 0", value, "Pass a positive privacy budget, e.g. 8."))
    return v


def check_steps(value: Any, name: str = "steps", *, minimum: int = 1) -> int:
    """A step count must be an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ConfigError(fmt(name, f"an integer >= {minimum}", value))
    if value < minimum:
        raise ConfigError(fmt(name, f"an integer >= {minimum}", value, "Train for at least one step."))
    return int(value)


class Event:
    """Base class of the immutable event descriptions."""


@dataclass(frozen=True)
class GaussianEvent(Event):
    """The Gaussian mechanism f(D) + N(0, σ²C²I) on a query of L2 sensitivity C."""

    noise_multiplier: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "noise_multiplier", check_noise_multiplier(self.noise_multiplier))


@dataclass(frozen=True)
class PoissonSampledEvent(Event):
    """``event`` run on a Poisson sample: each record is included independently with probability
    ``sample_rate``."""

    sample_rate: float
    event: Event

    def __post_init__(self) -> None:
        object.__setattr__(self, "sample_rate", check_sample_rate(self.sample_rate))
        if not isinstance(self.event, Event):
            raise ConfigError(fmt("event", "an Event", type(self.event).__name__))


@dataclass(frozen=True)
class SelfComposedEvent(Event):
    """``event`` composed adaptively with itself ``count`` times."""

    event: Event
    count: int

    def __post_init__(self) -> None:
        if not isinstance(self.event, Event):
            raise ConfigError(fmt("event", "an Event", type(self.event).__name__))
        object.__setattr__(self, "count", check_steps(self.count, "count"))


@dataclass(frozen=True)
class ComposedEvent(Event):
    """The adaptive composition of ``events``, in order."""

    events: tuple[Event, ...]

    def __post_init__(self) -> None:
        events = tuple(self.events)
        for e in events:
            if not isinstance(e, Event):
                raise ConfigError(fmt("events", "a sequence of Event", type(e).__name__))
        object.__setattr__(self, "events", events)


def dp_sgd_event(*, noise_multiplier: float, sample_rate: float, steps: int = 1) -> SelfComposedEvent:
    """The event of ``steps`` DP-SGD steps with Poisson sampling at rate q and noise multiplier σ."""
    return SelfComposedEvent(PoissonSampledEvent(sample_rate, GaussianEvent(noise_multiplier)), steps)


def to_dp_accounting(event: Event):
    """Translate an event into the equivalent ``dp_accounting.dp_event.DpEvent`` (for the RDP and PLD
    accountants)."""
    from dp_accounting import dp_event

    if isinstance(event, GaussianEvent):
        return dp_event.GaussianDpEvent(event.noise_multiplier)
    if isinstance(event, PoissonSampledEvent):
        return dp_event.PoissonSampledDpEvent(event.sample_rate, to_dp_accounting(event.event))
    if isinstance(event, SelfComposedEvent):
        return dp_event.SelfComposedDpEvent(to_dp_accounting(event.event), event.count)
    if isinstance(event, ComposedEvent):
        return dp_event.ComposedDpEvent([to_dp_accounting(e) for e in event.events])
    raise ConfigError(fmt("event", "a privtune accounting Event", type(event).__name__))


class AccountingWarning(UserWarning):
    """A privacy setting that is legal but unwise (e.g. δ >= 1/N)."""


def check_dataset_size(value: Any, name: str = "dataset_size") -> int:
    return check_steps(value, name)


def warn_delta(delta: float, dataset_size: int | None) -> None:
    """Warn when δ >= 1/N: such a δ allows releasing one whole record with probability δ per record."""
    import warnings

    if dataset_size is not None and delta >= 1.0 / dataset_size:
        warnings.warn(AccountingWarning(fmt("delta", f"< 1/dataset_size = {1.0 / dataset_size:.3g}", delta,
                                            "Use delta well below 1/N, e.g. 1/(10·N).")), stacklevel=3)
