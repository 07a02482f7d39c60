"""Rényi-DP accountant (certified, loose): dp-accounting's analysis of the Poisson-subsampled Gaussian.

Per step, the RDP of order α of the subsampled Gaussian is R_α(σ, q) = log(A_α)/(α − 1) (Mironov, Talwar &
Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian Mechanism", Sec. 3.3), which bounds both
orderings of the add/remove pair. RDP adds over steps: R_α = Σ_i steps_i·R_α(σ_i, q_i). It converts to (ε,
δ)-DP by ε = min_α R_α + log(1 − 1/α) − log(δ·α)/(α − 1) (Balle et al. 2020, "Hypothesis testing
interpretations and Rényi DP", Thm. 21). A valid upper bound for any set of orders; looser than PLD/PRV, most
at small ε.

The per-step vector R_α(σ, q) is cached, so cost does not grow with the number of steps.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from privtune.accounting import tuning
from privtune.accounting.base import ACCOUNTANTS, Accountant
from privtune.accounting.ledger import Ledger
from privtune.errors import ConfigError, fmt


@lru_cache(maxsize=256)
def _rdp_per_step(noise_multiplier: float, sample_rate: float, orders: tuple[float, ...]) -> np.ndarray:
    from dp_accounting import dp_event
    from dp_accounting.rdp import rdp_privacy_accountant

    acc = rdp_privacy_accountant.RdpAccountant(orders=list(orders))
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # "failed to converge ... excluding this order": expected at small σ
    try:
        acc.compose(dp_event.PoissonSampledDpEvent(sample_rate, dp_event.GaussianDpEvent(noise_multiplier)))
    finally:
        absl.setLevel(level)
    rdp = acc.rdp
    rdp.setflags(write=False)
    return rdp


@ACCOUNTANTS.register("rdp")
class RDPAccountant(Accountant):
    """Certified, loose. ``orders``: the Rényi orders α > 1 to minimise over (default
    :data:`tuning.RDP_ORDERS`)."""

    name = "rdp"
    certified = True

    def __init__(self, *, orders: Sequence[float] | None = None):
        orders = tuple(float(a) for a in (orders if orders is not None else tuning.RDP_ORDERS))
        if not orders or min(orders) <= 1:
            raise ConfigError(fmt("orders", "a non-empty list of Rényi orders > 1", orders))
        self.orders = orders

    def rdp(self, ledger: Ledger) -> np.ndarray:
        """Total RDP of the ledger at each order: Σ_i steps_i·R_α(σ_i, q_i)."""
        total = np.zeros(len(self.orders))
        for e in ledger.entries:
            total = total + e.steps * _rdp_per_step(e.noise_multiplier, e.sample_rate, self.orders)
        return total

    def prepare(self) -> None:
        from dp_accounting.rdp import rdp_privacy_accountant  # noqa: F401

    def _epsilon(self, ledger: Ledger, delta: float) -> dict[str, Any]:
        from dp_accounting.rdp import rdp_privacy_accountant

        eps, order = rdp_privacy_accountant.compute_epsilon(self.orders, self.rdp(ledger), delta)
        return {"epsilon": float(eps), "rdp_order": float(order)}

    def _delta(self, ledger: Ledger, epsilon: float) -> float:
        from dp_accounting.rdp import rdp_privacy_accountant

        d, _ = rdp_privacy_accountant.compute_delta(self.orders, self.rdp(ledger), epsilon)
        return float(d)
