"""Privacy-random-variable accountant (certified upper bound): Gopi, Lee & Wutschitz (2021), "Numerical
composition of differential privacy", through Opacus' implementation of it.

The PRV of one step is Y = log(dQ/dP)(X), X ~ Q, for P = N(0, σ²), Q = (1 − q)N(0, σ²) + qN(1, σ²) (Gopi et
al., Prop. B.1/B.4 give its density and CDF). The PRV of a composition is the sum of the per-step PRVs; its
discretised density is composed by FFT on a grid whose mesh and truncation are chosen from ``eps_error`` and
``delta_error`` (Gopi et al., Thm. 5.5 and Remark 5.6). The accountant returns three numbers: a lower bound,
an estimate and an upper bound, ε_upper = ε_estimate(δ − delta_error) + eps_error. Only ε_upper is certified
and only it is returned as ``epsilon``; the other two are in ``details`` (``epsilon_lower``,
``epsilon_estimate``). When the grid would exceed ``tuning.PRV_MAX_GRID_POINTS`` (σ far below 0.1, or 10⁵ and
more steps), eps_error is raised until it fits; the value used is reported. The grid is widened to a size
whose FFT is fast.

Range. The implementation evaluates e^t·Σ_{s>=t} p_s·e^(−s) on the loss grid [−L, L]; past ~700 nats that
overflows and the ε it returns is garbage (inf at 10⁷ steps of σ 1, q 0.01; 72.8 at 10⁸, where RDP gives
10,036). Ledgers with L > ``tuning.PRV_MAX_LOSS`` are refused up front, naming the largest step count
accepted; like PLD, the FFT power's round-off is charged to δ (:func:`roundoff`), and results are capped by
RDP (:mod:`privtune.accounting.base`).

Why Opacus' implementation rather than the authors' ``prv-accountant`` package (same algorithm, same lineage):
on a grid of σ in [0.5, 2], q in [0.01, 0.5], 10 to 2000 steps, the package's discretisation check fails
("Discrete mean differs from continuous mean") for σ 0.5–0.6 at q 0.1, and for σ 0.6, q 0.1, 200 steps it
returns an estimate 0.077 above the exact ε — outside its own ±eps_error bounds — where Opacus' version (which
integrates the truncated mean piecewise on a log grid) agrees with PLD to 1e-3. It is also 3–6× faster here
(0.2 s instead of 1.2 s for σ 1.5, q 0.04, 2250 steps). Its cost: importing Opacus imports torch (~3 s, once
per process); only this accountant does.
The package stays in the tests as an independent cross-check where it works.

Ordering. The PRV is that of the "remove" ordering (Q‖P, Q the mixture). For the Poisson-subsampled Gaussian
this ordering dominates the reverse one at every ε >= 0 (Mironov, Talwar & Zhang 2019 show it for Rényi
divergences; our tests check it for the hockey-stick divergence against dp-accounting's PLD of both
orderings).
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from typing import Any

import numpy as np

from privtune.accounting import tuning
from privtune.accounting.base import ACCOUNTANTS, Accountant, AccountingRangeError
from privtune.accounting.ledger import Ledger
from privtune.errors import ConfigError, fmt


@lru_cache(maxsize=256)
def _rdp_per_step(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    from opacus.accountants.analysis import rdp as analysis
    from opacus.accountants.rdp import RDPAccountant

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(analysis.compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1,
                                               orders=RDPAccountant.DEFAULT_ALPHAS), dtype=float)


def _half_width(key: tuple[tuple[float, float, int], ...], eps_error: float, delta_error: float) -> float:
    """Half-width L of the loss domain [−L, L]: Opacus' ``compute_safe_domain_size`` (Gopi et al. Remark 5.6,
    from RDP), with the per-step RDP cached so that it costs microseconds at any step count."""
    from opacus.accountants.analysis import rdp as analysis
    from opacus.accountants.rdp import RDPAccountant

    def rdp_epsilon(rdp: np.ndarray, delta: float) -> float:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            eps, _ = analysis.get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta)
            return float(eps)

    total = sum(n for _, _, n in key)
    width = rdp_epsilon(sum(n * _rdp_per_step(s, q) for s, q, n in key), delta_error / 4)
    for s, q, _ in key:
        width = max(width, rdp_epsilon(_rdp_per_step(s, q), delta_error / (8 * total)))
    return max(width, eps_error) + 3


def _fast_domain(half_width: float, mesh: float):
    """Opacus' ``Domain.create_aligned(−L, L, mesh)`` (t_min = −c·mesh, t_max = (c + 1)·mesh, 2c + 2 points,
    the layout its FFT composition assumes), widened so that the number of points has only small prime
    factors: the aligned size is often 2 × a large prime, where the FFT takes 20–40 s instead of about one."""
    from opacus.accountants.analysis.prv import Domain
    from scipy import fft

    c = int(math.ceil(half_width / mesh - 1e-9))
    size = 2 * fft.next_fast_len(c + 1, real=True)
    c = size // 2 - 1
    return Domain(t_min=-c * mesh, t_max=(c + 1) * mesh, size=size)


@lru_cache(maxsize=8)
def _composed_prv(key: tuple[tuple[float, float, int], ...], eps_error: float, delta_error: float):
    """The composed discrete PRV and the eps_error actually used (raised if the grid would not fit)."""
    from opacus.accountants.analysis.prv import (PoissonSubsampledGaussianPRV, TruncatedPrivacyRandomVariable,
                                                 compose_heterogeneous, discretize)

    half_width = _half_width(key, eps_error, delta_error)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # log(1 - q) at q = 1; RDP's "optimal order is the largest alpha"
        prvs = [PoissonSubsampledGaussianPRV(q, sigma) for sigma, q, _ in key]
        counts = [steps for _, _, steps in key]
        root = math.sqrt(sum(counts) * math.log(12 / delta_error) / 2)
        # mesh = eps_error / root (Gopi et al. Thm. 5.5); a grid of 2·half_width/mesh points must fit
        eps_error = max(eps_error, 2 * half_width * root / tuning.PRV_MAX_GRID_POINTS)
        domain = _fast_domain(half_width, eps_error / root)
        truncated = [TruncatedPrivacyRandomVariable(p, domain.t_min, domain.t_max) for p in prvs]
        composed = compose_heterogeneous(dprvs=[discretize(t, domain) for t in truncated],
                                         num_self_compositions=counts)
        return composed, eps_error


def roundoff(dprv, epsilon: float) -> float:
    """Estimated error in δ(``epsilon``) from the FFT composition's round-off: the largest negative
    probability (the noise amplitude, spread evenly over the grid by the inverse transform) times the number
    of grid points with loss above ε (those δ(ε) sums, with weights <= 1). See
    :func:`privtune.accounting.pld.roundoff`."""
    low = float(np.min(dprv.pmf))
    if low >= 0 or not math.isfinite(epsilon):
        return 0.0
    return -low * int(np.count_nonzero(dprv.domain.ts > epsilon))


def _max_steps_in_range(sigma: float, q: float, eps_error: float, delta_error: float) -> int:
    """Largest step count at (σ, q) whose loss domain stays within PRV_MAX_LOSS (bisection; RDP is cheap)."""
    lo, hi = 0, 1
    while _half_width(((sigma, q, hi),), eps_error, delta_error) <= tuning.PRV_MAX_LOSS:
        lo, hi = hi, hi * 2
        if hi > 2 ** 40:
            return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _half_width(((sigma, q, mid),), eps_error, delta_error) <= tuning.PRV_MAX_LOSS \
            else (lo, mid)
    return lo


@ACCOUNTANTS.register("prv")
class PRVAccountant(Accountant):
    """Certified (its upper bound). ``eps_error``: additive ε slack of the bound (default
    :data:`tuning.PRV_EPS_ERROR`); ``delta_error_fraction``: δ slack as a fraction of δ."""

    name = "prv"
    certified = True
    rdp_cross_check = True

    def __init__(self, *, eps_error: float = tuning.PRV_EPS_ERROR,
                 delta_error_fraction: float = tuning.PRV_DELTA_ERROR_FRACTION):
        if not (isinstance(eps_error, (int, float)) and 0 < eps_error < 1):
            raise ConfigError(fmt("eps_error", "in (0, 1)", eps_error))
        if not (isinstance(delta_error_fraction, (int, float)) and 0 < delta_error_fraction < 1):
            raise ConfigError(fmt("delta_error_fraction", "in (0, 1)", delta_error_fraction))
        self.eps_error = float(eps_error)
        self.delta_error_fraction = float(delta_error_fraction)

    def prepare(self) -> None:
        import opacus.accountants.analysis.prv  # noqa: F401  (imports torch: ~3 s)

    def _composed(self, ledger: Ledger, delta_error: float):
        self._check_range(ledger, delta_error)
        try:
            return _composed_prv(ledger.key, self.eps_error, delta_error)
        except RuntimeError as e:  # the implementation's own consistency check of the discretisation
            raise ConfigError(fmt("eps_error", "coarse enough for the PRV discretisation of this ledger",
                                  self.eps_error,
                                  f"({e}) Use a larger eps_error or the pld accountant.")) from None

    def _check_range(self, ledger: Ledger, delta_error: float) -> None:
        """Refuse a ledger whose loss domain exceeds PRV_MAX_LOSS: beyond ~700 nats the implementation's
        e^t·Σ p·e^(−t) overflows and its ε is garbage (inf at 10⁷ steps of σ 1, q 0.01; 72.8 at 10⁸)."""
        width = _half_width(ledger.key, self.eps_error, delta_error)
        if width <= tuning.PRV_MAX_LOSS:
            return
        if len(ledger.entries) == 1:
            e = ledger.entries[0]
            n = _max_steps_in_range(e.noise_multiplier, e.sample_rate, self.eps_error, delta_error)
            what = (f"<= {n:,} for the prv accountant at noise_multiplier {e.noise_multiplier:g}, "
                    f"sample_rate {e.sample_rate:g} and this delta (its loss grid must stay within "
                    f"{tuning.PRV_MAX_LOSS:g} nats; here it needs {width:.4g})")
        else:
            what = (f"few enough for the prv accountant (its loss grid must stay within "
                    f"{tuning.PRV_MAX_LOSS:g} nats; this ledger needs {width:.4g})")
        raise AccountingRangeError(fmt("steps", what, ledger.steps,
                                       "Use --accountant pld, or rdp (certified at any step count)."))

    def _epsilon(self, ledger: Ledger, delta: float) -> dict[str, Any]:
        delta_error = self.delta_error_fraction * delta
        dprv, eps_error = self._composed(ledger, delta_error)
        try:
            err = roundoff(dprv, float(dprv.compute_epsilon(delta, delta_error, eps_error)[1]))
        except (ValueError, RuntimeError):
            err = 0.0  # handled with the final computation below
        if err >= delta / 2:
            raise AccountingRangeError(fmt(
                "steps", f"few enough for the prv accountant to resolve delta {delta:g} (the FFT "
                f"composition's round-off, about {err:.2g}, must stay below delta/2)", ledger.steps,
                "Use --accountant pld or rdp, or a larger delta."))
        try:
            lower, estimate, upper = dprv.compute_epsilon(delta - err, delta_error, eps_error)
        except ValueError:
            raise ConfigError(fmt("delta", "large enough for the PRV grid's floating-point accuracy", delta,
                                  "Use the pld accountant for such a small delta.")) from None
        except RuntimeError:  # δ(ε) < δ already at the bottom of the grid: the loss is essentially never > 0
            lower, estimate, upper = 0.0, 0.0, eps_error
        out = {"epsilon": max(0.0, float(upper)), "epsilon_estimate": max(0.0, float(estimate)),
               "epsilon_lower": max(0.0, float(lower)), "eps_error": eps_error}
        if err > 0:
            out["roundoff_delta"] = err
        return out

    def _delta(self, ledger: Ledger, epsilon: float) -> float:
        # δ_upper(ε) = δ_estimate(ε − eps_error) + delta_error (Gopi et al. Thm. 5.5); δ is not known in
        # advance, so the δ slack is absolute and tiny.
        delta_error = 1e-12
        dprv, eps_error = self._composed(ledger, delta_error)
        estimate = float(dprv.compute_delta_estimate(epsilon - eps_error))
        return estimate + delta_error + roundoff(dprv, epsilon - eps_error)
