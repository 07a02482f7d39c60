"""Accountants at extreme step counts: a certified ε is an upper bound that never falls as steps rise, every
answer (or refusal) comes within seconds, and a refusal is one line naming the range and the accountant to use.

Before these fixes PRV printed ε = inf at 10⁷ steps of σ 1, q 0.01 and 72.8 at 10⁸ (RDP: 10,036), and PLD ran
for minutes (hours at 10⁹) in one uninterruptible big-integer power inside dp-accounting.
"""

from __future__ import annotations

import math
import time

import pytest

from privtune.accounting import Ledger, get_accountant, max_steps
from privtune.accounting.base import AccountingRangeError, _cap_epsilon
from privtune.accounting.calibrate import search_threshold
from privtune.accounting.rdp import RDPAccountant

SIGMA, RATE, DELTA = 1.0, 0.01, 1e-5
DECADES = [10 ** k for k in range(10)]            # 1 .. 10⁹ steps
PER_CALL_S = 30.0   # generous: the shared test machine is slow; the old code took minutes to hours here


def ledger(steps: int, sigma: float = SIGMA, q: float = RATE) -> Ledger:
    return Ledger.of(noise_multiplier=sigma, sample_rate=q, steps=steps)


@pytest.mark.parametrize("name", ["pld", "prv", "rdp"])
def test_certified_epsilon_never_falls_with_steps_up_to_1e9(name):
    acc, rdp = get_accountant(name), get_accountant("rdp")
    acc.prepare()
    answered, previous = [], 0.0
    for n in DECADES:
        start = time.perf_counter()
        try:
            eps = acc.epsilon(ledger(n), delta=DELTA).epsilon
        except AccountingRangeError as e:
            msg = str(e)
            assert "\n" not in msg and msg.startswith("`steps` must be") and "--accountant" in msg
            eps = None
        assert time.perf_counter() - start < PER_CALL_S, (name, n)
        if eps is not None:
            assert math.isfinite(eps) and eps >= previous, (name, n, eps, previous)
            assert eps <= rdp.epsilon(ledger(n), delta=DELTA).epsilon   # an upper bound never above RDP's
            previous = eps
            answered.append(n)
    assert answered[:7] == DECADES[:7]            # every accountant answers up to 10⁶ steps here
    if name != "prv":
        assert answered == DECADES


def test_prv_refuses_past_its_loss_grid_and_names_the_range():
    acc = get_accountant("prv")
    with pytest.raises(AccountingRangeError) as exc:
        acc.epsilon(ledger(10 ** 8), delta=DELTA)
    msg = str(exc.value)
    assert "`steps` must be <= 3,964,677 for the prv accountant at noise_multiplier 1, sample_rate 0.01" in msg
    assert "Found 100000000." in msg and "Use --accountant pld, or rdp" in msg
    limit = 3_964_677
    with pytest.raises(AccountingRangeError):                     # one step past the named range
        acc.epsilon(ledger(limit + 1), delta=DELTA)
    at_limit = acc.epsilon(ledger(limit), delta=DELTA)            # the named range itself is accepted
    assert math.isfinite(at_limit.epsilon) and at_limit.epsilon <= get_accountant("rdp").epsilon(
        ledger(limit), delta=DELTA).epsilon


def test_prv_half_width_is_opacus_safe_domain_size():
    from opacus.accountants.analysis.prv import PoissonSubsampledGaussianPRV, compute_safe_domain_size

    from privtune.accounting.prv import _half_width

    for key in [((1.0, 0.01, 1000),), ((0.7, 0.01, 120), (1.5, 0.04, 2250)), ((10.0, 1.0, 100),)]:
        ours = _half_width(key, 0.01, 1e-8)
        theirs = compute_safe_domain_size(prvs=[PoissonSubsampledGaussianPRV(q, s) for s, q, _ in key],
                                          max_self_compositions=[n for *_, n in key], eps_error=0.01,
                                          delta_error=1e-8)
        assert ours == pytest.approx(theirs, rel=1e-12)


def test_prv_domain_has_a_fast_fft_size():
    from privtune.accounting.prv import _fast_domain

    d = _fast_domain(36.8, 0.01 / 1020.0)   # the aligned size would be 7,507,060 = 2^2·5·375,353 (slow FFT)
    assert d.size % 2 == 0 and max(_prime_factors(d.size)) <= 11
    assert d.t_min <= -36.8 and d.t_max >= 36.8 and d.t_min == pytest.approx(-(d.size // 2 - 1) * d.dt)


def _prime_factors(n: int) -> list[int]:
    out, p = [], 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out + ([n] if n > 1 else [])


def test_pld_at_1e9_steps_is_fast_and_capped_by_rdp():
    r = get_accountant("pld").epsilon(ledger(10 ** 9), delta=DELTA)
    rdp = get_accountant("rdp").epsilon(ledger(10 ** 9), delta=DELTA).epsilon
    assert r.time_s < PER_CALL_S
    assert r.epsilon == rdp and r.details["capped_by"] == "rdp" and r.details["uncapped_epsilon"] > rdp
    assert r.to_dict()["capped_by"] == "rdp" and r.certified


def test_pld_self_compose_matches_dp_accounting():
    from privtune.accounting import tuning
    from privtune.accounting.pld import _entry_pld, _step_pld

    for sigma, q, n in [(1.0, 0.01, 10_000), (1.5, 0.04, 2250), (0.7, 0.01, 120), (2.0, 0.001, 100_000)]:
        d = tuning.pld_discretization([(sigma, q, n)])
        theirs = _step_pld(sigma, q, d).self_compose(n).get_epsilon_for_delta(DELTA)
        ours = _entry_pld(sigma, q, n, d).get_epsilon_for_delta(DELTA)
        assert ours == pytest.approx(theirs, rel=1e-7)


def test_pld_self_compose_grid_is_narrow_at_many_steps():
    """dp-accounting's own Chernoff orders give 8.2 million points here (a minute); ours a few thousand."""
    from privtune.accounting import tuning
    from privtune.accounting.pld import _entry_pld

    d = tuning.pld_discretization([(0.3, 0.5, 3 * 10 ** 7)])
    p = _entry_pld(0.3, 0.5, 3 * 10 ** 7, d)
    assert p._pmf_remove.size < 200_000


def test_pld_roundoff_is_charged_to_delta():
    """At 10⁷ steps the FFT power leaves visible round-off: ε is taken at δ minus its estimate (larger ε)."""
    from privtune.accounting.pld import roundoff

    acc = get_accountant("pld")
    r = acc.epsilon(ledger(10 ** 7), delta=DELTA)
    composed = acc.pld(ledger(10 ** 7))
    raw = composed.get_epsilon_for_delta(DELTA)
    err = r.details["roundoff_delta"]
    assert 0 < err < DELTA / 2 and err == pytest.approx(roundoff(composed, raw))
    assert r.epsilon >= raw
    assert acc.delta(ledger(10 ** 7), epsilon=raw) >= composed.get_delta_for_epsilon(raw) + err * 0.999


@pytest.mark.parametrize("name", ["pld", "prv"])
def test_refuses_when_roundoff_reaches_half_of_delta(monkeypatch, name):
    """Where the estimated round-off is δ/2 or more, no ε is given (at δ 1e-10 this happens from about 10⁵–10⁶
    steps; the estimate itself depends on the FFT library's rounding, so the branch is driven directly)."""
    import importlib

    module = importlib.import_module(f"privtune.accounting.{name}")
    monkeypatch.setattr(module, "roundoff", lambda composed, epsilon: 6e-11)
    with pytest.raises(AccountingRangeError, match=rf"`steps` must be few enough for the {name} accountant to "
                                                   r"resolve delta 1e-10 \(the FFT composition's round-off, "
                                                   r"about 6e-11, must stay below delta/2\)"):
        get_accountant(name).epsilon(ledger(1000), delta=1e-10)
    assert get_accountant(name).epsilon(ledger(1000), delta=1e-5).details["roundoff_delta"] == 6e-11


def test_cap_takes_the_rdp_bound_when_the_tight_value_is_above_it_or_not_finite():
    assert _cap_epsilon({"epsilon": 5.0}, 6.0) == {"epsilon": 5.0, "rdp_epsilon": 6.0}
    assert _cap_epsilon({"epsilon": 7.0}, 6.0) == {"epsilon": 6.0, "rdp_epsilon": 6.0, "capped_by": "rdp",
                                                   "uncapped_epsilon": 7.0}
    assert _cap_epsilon({"epsilon": math.inf}, 6.0)["epsilon"] == 6.0
    assert _cap_epsilon({"epsilon": math.nan}, 6.0)["uncapped_epsilon"] == "nan"


def test_an_infinite_tight_epsilon_becomes_the_rdp_bound(monkeypatch):
    """The old PRV failure mode (ε = inf at 10⁷ steps) can no longer reach a user."""
    from privtune.accounting.prv import PRVAccountant

    monkeypatch.setattr(PRVAccountant, "_epsilon", lambda self, ledger, delta: {"epsilon": math.inf})
    monkeypatch.setattr(PRVAccountant, "_delta", lambda self, ledger, epsilon: math.nan)
    r = get_accountant("prv").epsilon(ledger(1000), delta=DELTA)
    rdp = get_accountant("rdp")
    assert r.epsilon == rdp.epsilon(ledger(1000), delta=DELTA).epsilon and r.details["capped_by"] == "rdp"
    assert get_accountant("prv").delta(ledger(1000), epsilon=2.0) == rdp.delta(ledger(1000), epsilon=2.0)


class _RefusesPast(RDPAccountant):
    """RDP that refuses ledgers longer than ``limit`` steps, like a numerical accountant past its range."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def _epsilon(self, ledger, delta):
        if ledger.steps > self.limit:
            raise AccountingRangeError("`steps` must be <= the test's limit. Found more.")
        return super()._epsilon(ledger, delta)


def test_max_steps_does_not_allow_steps_its_accountant_cannot_certify():
    assert max_steps(ledger=Ledger(), noise_multiplier=SIGMA, sample_rate=RATE, target_epsilon=1e6, delta=DELTA,
                     accountant=_RefusesPast(1234)) == 1234
    assert max_steps(ledger=ledger(2000), noise_multiplier=SIGMA, sample_rate=RATE, target_epsilon=1e6,
                     delta=DELTA, accountant=_RefusesPast(1234)) == 0


def test_calibration_moves_away_from_refused_noise_levels():
    from privtune.accounting import calibrate_noise

    class RefusesLowNoise(RDPAccountant):
        def _epsilon(self, ledger, delta):
            if ledger.entries[-1].noise_multiplier < 2.0:
                raise AccountingRangeError("`noise_multiplier` must be >= 2 here. Found less.")
            return super()._epsilon(ledger, delta)

    cal = calibrate_noise(target_epsilon=8.0, delta=DELTA, sample_rate=RATE, steps=1000,
                          accountant=RefusesLowNoise())
    free = calibrate_noise(target_epsilon=8.0, delta=DELTA, sample_rate=RATE, steps=1000, accountant="rdp")
    assert free.noise_multiplier < 2.0 <= cal.noise_multiplier < 2.001   # the smallest σ it can certify
    with pytest.raises(AccountingRangeError, match="must be >= 2 here"):     # nothing certifiable: its reason
        calibrate_noise(target_epsilon=8.0, delta=DELTA, sample_rate=RATE, steps=1000,
                        accountant=_AlwaysRefuses())


class _AlwaysRefuses(RDPAccountant):
    def _epsilon(self, ledger, delta):
        raise AccountingRangeError("`noise_multiplier` must be >= 2 here. Found less.")


@pytest.mark.parametrize("integer", [False, True])
def test_search_bisects_next_to_points_that_cannot_be_evaluated(integer):
    """value = x/100 up to 500 and ∞ (refused) past it: the safe boundary for target 1 is 100."""
    def value(x):
        return math.inf if x > 500 else x / 100   # safe side low: ε rises with steps, refused past 500

    found = search_threshold(value, target=1.0, start=700.0, safe_side="low", limits=(1, 10 ** 9),
                             integer=integer, ytol=0.0)
    assert found is not None and found.x <= 100 and found.x == pytest.approx(100, rel=1e-3)


@pytest.mark.parametrize("calibration", ["certified", "edgeworth-estimate"])
def test_training_plan_for_1e8_steps_is_computed_in_seconds(tmp_path, calibration):
    """``train --epsilon 8 --steps 100000000``: the noise calibration and the budget guard (before: one PLD
    evaluation alone took minutes at 10⁸ steps)."""
    import warnings

    from privtune.training.privacy import PrivacyState, plan_privacy

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the estimate calibration's UNSAFE warning
        plan = plan_privacy(epsilon=8.0, delta=DELTA, noise_multiplier=None, max_grad_norm=1.0, sample_rate=RATE,
                            steps=10 ** 8, reserve=50, accountant="pld", secure_rng=False,
                            noise_calibration=calibration)
    state = PrivacyState(plan, tmp_path, persist=False)
    assert time.perf_counter() - start < 4 * PER_CALL_S
    assert 55 < plan.noise_multiplier < 65 and state.remaining >= 10 ** 8
