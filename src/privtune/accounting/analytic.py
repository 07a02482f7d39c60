"""Closed forms used as exact references and as cheap starting points.

Gaussian privacy loss. With q = 1, ``steps`` Gaussian steps at noise multiplier σ are exactly μ-GDP with
μ = sqrt(steps)/σ (Dong, Roth & Su 2022, "Gaussian differential privacy", Cor. 3.3): the privacy loss is
N(μ²/2, μ²) under Q and N(−μ²/2, μ²) under P, and the tight curve is

    δ(ε) = Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2)        (Balle & Wang 2018, Thm. 8).

Poisson-subsampled Gaussian CLT. ``steps`` steps at (σ, q) are approximately μ-GDP with
μ = q·sqrt(steps·(e^(1/σ²) − 1)) (Bu, Dong, Long & Su 2020, Thm. 5). Not a bound: used only to start searches.
"""

from __future__ import annotations

import math

import numpy as np


def gaussian_delta(*, mu: float, epsilon: float) -> float:
    """Tight δ(ε) of μ-GDP, computed in log space (no cancellation for large ε)."""
    from scipy import special

    if mu <= 0:
        return 0.0
    a = -epsilon / mu + mu / 2
    b = -epsilon / mu - mu / 2
    log_pa = special.log_ndtr(a)
    return float(-math.exp(log_pa) * math.expm1(epsilon + special.log_ndtr(b) - log_pa))


def gaussian_epsilon(*, mu: float, delta: float) -> float:
    """Tight ε(δ) of μ-GDP: the root of gaussian_delta(μ, ε) = δ (0 when δ(0) <= δ already)."""
    from scipy import optimize

    if gaussian_delta(mu=mu, epsilon=0.0) <= delta:
        return 0.0
    hi = max(1.0, mu * mu)
    while gaussian_delta(mu=mu, epsilon=hi) > delta:
        hi *= 2
    return float(optimize.brentq(lambda e: gaussian_delta(mu=mu, epsilon=e) - delta, 0.0, hi, xtol=1e-13,
                                 rtol=4 * np.finfo(float).eps))


def gaussian_mu(*, epsilon: float, delta: float) -> float:
    """The μ of the Gaussian mechanism whose tight ε(δ) equals ``epsilon`` (δ(ε) increases with μ)."""
    from scipy import optimize

    lo, hi = 1e-3, 1.0
    while gaussian_delta(mu=lo, epsilon=epsilon) >= delta:
        if lo < 1e-300:
            return lo
        lo /= 16
    while gaussian_delta(mu=hi, epsilon=epsilon) < delta:
        hi *= 2
    return float(optimize.brentq(lambda m: gaussian_delta(mu=m, epsilon=epsilon) - delta, lo, hi,
                                 xtol=lo * 1e-9))


def clt_mu_squared(noise_multiplier: float, sample_rate: float, steps: int) -> float:
    """μ² of the CLT approximation: q²·steps·(e^(1/σ²) − 1); adds over ledger entries."""
    return sample_rate ** 2 * steps * math.expm1(min(1.0 / noise_multiplier ** 2, 700.0))


def clt_noise_multiplier(*, mu_squared_per_step: float, sample_rate: float) -> float:
    """Invert e^(1/σ²) − 1 = μ²/(q²·steps) for σ."""
    return 1.0 / math.sqrt(math.log1p(mu_squared_per_step / sample_rate ** 2))
