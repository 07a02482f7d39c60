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

Extreme step counts. n self-compositions are one FFT raised to the n-th power, so the cost need not grow with
n. Two things in dp-accounting's ``self_compose`` make it grow: it picks the sparse or dense path by computing
``size ** n`` as an exact Python integer (minutes at 10⁸ steps, inside one C call that Ctrl-C cannot
interrupt), and its Chernoff truncation is far too wide for large n (:func:`_self_compose`). Both are avoided
here; with the grid bounded by :func:`privtune.accounting.tuning.pld_discretization`, any step count up to 10⁹
takes about a second. Raising the transform to the n-th power also multiplies its floating-point round-off by
about n, which shows as negative probabilities in the composed PMF; :func:`roundoff` turns them into an
estimate of the error in δ(ε), ε is computed at δ minus that estimate (so it stays an upper bound), and a
ledger whose round-off reaches δ/2 is refused (:class:`~privtune.accounting.base.AccountingRangeError`, as is
one that needs a grid coarser than ``tuning.PLD_MAX_COARSE_DISCRETIZATION``). At σ 1, q 0.01 the estimate
stays below 1e-7 up to 10⁹ steps at δ 1e-5; at δ 1e-10 the accountant refuses from about 10⁵ steps.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

from privtune.accounting import tuning
from privtune.accounting.base import ACCOUNTANTS, Accountant, AccountingRangeError
from privtune.accounting.ledger import Ledger
from privtune.errors import ConfigError, fmt

_MAX_SPARSE_SIZE = 1000  # dp-accounting's _MAX_PMF_SPARSE_SIZE: below it a composition stays sparse (exact)
_TAIL_MASS = 1e-15       # dp-accounting's default tail mass truncated (to +∞) in a self-composition


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
    if steps == 1:
        return one
    if steps * math.log(max(_pmf_size(one), 2)) <= math.log(_MAX_SPARSE_SIZE):
        return one.self_compose(steps)  # small: dp-accounting composes the sparse PMFs exactly
    from dp_accounting.pld import privacy_loss_distribution as pld

    return pld.PrivacyLossDistribution(*[_self_compose(pmf.to_dense_pmf(), steps) for pmf in _pmfs(one)])


def _self_compose(pmf, n: int, tail_mass_truncation: float = _TAIL_MASS):
    """``DensePLDPmf.self_compose`` (dp-accounting 0.6) with Chernoff orders chosen for ``n``.

    The composed PMF is one FFT raised to the n-th power, on a grid cut where a Chernoff bound puts at most
    ``tail_mass_truncation`` outside (moved to +∞: still pessimistic). dp-accounting tries the orders
    ±k/len(pmf), k = 1..20, whose best is far from the optimal order t* = sqrt(2·log(2/τ)/(n·var)) once n is
    large, so its grid is about sqrt(n)·sd/len(pmf) times wider than needed (8.2 million points instead of
    about 50,000 at σ 0.3, q 0.5, 10⁸ steps: a minute instead of a second). Adding orders around t* only
    tightens the bound — a Chernoff bound holds at every order. Real FFTs halve the work; the arithmetic is
    otherwise the library's.
    """
    from dp_accounting.pld import common, pld_pmf
    from scipy import fft

    probs = np.asarray(pmf._probs, dtype=float)  # no public accessor
    grid = np.arange(probs.size)
    mean = float(np.dot(grid, probs) / probs.sum())
    var = float(np.dot((grid - mean) ** 2, probs) / probs.sum())
    orders = np.concatenate((np.arange(-20, 0), np.arange(1, 21))) / probs.size  # dp-accounting's
    if var > 0:
        best = math.sqrt(2 * math.log(2 / tail_mass_truncation) / (n * var))
        around = best * 2.0 ** np.arange(-4, 5)
        orders = np.concatenate((orders, around, -around))
    lower, upper = common.compute_self_convolve_bounds(probs, n, tail_mass_truncation, orders=list(orders))
    size = upper - lower + 1
    fast = fft.next_fast_len(max(size, probs.size), real=True)
    composed = np.roll(fft.irfft(fft.rfft(probs, fast) ** n, fast), -lower)[:size]
    infinity_mass = tail_mass_truncation - math.expm1(n * math.log1p(-pmf._infinity_mass))
    return pld_pmf.DensePLDPmf(pmf._discretization, pmf._lower_loss * n + lower, composed, infinity_mass,
                               pmf._pessimistic_estimate)


def _pmfs(p) -> list:
    return [p._pmf_remove] if p._symmetric else [p._pmf_remove, p._pmf_add]  # no public accessor


def _pmf_size(p) -> int:
    return max(pmf.size for pmf in _pmfs(p))


def roundoff(p, epsilon: float) -> float:
    """Estimated error in δ(``epsilon``) from the floating-point round-off of the FFT composition.

    The inverse transform spreads the round-off evenly over the grid, where it shows as negative probabilities
    wherever the true ones are smaller; the largest of them is taken as the noise amplitude, and δ(ε) sums
    (with weights <= 1) the grid points whose loss exceeds ε. So: amplitude × number of those points, the
    worse of the two orderings. 0 for PMFs without negative entries (e.g. exact sparse ones)."""
    worst = 0.0
    for pmf in _pmfs(p):
        probs = getattr(pmf, "_probs", None)  # dense PMFs only; no public accessor
        if probs is None or not len(probs) or float(np.min(probs)) >= 0:
            continue
        if not math.isfinite(epsilon):
            continue
        first = pmf._lower_loss * pmf._discretization
        at_or_below = math.floor((epsilon - first) / pmf._discretization) + 1
        above = len(probs) - max(0, min(len(probs), at_or_below))
        worst = max(worst, -float(np.min(probs)) * above)
    return worst


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
    rdp_cross_check = True

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
        """The composed ``dp_accounting`` PrivacyLossDistribution of the whole ledger (cached).

        Refuses a ledger whose grid would be coarser than ``tuning.PLD_MAX_COARSE_DISCRETIZATION`` nats (ε in
        the hundreds of thousands, where dp-accounting's one-step construction overflows)."""
        d = self.discretization_for(ledger)
        if d > tuning.PLD_MAX_COARSE_DISCRETIZATION:
            raise AccountingRangeError(fmt(
                "steps", f"few enough for the pld accountant's grid (spacing <= "
                f"{tuning.PLD_MAX_COARSE_DISCRETIZATION:g} nats within {tuning.PLD_MAX_GRID_POINTS:,} "
                f"points; this ledger needs {d:g})", ledger.steps,
                "Use --accountant rdp (certified at any step count)."))
        try:
            return _ledger_pld(ledger.key, d)
        except (OverflowError, FloatingPointError) as e:  # never silent, never a traceback
            raise AccountingRangeError(fmt("steps", "few enough for the pld accountant's floating-point "
                                           "range", ledger.steps, f"({e}) Use --accountant rdp.")) from None

    def prepare(self) -> None:
        from dp_accounting.pld import privacy_loss_distribution  # noqa: F401

    def _epsilon(self, ledger: Ledger, delta: float) -> dict[str, Any]:
        composed = self.pld(ledger)
        eps = float(composed.get_epsilon_for_delta(delta))
        err = roundoff(composed, eps)
        if err >= delta / 2:
            raise AccountingRangeError(fmt(
                "steps", f"few enough for the pld accountant to resolve delta {delta:g} (the FFT "
                f"composition's round-off, about {err:.2g}, must stay below delta/2)", ledger.steps,
                "Use --accountant rdp (certified at any step count) or a larger delta."))
        out: dict[str, Any] = {"epsilon": eps, "discretization": self.discretization_for(ledger)}
        if err > 0:  # ε at δ − err; err was taken at the smaller ε, so it is not underestimated
            out.update(epsilon=float(composed.get_epsilon_for_delta(delta - err)), roundoff_delta=err)
        return out

    def _delta(self, ledger: Ledger, epsilon: float) -> float:
        composed = self.pld(ledger)
        return float(composed.get_delta_for_epsilon(epsilon)) + roundoff(composed, epsilon)
