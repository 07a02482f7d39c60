"""Noise calibration and the step budget."""

from __future__ import annotations

import math
import warnings

import pytest

from privtune.accounting import Ledger, calibrate_noise, get_accountant, max_steps
from privtune.accounting.analytic import gaussian_mu
from privtune.accounting.calibrate import search_threshold
from privtune.accounting.events import AccountingWarning
from privtune.errors import BudgetError, ConfigError


def test_search_threshold_real_and_integer():
    r = search_threshold(lambda x: 10 / x, target=2.0, start=1.0, safe_side="high", limits=(0.01, 100),
                         xtol=1e-9, ytol=0.0)
    assert r.x == pytest.approx(5.0, rel=1e-8) and r.value <= 2.0
    r = search_threshold(lambda n: 0.3 * n, target=10.0, start=1, safe_side="low", limits=(1, 10**6),
                         integer=True, ytol=0.0)
    assert r.x == 33 and r.value <= 10.0
    assert search_threshold(lambda x: 5.0, target=1.0, start=1, safe_side="high", limits=(1, 8)) is None
    assert search_threshold(lambda x: 0.0, target=1.0, start=2, safe_side="high", limits=(1, 8)).at_limit


def test_search_threshold_never_returns_an_unsafe_point_of_a_jumpy_function():
    steps = lambda x: math.ceil(x * 7) / 7  # noqa: E731 -- monotone, piecewise constant
    r = search_threshold(lambda x: 1 / steps(x), target=0.5, start=1.0, safe_side="high", limits=(0.1, 10))
    assert 1 / steps(r.x) <= 0.5


def test_search_reports_non_convergence():
    with pytest.raises(RuntimeError, match="did not converge"):
        search_threshold(lambda x: 1 / x, target=0.3, start=1.0, safe_side="high", limits=(0.1, 100),
                         xtol=1e-15, ytol=0.0, max_evaluations=5)


def test_reference_noise_multipliers():
    """ε 8, δ 1e-5, q 0.04, 2250 steps: RDP 1.416, PRV 1.34765625 (Opacus tests, bisection tolerance ~0.01 in
    ε)."""
    kw = dict(target_epsilon=8, delta=1e-5, sample_rate=0.04, steps=2250)
    assert calibrate_noise(**kw, accountant="rdp").noise_multiplier == pytest.approx(1.416, abs=1e-3)
    pld = calibrate_noise(**kw)
    assert pld.noise_multiplier == pytest.approx(1.3477, abs=2e-3)
    assert pld.epsilon <= 8 and pld.epsilon == pytest.approx(8, rel=1e-3)


@pytest.mark.parametrize("name", ["rdp", "pld"])
def test_calibration_round_trip(name):
    res = calibrate_noise(target_epsilon=3.0, delta=1e-6, sample_rate=0.02, steps=300, accountant=name)
    acc = get_accountant(name)
    ledger = Ledger.of(noise_multiplier=res.noise_multiplier, sample_rate=0.02, steps=300)
    eps = acc.epsilon(ledger, delta=1e-6).epsilon
    assert eps == res.epsilon <= 3.0
    less_noise = Ledger.of(noise_multiplier=res.noise_multiplier * (1 - 2e-3), sample_rate=0.02, steps=300)
    assert acc.epsilon(less_noise, delta=1e-6).epsilon > 3.0  # the smallest such σ, to the tolerance
    d = res.to_dict()
    for key in ("accountant", "epsilon", "delta", "noise_multiplier", "sample_rate", "steps", "certified"):
        assert key in d
    assert d["certified"] is True


def test_pure_gaussian_calibration_is_analytic():
    mu = gaussian_mu(epsilon=2.0, delta=1e-5)
    res = calibrate_noise(target_epsilon=2.0, delta=1e-5, sample_rate=1.0, steps=100)
    assert res.noise_multiplier == pytest.approx(math.sqrt(100) / mu, rel=2e-3)


def test_prior_ledger_is_accounted():
    prior = Ledger.of(noise_multiplier=1.0, sample_rate=0.02, steps=200)
    fresh = calibrate_noise(target_epsilon=4.0, delta=1e-5, sample_rate=0.02, steps=200)
    resumed = calibrate_noise(target_epsilon=4.0, delta=1e-5, sample_rate=0.02, steps=200, prior=prior)
    assert resumed.noise_multiplier > fresh.noise_multiplier
    assert resumed.prior_steps == 200
    total = prior.extended(noise_multiplier=resumed.noise_multiplier, sample_rate=0.02, steps=200)
    assert get_accountant("pld").epsilon(total, delta=1e-5).epsilon <= 4.0


def test_prior_that_already_exceeds_budget():
    prior = Ledger.of(noise_multiplier=0.5, sample_rate=0.1, steps=500)
    with pytest.raises(BudgetError, match="already spent"):
        calibrate_noise(target_epsilon=1.0, delta=1e-5, sample_rate=0.01, steps=10, prior=prior)


def test_unreachable_target():
    with pytest.raises(BudgetError, match="`target_epsilon` must be reachable"):
        calibrate_noise(target_epsilon=1e-6, delta=1e-10, sample_rate=1.0, steps=10**6)


@pytest.mark.parametrize("kwargs,match", [
    (dict(target_epsilon=0), "`target_epsilon` must be > 0"),
    (dict(delta=1.0), "`delta` must be in"),
    (dict(sample_rate=0.0), "`sample_rate` must be in"),
    (dict(steps=0), "`steps` must be an integer >= 1"),
    (dict(accountant="nope"), "`accountant` must be one of"),
    (dict(prior=[("σ", 1.0)]), "`prior` must be a Ledger"),
])
def test_bad_input(kwargs, match):
    args = {**dict(target_epsilon=8, delta=1e-5, sample_rate=0.01, steps=100), **kwargs}
    with pytest.raises(ConfigError, match=match):
        calibrate_noise(**args)


def test_delta_above_one_over_n_warns():
    with pytest.warns(AccountingWarning, match=r"`delta` must be < 1/dataset_size"):
        calibrate_noise(target_epsilon=8, delta=1e-3, sample_rate=0.01, steps=100, dataset_size=5000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        calibrate_noise(target_epsilon=8, delta=1e-5, sample_rate=0.01, steps=100, dataset_size=5000)


def test_max_steps_is_the_largest_that_fits():
    ledger = Ledger.of(noise_multiplier=1.0, sample_rate=0.02, steps=100)
    n = max_steps(ledger=ledger, noise_multiplier=1.2, sample_rate=0.02, target_epsilon=3.0, delta=1e-5)
    acc = get_accountant("pld")
    def eps(k):
        longer = ledger.extended(noise_multiplier=1.2, sample_rate=0.02, steps=k)
        return acc.epsilon(longer, delta=1e-5).epsilon

    assert eps(n) <= 3.0 < eps(n + 1)
    assert n > 100


def test_max_steps_edge_cases():
    spent = Ledger.of(noise_multiplier=0.5, sample_rate=0.1, steps=500)
    assert max_steps(ledger=spent, noise_multiplier=1.0, sample_rate=0.01, target_epsilon=1.0,
                     delta=1e-5) == 0
    assert max_steps(ledger=Ledger(), noise_multiplier=1e3, sample_rate=1e-4, target_epsilon=10.0, delta=1e-5,
                     limit=1000) == 1000
    # an estimate accountant is replaced by its certifier: the guard rests on an upper bound
    kw = dict(ledger=Ledger(), noise_multiplier=1.0, sample_rate=0.02, target_epsilon=2.0, delta=1e-5)
    assert max_steps(**kw, accountant="rdp") <= max_steps(**kw)
