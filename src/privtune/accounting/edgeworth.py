"""Edgeworth accountant (an *estimate*, never certified): the Edgeworth accountant of Wang et al. 2022 ("Analytical
composition of differential privacy via the Edgeworth accountant") as EW-Tune uses it (Behnia et al. 2022, "EW-Tune:
a framework for privately fine-tuning large language models with differential privacy"), made robust and
extended to orders 1–3 and both neighbouring orderings.

Privacy loss. One step of the Poisson-subsampled Gaussian has the dominating pair P = N(0, 1),
Q = (1 − q)N(0, 1) + qN(μ, 1) with μ = 1/σ, and log-likelihood ratio

    ℓ(x) = log dQ/dP(x) = log(1 − q + q·exp(μx − μ²/2)).

For n steps the loss is a sum of independent copies, so its cumulants add: K_k = Σ_i n_i·κ_k(σ_i, q_i), under
P and under Q. The per-step cumulants κ_1..κ_5 are computed once per (σ, q) (cached) by the trapezoidal rule
on x ∈ [−38, b] (φ(38) underflows; b covers the mass near μ and the peaks of ℓ^k·φ), with step h = min(1/4,
0.3/μ): ℓ is analytic in a strip of half-width π/μ, so the rule converges like exp(−2π²/(μh)) (Trefethen &
Weideman 2014). ℓ is evaluated without cancellation or overflow (log1p(q·expm1(a)) while q·e^a < 1,
a + log q + log1p(...) after), and the moments are central, so no digits are lost to the mean. At q = 1 the
loss is exactly N(±μ²/2, μ²) and the cumulants are set in closed form (κ_3 = κ_4 = κ_5 = 0), which makes the
expansion exact there.

Expansion. With z = (ε − K_1)/sqrt(K_2) and γ_k = K_k / K_2^(k/2), the Edgeworth series of the survival
function is S(ε) = 1 − Φ(z) + φ(z)·c(z), where (He_k the probabilists' Hermite polynomials; Hall 1992,
Sec. 2.2)

    order 1: c = γ3/6·He2
    order 2: c += γ4/24·He3 + γ3²/72·He5
    order 3: c += γ5/120·He4 + γ3γ4/144·He6 + γ3³/1296·He8.

The hockey-stick divergence of each ordering is then
remove: δ_R(ε) = S_Q(ε) − e^ε S_P(ε) for L = Σℓ;  add: δ_A(ε) = S_P^−(ε) − e^ε S_Q^−(ε) for −L, whose
cumulants are (−1)^k K_k. The estimate is δ(ε) = max(δ_R, δ_A), and ε(δ) is the *largest* ε with δ(ε) = δ (the
expansion need not be monotone; the largest crossing is the cautious choice), found by scanning a grid that
covers both loss distributions to 40 standard deviations and refining the last sign change with Brent's
method. ε is never negative (0 when δ(0) <= δ already), the root finder's convergence is checked, and every
term is computed in log space, so no σ or q produces NaN or overflow.

Accuracy. The estimate can be off either way; it is worst at small σ, small q·steps and small δ (e.g. σ 0.7,
q 0.01, 120 steps, δ 1e-5: 1.43 at order 1 where the exact ε is 2.46). That is why every result carries the
certified PLD ε of the same ledger, and why calibration with this accountant certifies the σ it returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from privtune.accounting import tuning
from privtune.accounting.base import ACCOUNTANTS, Accountant, get_accountant
from privtune.accounting.events import check_delta
from privtune.accounting.ledger import Ledger
from privtune.errors import ConfigError, fmt

ORDERS = (1, 2, 3)
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_TAIL = 38.0            # |x| beyond which φ(x) underflows
_MAX_EXP = 700.0        # clip exponents: a finite wrong number beats inf − inf = NaN


@dataclass(frozen=True)
class Cumulants:
    """Cumulants κ_1..κ_5 of the per-step privacy loss ℓ under P and under Q (index 0 is κ_1)."""

    p: tuple[float, float, float, float, float]
    q: tuple[float, float, float, float, float]


def privacy_loss(x: np.ndarray, mu: float, sample_rate: float) -> np.ndarray:
    """ℓ(x) = log(1 − q + q·exp(μx − μ²/2)), accurate to relative precision for tiny and huge arguments."""
    a = mu * x - mu * mu / 2
    if sample_rate == 1.0:
        return a
    log_q = math.log(sample_rate)
    small = a + log_q < 0  # q·e^a < 1: log1p of a number in (−q, 1)
    a_small = np.where(small, a, 0.0)
    a_large = np.where(small, 0.0, a)
    return np.where(small,
                    np.log1p(sample_rate * np.expm1(a_small)),
                    a_large + log_q + np.log1p((1 - sample_rate) / sample_rate * np.exp(-a_large)))


def _central_cumulants(values: np.ndarray, weights: np.ndarray) -> tuple[float, float, float, float, float]:
    w = weights / weights.sum()  # renormalise: removes the quadrature's (tiny) mass error
    m1 = float(np.dot(w, values))
    d = values - m1
    d2 = d * d
    m2 = float(np.dot(w, d2))
    m3 = float(np.dot(w, d2 * d))
    m4 = float(np.dot(w, d2 * d2))
    m5 = float(np.dot(w, d2 * d2 * d))
    return (m1, m2, m3, m4 - 3 * m2 * m2, m5 - 10 * m3 * m2)


@lru_cache(maxsize=4096)
def cumulants(noise_multiplier: float, sample_rate: float) -> Cumulants:
    """Per-step cumulants of ℓ under P and Q for noise multiplier σ and sampling rate q (cached)."""
    mu = 1.0 / noise_multiplier
    if sample_rate == 1.0:  # exact Gaussian loss: N(−μ²/2, μ²) under P, N(μ²/2, μ²) under Q
        return Cumulants(p=(-mu * mu / 2, mu * mu, 0.0, 0.0, 0.0), q=(mu * mu / 2, mu * mu, 0.0, 0.0, 0.0))
    # ℓ^k·φ peaks near kμ while q·e^(kμx) << 1, i.e. not beyond the knee x0 where ℓ turns linear
    knee = (mu * mu / 2 + math.log((1 - sample_rate) / sample_rate)) / mu
    upper = max(mu, min(6 * mu, knee)) + _TAIL
    lower = -_TAIL
    h = min(0.25, 0.3 / mu)
    n = int(min(math.ceil((upper - lower) / h), tuning.EDGEWORTH_MAX_QUADRATURE_POINTS)) + 1
    x = np.linspace(lower, upper, n)
    loss = privacy_loss(x, mu, sample_rate)
    log_p = -0.5 * x * x - _LOG_SQRT_2PI
    # dQ = (1 − q)φ(x) + qφ(x − μ), summed in log space
    log_q = np.logaddexp(math.log1p(-sample_rate) + log_p,
                         math.log(sample_rate) - 0.5 * (x - mu) ** 2 - _LOG_SQRT_2PI)
    kp = _central_cumulants(loss, np.exp(log_p))
    kq = _central_cumulants(loss, np.exp(log_q))
    if not all(math.isfinite(v) for v in kp + kq):  # cannot happen with the clipped terms above; never silent
        raise RuntimeError(f"Edgeworth cumulants are not finite for σ={noise_multiplier}, q={sample_rate}")
    return Cumulants(p=kp, q=kq)


def ledger_cumulants(ledger: Ledger) -> tuple[np.ndarray, np.ndarray]:
    """Cumulants K_1..K_5 of the total loss Σℓ under P and Q: per-step cumulants times steps, summed over
    entries."""
    kp, kq = np.zeros(5), np.zeros(5)
    for e in ledger.entries:
        c = cumulants(e.noise_multiplier, e.sample_rate)
        kp += e.steps * np.asarray(c.p)
        kq += e.steps * np.asarray(c.q)
    return kp, kq


def _hermite(z: np.ndarray) -> dict[int, np.ndarray]:
    z2 = z * z
    return {2: z2 - 1, 3: z * (z2 - 3), 4: z2 * (z2 - 6) + 3, 5: z * (z2 * (z2 - 10) + 15),
            6: z2 * (z2 * (z2 - 15) + 45) - 15, 8: z2 * (z2 * (z2 * (z2 - 28) + 210) - 420) + 105}


def _log_survival_terms(eps: np.ndarray, k: np.ndarray,
                         order: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """S(ε) = exp(A) + c·exp(B): A = log(1 − Φ(z)), B = log φ(z); returns (A, B, c).

    A zero variance (a point mass at K_1: e.g. the loss under P when σ is so small that q·exp(μx − μ²/2)
    underflows for every x with mass) gives the exact step function S(ε) = 1[ε < K_1].
    """
    if not k[1] > 0:
        return np.where(eps < k[0], 0.0, -np.inf), np.full_like(eps, -np.inf), np.zeros_like(eps)
    sd = math.sqrt(k[1])
    z = (eps - k[0]) / sd
    g3, g4, g5 = k[2] / sd ** 3, k[3] / sd ** 4, k[4] / sd ** 5
    he = _hermite(z)
    c = g3 / 6 * he[2]
    if order >= 2:
        c = c + g4 / 24 * he[3] + g3 * g3 / 72 * he[5]
    if order >= 3:
        c = c + g5 / 120 * he[4] + g3 * g4 / 144 * he[6] + g3 ** 3 / 1296 * he[8]
    from scipy import special

    return special.log_ndtr(-z), -0.5 * z * z - _LOG_SQRT_2PI, c


def _exp(log_value: np.ndarray, coef: np.ndarray | float = 1.0) -> np.ndarray:
    """coef·exp(log_value) with the exponent (including log|coef|) clipped: finite whatever the inputs."""
    with np.errstate(divide="ignore"):
        return np.sign(coef) * np.exp(np.minimum(log_value + np.log(np.abs(coef)), _MAX_EXP))


def _hockey_stick(eps: np.ndarray, k_num: np.ndarray, k_den: np.ndarray, order: int) -> np.ndarray:
    """S_num(ε) − e^ε S_den(ε), with e^ε folded into the exponents."""
    a1, b1, c1 = _log_survival_terms(eps, k_num, order)
    a2, b2, c2 = _log_survival_terms(eps, k_den, order)
    return _exp(a1) + _exp(b1, c1) - _exp(eps + a2) - _exp(eps + b2, c2)


def edgeworth_delta(eps: np.ndarray | float, kp: np.ndarray, kq: np.ndarray, order: int,
                    orderings: str = "both") -> np.ndarray:
    """Estimated δ(ε) = max(δ_remove(ε), δ_add(ε)) for total-loss cumulants ``kp`` (under P), ``kq`` (under
    Q); ``orderings="remove"`` keeps only the remove ordering (the EW-Tune paper's accountant)."""
    eps = np.asarray(eps, dtype=float)
    remove = _hockey_stick(eps, kq, kp, order)
    if orderings == "remove":
        return remove
    flip = np.array([-1.0, 1.0, -1.0, 1.0, -1.0])  # cumulants of −L
    return np.maximum(remove, _hockey_stick(eps, flip * kp, flip * kq, order))


def edgeworth_epsilon(kp: np.ndarray, kq: np.ndarray, delta: float, order: int,
                      orderings: str = "both") -> float:
    """Largest ε >= 0 with estimated δ(ε) = ``delta`` (0 when δ(0) <= delta).

    Raises ConfigError when the expansion's δ(ε) has no root (cumulants far outside its range of validity).
    """
    def f(e):
        return edgeworth_delta(e, kp, kq, order, orderings) - delta

    sd_q, sd_p = math.sqrt(max(kq[1], 0.0)), math.sqrt(max(kp[1], 0.0))
    upper = max(kq[0] + 40 * sd_q, -kp[0] + 40 * sd_p, 1.0)
    for _ in range(8):
        grid = np.concatenate([np.linspace(0.0, upper, 513), kq[0] + sd_q * np.linspace(-40, 40, 801),
                               -kp[0] + sd_p * np.linspace(-40, 40, 801), [kq[0], -kp[0]]])
        grid = np.unique(grid[(grid >= 0) & (grid <= upper)])
        values = f(grid)
        if np.isnan(values).any():
            raise RuntimeError("Edgeworth δ(ε) is NaN; this is a bug")
        above = np.flatnonzero(values > 0)
        if above.size == 0:
            return 0.0
        i = int(above[-1])
        if i + 1 < grid.size:
            break
        upper *= 2
    else:
        raise ConfigError(fmt("ledger", "within the range of the Edgeworth expansion",
                              f"δ(ε) > {delta:g} up to ε = {upper:.3g}",
                              "The loss is far from normal; use a certified accountant (pld)."))
    from scipy import optimize

    root, info = optimize.brentq(lambda e: float(f(e)), grid[i], grid[i + 1], xtol=tuning.EDGEWORTH_ROOT_XTOL,
                                 full_output=True, disp=False)
    if not info.converged:
        raise RuntimeError(f"Edgeworth root finding did not converge ({info.flag}) for δ={delta}")
    return max(0.0, float(root))


def skewness(kp: np.ndarray, kq: np.ndarray) -> float:
    """max |γ3| of the total loss under P and Q: the expansion's small parameter (unreliable when it nears
    1)."""
    return max(abs(k[2]) / k[1] ** 1.5 if k[1] > 0 else math.inf for k in (kp, kq))


@ACCOUNTANTS.register("edgeworth")
class EdgeworthAccountant(Accountant):
    """Estimate (not certified). ``order``: 1, 2 or 3 (default :data:`tuning.EDGEWORTH_DEFAULT_ORDER`, the
    EW-Tune accountant). Every result carries ``certified_epsilon``, the PLD ε of the same ledger."""

    name = "edgeworth"
    certified = False

    def __init__(self, *, order: int = tuning.EDGEWORTH_DEFAULT_ORDER, orderings: str = "both",
                 certifier: str = "pld"):
        if order not in ORDERS:
            raise ConfigError(fmt("order", "1, 2 or 3", order, "Use --order 1 (EW-Tune), 2 or 3."))
        if orderings not in ("both", "remove"):
            raise ConfigError(fmt("orderings", "'both' or 'remove' (the EW-Tune paper's)", orderings))
        self.order = int(order)
        self.orderings = orderings
        self.certifier = get_accountant(certifier)
        if not self.certifier.certified:
            raise ConfigError(fmt("certifier", "a certified accountant", certifier))

    def prepare(self) -> None:
        from scipy import optimize, special  # noqa: F401

        self.certifier.prepare()

    def estimate(self, ledger: Ledger, *, delta: float) -> float:
        """The Edgeworth ε estimate alone (no certified companion): what calibration searches on."""
        delta = check_delta(delta)
        self._check(ledger)
        if ledger.is_empty:
            return 0.0
        kp, kq = ledger_cumulants(ledger)
        return edgeworth_epsilon(kp, kq, delta, self.order, self.orderings)

    def _epsilon(self, ledger: Ledger, delta: float) -> dict[str, Any]:
        kp, kq = ledger_cumulants(ledger)
        cert = self.certifier.epsilon(ledger, delta=delta)
        out = {"epsilon": edgeworth_epsilon(kp, kq, delta, self.order, self.orderings), "order": self.order,
               "certified_epsilon": cert.epsilon, "certified_by": self.certifier.name,
               "orderings": self.orderings, "skewness": skewness(kp, kq)}
        if cert.details.get("capped_by"):  # the certifier's own value was above RDP's (extreme step counts)
            out["certified_capped_by"] = cert.details["capped_by"]
        return out

    def _delta(self, ledger: Ledger, epsilon: float) -> float:
        kp, kq = ledger_cumulants(ledger)
        return float(edgeworth_delta(epsilon, kp, kq, self.order, self.orderings))

    def __repr__(self) -> str:
        return f"EdgeworthAccountant(order={self.order}, orderings={self.orderings!r})"
