"""Noise calibration and the step budget, both by one bracketed search on a monotone function.

``calibrate_noise`` finds the smallest noise multiplier σ whose *certified* ε meets a target (ε, δ);
``max_steps`` finds the largest number of further steps whose certified ε stays within a target. Both call
:func:`search_threshold`, a bracketed Illinois (regula falsi) search in log-space that always keeps one
evaluated point on each side of the boundary and returns the *evaluated* point on the safe side, so the answer
is verified by construction: no σ is ever returned whose certified ε exceeds the target (compare
dp-accounting's ``calibrate_dp_mechanism``, which returns Brent's root and may land on either side).

With ``accountant="edgeworth"`` the Edgeworth σ (an estimate) is found first; the returned σ is the smallest
σ >= it whose PLD ε meets the target, and both are reported (the EW-Tune comparison, docs/accounting.md).

A ledger outside an accountant's numerical range (:class:`~privtune.accounting.base.AccountingRangeError`)
counts as *not certified* (ε = ∞) at that point: the searches move away from it, never return it, and report
the accountant's own one-line error when no point in the search range can be certified.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal

from privtune.accounting import analytic
from privtune.accounting.base import Accountant, AccountingRangeError, get_accountant
from privtune.accounting.events import (check_dataset_size, check_delta, check_epsilon,
                                        check_noise_multiplier, check_sample_rate, check_steps, warn_delta)
from privtune.accounting.ledger import Ledger
from privtune.errors import BudgetError, ConfigError, fmt

SIGMA_MIN = 0.1      # below this, one step already costs tens of ε; PLD grids become huge
SIGMA_MAX = 1.0e4
STEPS_LIMIT = 10 ** 9
CERTIFIER = "pld"    # the certified accountant behind estimates (Edgeworth)


@dataclass(frozen=True)
class SearchResult:
    x: float                # the safe point: value(x) <= target (evaluated)
    value: float            # value(x)
    evaluations: int
    at_limit: bool          # the safe region reaches the search limit (the boundary lies beyond it)


def search_threshold(value: Callable[[float], float], *, target: float, start: float,
                     safe_side: Literal["high", "low"], limits: tuple[float, float], integer: bool = False,
                     xtol: float = 1e-4, ytol: float = 1e-4,
                     max_evaluations: int = 100) -> SearchResult | None:
    """Locate the boundary of {x : value(x) <= target} for a monotone ``value`` and return its evaluated safe
    end.

    ``safe_side="high"``: ``value`` decreases in x (ε against σ); ``"low"``: it increases (ε against steps).
    The bracket is found by geometric steps (factor 1.25, then squared each time) from ``start`` inside
    ``limits``; it is then narrowed by the Illinois method on (log x, value − target) until the two ends are
    within a factor 1 + ``xtol`` (adjacent when ``integer``) or the safe value is within ``ytol``·target of
    the target. ``value`` may be ∞ (a ledger the accountant cannot certify): unsafe, and the search bisects
    (in log x) next to it instead of interpolating. Returns None when no point in ``limits`` is safe; raises
    RuntimeError if the search does not converge in ``max_evaluations``.
    """
    lo, hi = limits
    cache: dict[float, float] = {}

    def f(x: float) -> float:
        if x not in cache:
            if len(cache) >= max_evaluations:
                raise RuntimeError(f"threshold search did not converge in {max_evaluations} evaluations "
                                   f"(bracket {sorted(cache)[:1]}..{sorted(cache)[-1:]}, target {target})")
            cache[x] = float(value(x))
        return cache[x] - target

    def clamp(x: float) -> float:
        x = min(max(x, lo), hi)
        return float(round(x)) if integer else x

    factor = [1.25]  # the start is usually good: widen gently, then faster (1.25, 1.56, 2.44, 5.96, ...)

    def step(x: float, toward_safe: bool) -> float:
        up = toward_safe == (safe_side == "high")
        k, factor[0] = factor[0], factor[0] ** 2
        nx = clamp(x * k if up else x / k)
        if integer and nx == x:
            nx = clamp(x + 1 if up else x - 1)
        return nx

    x = clamp(start)
    fx = f(x)
    if fx <= 0:
        safe, unsafe = (x, fx), None
        while unsafe is None:
            nx = step(safe[0], toward_safe=False)
            if nx == safe[0]:
                return SearchResult(safe[0], safe[1] + target, len(cache), at_limit=True)
            fn = f(nx)
            if fn <= 0:
                safe = (nx, fn)
            else:
                unsafe = (nx, fn)
    else:
        safe, unsafe = None, (x, fx)
        while safe is None:
            nx = step(unsafe[0], toward_safe=True)
            if nx == unsafe[0]:
                return None
            fn = f(nx)
            if fn <= 0:
                safe = (nx, fn)
            else:
                unsafe = (nx, fn)

    # Illinois iteration: (a, fa) is the end kept from before, (b, fb) the newest point.
    (a, fa), (b, fb) = unsafe, safe
    while True:
        xs, xu = (a, b) if fa <= 0 else (b, a)
        fs = fa if fa <= 0 else fb
        gap_done = abs(xu - xs) <= 1 if integer else abs(math.log(xu / xs)) <= math.log1p(xtol)
        if gap_done or -fs <= ytol * abs(target):
            return SearchResult(xs, fs + target, len(cache), at_limit=False)
        ua, ub = math.log(a), math.log(b)
        secant = fb != fa and math.isfinite(fa) and math.isfinite(fb)  # ∞: a point the accountant refused
        uc = ub - fb * (ub - ua) / (fb - fa) if secant else (ua + ub) / 2
        c = math.exp(uc)
        lo_ab, hi_ab = min(a, b), max(a, b)
        if integer:  # a prediction that rounds onto an end tests that end's neighbour: usually the answer
            c = min(max(float(round(c)), lo_ab + 1), hi_ab - 1)
        elif not lo_ab < c < hi_ab:
            c = math.sqrt(lo_ab * hi_ab)
        fc = f(c)
        if (fc <= 0) != (fb <= 0):
            a, fa = b, fb
        else:
            fa = fa / 2  # Illinois: halve the stale end's weight so the next step moves it
        b, fb = c, fc


@dataclass(frozen=True)
class CalibrationResult:
    """The noise multiplier for a target (ε, δ) and what it certifies.

    ``epsilon`` is the certified ε at ``noise_multiplier`` (<= ``target_epsilon``), from ``certified_by``.
    With the Edgeworth accountant, ``edgeworth_noise_multiplier`` is the σ at which the Edgeworth *estimate*
    equals the target, ``certified_epsilon_at_edgeworth_noise`` the certified ε of that σ, and
    ``edgeworth_epsilon`` the estimate at the returned σ.
    """

    noise_multiplier: float
    epsilon: float
    delta: float
    sample_rate: float
    steps: int
    accountant: str
    certified_by: str
    target_epsilon: float
    prior_steps: int = 0
    evaluations: int = 0
    time_s: float = 0.0
    edgeworth_noise_multiplier: float | None = None
    edgeworth_epsilon: float | None = None
    certified_epsilon_at_edgeworth_noise: float | None = None
    order: int | None = None
    orderings: str | None = None

    certified = True  # the returned σ's ε always comes from an upper bound

    def to_dict(self) -> dict[str, Any]:
        out = {"accountant": self.accountant, "noise_multiplier": self.noise_multiplier,
               "epsilon": self.epsilon, "delta": self.delta, "sample_rate": self.sample_rate,
               "steps": self.steps,
               "certified": self.certified, "certified_by": self.certified_by,
               "target_epsilon": self.target_epsilon, "prior_steps": self.prior_steps,
               "evaluations": self.evaluations, "time_s": self.time_s}
        if self.edgeworth_noise_multiplier is not None:
            out.update(edgeworth_noise_multiplier=self.edgeworth_noise_multiplier,
                       edgeworth_epsilon=self.edgeworth_epsilon,
                       certified_epsilon_at_edgeworth_noise=self.certified_epsilon_at_edgeworth_noise,
                       order=self.order, orderings=self.orderings)
        return out


def _resolve(accountant: str | Accountant) -> Accountant:
    return accountant if isinstance(accountant, Accountant) else get_accountant(accountant)


class _Certify:
    """ε of ledgers by a certified accountant, with ∞ (not certifiable) for ledgers outside its range; the
    last such error is kept so that a search that finds nothing can say why."""

    def __init__(self, accountant: Accountant, delta: float):
        self.accountant, self.delta, self.refused = accountant, delta, None

    def __call__(self, ledger: Ledger) -> float:
        try:
            return self.accountant.epsilon(ledger, delta=self.delta).epsilon
        except AccountingRangeError as e:
            self.refused = e
            return math.inf


def _sigma_guess(target_epsilon: float, delta: float, sample_rate: float, steps: int, prior: Ledger) -> float:
    """σ from the GDP central-limit approximation (Bu et al. 2020): a starting point only, never an answer."""
    mu2 = analytic.gaussian_mu(epsilon=target_epsilon, delta=delta) ** 2
    mu2 -= sum(analytic.clt_mu_squared(e.noise_multiplier, e.sample_rate, e.steps) for e in prior.entries)
    if mu2 <= 0:
        return SIGMA_MAX
    return min(max(analytic.clt_noise_multiplier(mu_squared_per_step=mu2 / steps, sample_rate=sample_rate),
                   SIGMA_MIN), SIGMA_MAX)


def calibrate_noise(*, target_epsilon: float, delta: float, sample_rate: float, steps: int,
                    accountant: str | Accountant = "pld", prior: Ledger | None = None,
                    dataset_size: int | None = None, rtol: float = 1e-4) -> CalibrationResult:
    """Smallest σ (to relative tolerance ``rtol``) such that ``prior`` + ``steps`` steps at (σ, q) are
    (target_epsilon, δ)-DP according to a certified accountant.

    Raises BudgetError when no σ <= SIGMA_MAX reaches the target (or the prior alone exceeds it).
    """
    start = time.perf_counter()
    target_epsilon = check_epsilon(target_epsilon, "target_epsilon")
    delta = check_delta(delta)
    sample_rate = check_sample_rate(sample_rate)
    steps = check_steps(steps)
    if dataset_size is not None:
        warn_delta(delta, check_dataset_size(dataset_size))
    if prior is not None and not isinstance(prior, Ledger):
        raise ConfigError(fmt("prior", "a Ledger or None", type(prior).__name__))
    prior = prior.copy() if prior is not None else Ledger()
    acc = _resolve(accountant)
    certifier = acc if acc.certified else getattr(acc, "certifier", None) or get_accountant(CERTIFIER)
    if not prior.is_empty:
        spent = certifier.epsilon(prior, delta=delta).epsilon
        if spent > target_epsilon:
            raise BudgetError(fmt("target_epsilon",
                                  f">= the ε already spent by the prior ledger ({spent:.4g})", target_epsilon,
                                  "Raise the budget or start a new run."))

    certify = _Certify(certifier, delta)

    def certified_eps(sigma: float) -> float:
        return certify(prior.extended(noise_multiplier=sigma, sample_rate=sample_rate, steps=steps))

    guess = _sigma_guess(target_epsilon, delta, sample_rate, steps, prior)
    extra: dict[str, Any] = {}
    lower = SIGMA_MIN
    evaluations = 0
    if not acc.certified:  # an estimate (Edgeworth): find its σ, then certify upwards from it
        estimate = getattr(acc, "estimate", None)
        if estimate is None:
            raise ConfigError(fmt("accountant", "certified or an estimate with .estimate()", acc.name))
        def estimated_eps(sigma: float) -> float:
            return estimate(prior.extended(noise_multiplier=sigma, sample_rate=sample_rate, steps=steps),
                            delta=delta)

        found = search_threshold(estimated_eps, target=target_epsilon, start=guess, safe_side="high",
                                 limits=(SIGMA_MIN, SIGMA_MAX), xtol=rtol)
        if found is None:
            _unreachable(target_epsilon, delta, certified_eps, certify)
        sigma_ew = found.x
        evaluations += found.evaluations
        lower = guess = sigma_ew
        extra = {"edgeworth_noise_multiplier": sigma_ew, "order": getattr(acc, "order", None),
                 "orderings": getattr(acc, "orderings", None)}
    found = search_threshold(certified_eps, target=target_epsilon, start=guess, safe_side="high",
                             limits=(lower, SIGMA_MAX), xtol=rtol)
    if found is None:
        _unreachable(target_epsilon, delta, certified_eps, certify)
    sigma = check_noise_multiplier(found.x)
    if found.at_limit and lower == SIGMA_MIN:
        raise BudgetError(fmt("target_epsilon", f"reachable only below noise_multiplier {SIGMA_MIN}",
                              target_epsilon,
                              "Such a budget gives no meaningful privacy; lower target_epsilon."))
    eps = found.value
    if eps > target_epsilon:  # cannot happen by construction; a guard, never a silent pass
        raise RuntimeError(f"calibration returned σ={sigma} with certified ε={eps} > {target_epsilon}")
    if extra:
        extra["certified_epsilon_at_edgeworth_noise"] = certified_eps(extra["edgeworth_noise_multiplier"])
        extra["edgeworth_epsilon"] = estimated_eps(sigma)
    return CalibrationResult(noise_multiplier=sigma, epsilon=eps, delta=delta, sample_rate=sample_rate,
                             steps=steps, accountant=acc.name, certified_by=certifier.name,
                             target_epsilon=target_epsilon,
                             prior_steps=prior.steps, evaluations=evaluations + found.evaluations,
                             time_s=time.perf_counter() - start, **extra)


def _unreachable(target_epsilon: float, delta: float, certified_eps: Callable[[float], float],
                 certify: _Certify) -> None:
    best = certified_eps(SIGMA_MAX)
    if not math.isfinite(best) and certify.refused is not None:
        raise certify.refused
    raise BudgetError(fmt("target_epsilon", f"reachable with noise_multiplier <= {SIGMA_MAX:g} "
                                            f"(its certified ε is {best:.4g} at δ={delta:g})", target_epsilon,
                          "Raise target_epsilon or delta, or lower sample_rate or steps."))


def max_steps(*, ledger: Ledger, noise_multiplier: float, sample_rate: float, target_epsilon: float,
              delta: float, accountant: str | Accountant = "pld", limit: int = STEPS_LIMIT) -> int:
    """Largest n >= 0 such that ``ledger`` + n steps at (σ, q) has certified ε <= ``target_epsilon``.

    The budget guard of training. An estimate accountant (Edgeworth) is replaced by its certifier (PLD): a
    guard must rest on an upper bound. ``limit`` caps the answer (returned when even ``limit`` steps fit).
    """
    noise_multiplier = check_noise_multiplier(noise_multiplier)
    sample_rate = check_sample_rate(sample_rate)
    target_epsilon = check_epsilon(target_epsilon, "target_epsilon")
    delta = check_delta(delta)
    if not isinstance(ledger, Ledger):
        raise ConfigError(fmt("ledger", "a Ledger", type(ledger).__name__))
    acc = _resolve(accountant)
    if not acc.certified:
        acc = get_accountant(CERTIFIER)
    certify = _Certify(acc, delta)  # steps it cannot certify are not allowed
    if not ledger.is_empty and certify(ledger) > target_epsilon:
        return 0

    def eps(n: float) -> float:
        return certify(ledger.extended(noise_multiplier=noise_multiplier, sample_rate=sample_rate,
                                       steps=int(n)))

    mu2 = analytic.gaussian_mu(epsilon=target_epsilon, delta=delta) ** 2
    mu2 -= sum(analytic.clt_mu_squared(e.noise_multiplier, e.sample_rate, e.steps) for e in ledger.entries)
    per_step = analytic.clt_mu_squared(noise_multiplier, sample_rate, 1)
    guess = min(max(1.0, math.floor(mu2 / per_step)) if mu2 > 0 and per_step > 0 else 1.0, float(limit))
    found = search_threshold(eps, target=target_epsilon, start=guess, safe_side="low", limits=(1, limit),
                             integer=True, ytol=0.0)
    return 0 if found is None else int(found.x)
