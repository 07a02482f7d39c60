"""Group privacy of record-level DP-SGD: what a run with a record-level guarantee implies for a *user* who owns
``k`` records (a certified upper bound, labelled ``bound``).

With Poisson sampling at rate ``q`` each of the user's ``k`` records joins a step independently, so the number
``m`` of them in the batch is Binomial(k, q). Each record's gradient is clipped to ``C``, so removing the user
moves the clipped sum by at most ``m C``; the worst case puts all ``k`` gradients in one direction, and the pair

    P = N(0, σ²),    Q = Σ_m Binom(m; k, q) · N(m, σ²)        (in units of C)

dominates one step for the user (Ganesh 2024, "Tight group-level DP guarantees for DP-SGD with sampling for
clipped gradients"). Its privacy loss distribution is dp-accounting's mixture-of-Gaussians PLD (pessimistic, both
adjacency directions), composed over the ledger's steps; ``δ(ε)`` of the composition gives ``ε_k`` at the run's δ,
an upper bound. ``k = 1`` is the run's own record-level ε. The textbook conversion ``(kε, k e^{(k−1)ε} δ)`` is
reported beside it for reference; it is also a bound, usually much looser.
"""

from __future__ import annotations

import math
from typing import Any

from privtune.accounting.ledger import Ledger

METHOD = "pld-mixture-of-gaussians"


def _binomial(k: int, q: float) -> list[float]:
    return [math.comb(k, m) * q ** m * (1.0 - q) ** (k - m) for m in range(k + 1)]


def group_epsilon(ledger: Ledger, *, delta: float, group_size: int,
                  discretization: float | None = None) -> dict[str, Any]:
    """``{"epsilon": ε_k, "delta": δ, "group_size": k, "kind": "bound", "method": ...}`` for a user with
    ``group_size`` records under the record-level mechanism recorded in ``ledger`` (see the module docstring)."""
    from dp_accounting.pld import privacy_loss_distribution as pld

    from privtune.accounting import tuning

    k = int(group_size)
    if k < 1:
        raise ValueError("group_size must be >= 1")
    entries = [(e.noise_multiplier, e.sample_rate, e.steps) for e in ledger]
    if not entries:
        return {"epsilon": 0.0, "delta": delta, "group_size": k, "kind": "bound", "method": METHOD}
    dv = discretization or tuning.pld_discretization(entries)
    composed = None
    for sigma, q, steps in entries:
        one = pld.from_mixture_gaussian_mechanism(standard_deviation=sigma, sensitivities=list(range(k + 1)),
                                                  sampling_probs=_binomial(k, q), pessimistic_estimate=True,
                                                  value_discretization_interval=dv)
        part = one.self_compose(steps)
        composed = part if composed is None else composed.compose(part)
    eps = float(composed.get_epsilon_for_delta(delta))
    return {"epsilon": eps, "delta": delta, "group_size": k, "kind": "bound", "method": METHOD}


def group_conversion(epsilon: float, delta: float, k: int) -> dict[str, float]:
    """The textbook group-privacy conversion of an (ε, δ) guarantee to groups of ``k``: ``(kε, k e^{(k−1)ε} δ)``
    (Dwork and Roth 2014, Theorem 2.2 generalised), δ capped at 1."""
    return {"epsilon": k * epsilon, "delta": min(1.0, k * math.exp(min(700.0, (k - 1) * epsilon)) * delta)}
