"""Privacy-loss-distribution accountant (certified, tight): dp-accounting's pessimistic PLD.

The privacy loss of one step is L = log(dQ/dP) for the dominating pair P = N(0, σ²), Q = (1 − q)N(0, σ²) +
qN(1, σ²) and its reverse (add and remove); the loss of a composition is the sum of the per-step losses, so
its distribution is the convolution of the per-step PLDs (computed by FFT), and
δ(ε) = E_Q[(1 − e^(ε − L))₊] + P[L = ∞] (Koskela, Jälkö & Honkela 2020; Doroshenko, Ghazi, Kamath, Kumar &
Manurangsi 2022, "Connect the dots"). The *pessimistic* discretisation rounds losses up onto a grid of spacing
Δ (and puts truncated tail mass at +∞), so the ε returned is an upper bound on the exact ε for both orderings.
Δ is chosen in :func:`privtune.accounting.tuning.pld_discretization` (about 7e-4 relative accuracy; coarser,
with a bounded grid, for ledgers whose ε is in the hundreds).

One-step PLDs are cached per (σ, q, Δ) and composed PLDs per entry and per ledger, so asking for several δ of
one ledger, for another step count at the same (σ, q) (max_steps, curves), or for one more entry on top of a
long ledger does not redo that work.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from privtune.accounting import tuning
from privtune.accounting.base import ACCOUNTANTS, Accountant
from privtune.accounting.ledger import Ledger
from privtune.errors import ConfigError, fmt


@lru_cache(maxsize=16)
def _step_pld(noise_multiplier: float, sample_rate: float, discretization: float):
    """One step's PLD: built point by point in Python by dp-accounting (most of the cost of a cold query)."""
    from dp_accounting.pld import privacy_loss_distribution as pld

    return pld.from_gaussian_mechanism(standard_deviation=noise_multiplier, sampling_prob=sample_rate,
                                       value_discretization_interval=discretization,
                                       pessimistic_estimate=True)


@lru_cache(maxsize=16)
def _entry_pld(noise_multiplier: float, sample_rate: float, steps: int, discretization: float):
    from dp_accounting.pld import privacy_loss_distribution as pld

    if sample_rate == 1.0:  # n Gaussian steps at σ are exactly one at σ/√n: no convolution error
        return pld.from_gaussian_mechanism(standard_deviation=noise_multiplier / math.sqrt(steps),
                                           value_discretization_interval=discretization,
                                           pessimistic_estimate=True)
    one = _step_pld(noise_multiplier, sample_rate, discretization)
    return one.self_compose(steps) if steps > 1 else one


@lru_cache(maxsize=8)
def _ledger_pld(key: tuple[tuple[float, float, int], ...], discretization: float):
    composed = None
    for sigma, q, steps in key:
        p = _entry_pld(sigma, q, steps, discretization)
        composed = p if composed is None else composed.compose(p)
    return composed


@ACCOUNTANTS.register("pld")
class PLDAccountant(Accountant):
    """Certified, tight. ``discretization``: fixed Δ instead of the automatic choice (smaller = tighter,
    slower)."""

    name = "pld"
    certified = True

    def __init__(self, *, discretization: float | None = None):
        valid = isinstance(discretization, (int, float)) and 0 < discretization < 1
        if discretization is not None and not valid:
            raise ConfigError(fmt("discretization", "in (0, 1) or None (automatic)", discretization))
        self.discretization = discretization

    def discretization_for(self, ledger: Ledger) -> float:
        if self.discretization is not None:
            return float(self.discretization)
        return tuning.pld_discretization(ledger.key)

    def pld(self, ledger: Ledger):
        """The composed ``dp_accounting`` PrivacyLossDistribution of the whole ledger (cached)."""
        return _ledger_pld(ledger.key, self.discretization_for(ledger))

    def prepare(self) -> None:
        from dp_accounting.pld import privacy_loss_distribution  # noqa: F401

    def _epsilon(self, ledger: Ledger, delta: float) -> dict[str, Any]:
        return {"epsilon": float(self.pld(ledger).get_epsilon_for_delta(delta)),
                "discretization": self.discretization_for(ledger)}

    def _delta(self, ledger: Ledger, epsilon: float) -> float:
        return float(self.pld(ledger).get_delta_for_epsilon(epsilon))
