"""The Edgeworth accountant: contract, exactness at q = 1, quadrature, EW-Tune reference, robustness."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from accounting_contract import AccountantContract
from privtune.accounting import Ledger, calibrate_noise, get_accountant
from privtune.accounting import edgeworth as ew
from privtune.accounting.analytic import gaussian_delta, gaussian_epsilon
from privtune.errors import ConfigError


class TestEdgeworth(AccountantContract):
    name = "edgeworth"
    gaussian_atol = 1e-7  # exact at q = 1 (zero higher cumulants), up to the root finder's tolerance

    def test_is_an_estimate_with_its_certified_counterpart(self, acc):
        ledger = Ledger.of(**self.small)
        r = acc.epsilon(ledger, delta=1e-5)
        d = r.to_dict()
        assert d["certified"] is False and d["kind"] == "estimate"
        assert d["order"] == 1 and d["certified_by"] == "pld"
        pld = get_accountant("pld").epsilon(ledger, delta=1e-5).epsilon
        assert d["certified_epsilon"] == pytest.approx(pld)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("sigma,steps,delta,expected",
                         [(100.0, 10_000, 1e-8, 5.77610), (10.0, 100, 1e-5, 4.37718)])
def test_every_order_is_exact_for_the_pure_gaussian(order, sigma, steps, delta, expected):
    ledger = Ledger.of(noise_multiplier=sigma, sample_rate=1.0, steps=steps)
    acc = get_accountant("edgeworth", order=order)
    eps = acc.estimate(ledger, delta=delta)
    assert eps == pytest.approx(expected, abs=5e-6)
    assert eps == pytest.approx(gaussian_epsilon(mu=math.sqrt(steps) / sigma, delta=delta), abs=1e-8)
    exact_delta = gaussian_delta(mu=math.sqrt(steps) / sigma, epsilon=eps)
    assert acc.delta(ledger, epsilon=eps) == pytest.approx(exact_delta, rel=1e-9)


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize("sigma,q", [(0.7, 0.01), (0.3, 0.2), (5.0, 0.001), (1.0, 0.9)])
def test_cumulants_match_adaptive_quadrature(sigma, q):
    """Independent check of the trapezoidal rule against scipy's adaptive quadrature of the same integrals."""
    mu = 1 / sigma
    loss = lambda x: float(ew.privacy_loss(np.array([x]), mu, q)[0])  # noqa: E731
    phi = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    for density, ours in ((phi, ew.cumulants(sigma, q).p),
                          (lambda x: (1 - q) * phi(x) + q * phi(x - mu), ew.cumulants(sigma, q).q)):
        def moment(g):
            return integrate.quad(lambda x: density(x) * g(x), -40, mu + 40, points=[0.0, mu], limit=400,
                                  epsabs=0, epsrel=1e-12)[0]
        m1 = moment(loss)
        m = [moment(lambda x, k=k: (loss(x) - m1) ** k) for k in (2, 3, 4, 5)]
        ref = [m1, m[0], m[1], m[2] - 3 * m[0] ** 2, m[3] - 10 * m[1] * m[0]]
        assert ours == pytest.approx(ref, rel=1e-7, abs=1e-300)


def test_cumulants_have_the_known_signs():
    """κ1 under P is −KL(P‖Q) < 0, under Q it is KL(Q‖P) > 0; variances are positive."""
    c = ew.cumulants(1.0, 0.05)
    assert c.p[0] < 0 < c.q[0] and c.p[1] > 0 and c.q[1] > 0


def test_ew_tune_reference_values():
    """First order, the paper's remove ordering: SST-2 and QNLI rows of the shared reference table."""
    acc = get_accountant("edgeworth", order=1, orderings="remove")
    sst2 = Ledger.of(noise_multiplier=0.7865, sample_rate=2000 / 67349, steps=660)
    qnli = Ledger.of(noise_multiplier=0.711, sample_rate=2000 / 104743, steps=1040)
    assert acc.estimate(sst2, delta=1e-5) == pytest.approx(7.99290, abs=5e-5)
    assert acc.estimate(qnli, delta=1e-5) == pytest.approx(7.99797, abs=5e-5)
    assert get_accountant("pld").epsilon(sst2, delta=1e-5).epsilon == pytest.approx(8.29, abs=6e-3)
    assert get_accountant("pld").epsilon(qnli, delta=1e-5).epsilon == pytest.approx(8.46, abs=6e-3)
    both = get_accountant("edgeworth", order=1)  # the worse of both orderings can only be larger
    assert both.estimate(sst2, delta=1e-5) >= acc.estimate(sst2, delta=1e-5)


def test_edgeworth_calibration_certifies_its_sigma():
    """SST-2: the Edgeworth σ (0.7865) under-noises; the returned σ is the tight one (0.7982) and is
    certified."""
    res = calibrate_noise(target_epsilon=8, delta=1e-5, sample_rate=2000 / 67349, steps=660,
                          accountant=get_accountant("edgeworth", orderings="remove"))
    assert res.edgeworth_noise_multiplier == pytest.approx(0.7865, abs=1e-3)
    assert res.certified_epsilon_at_edgeworth_noise > 8
    assert res.noise_multiplier == pytest.approx(0.7982, abs=1e-3)
    assert res.noise_multiplier >= res.edgeworth_noise_multiplier
    assert res.epsilon <= 8 and res.certified and res.certified_by == "pld"
    d = res.to_dict()
    assert {"edgeworth_noise_multiplier", "edgeworth_epsilon", "noise_multiplier", "epsilon"} <= set(d)


def test_heterogeneous_ledger_adds_cumulants():
    a, b = dict(noise_multiplier=0.9, sample_rate=0.02), dict(noise_multiplier=1.3, sample_rate=0.05)
    split = Ledger()
    split.record(**a, steps=70)
    split.record(**b, steps=30)
    split.record(**a, steps=30)
    grouped = Ledger()
    grouped.record(**a, steps=100)
    grouped.record(**b, steps=30)
    acc = get_accountant("edgeworth", order=3)
    assert acc.estimate(split, delta=1e-6) == pytest.approx(acc.estimate(grouped, delta=1e-6), rel=1e-10)


def test_cost_does_not_grow_with_steps():
    ew.cumulants.cache_clear()
    acc = get_accountant("edgeworth")
    acc.estimate(Ledger.of(noise_multiplier=0.9, sample_rate=0.01, steps=10), delta=1e-5)
    misses = ew.cumulants.cache_info().misses
    eps = acc.estimate(Ledger.of(noise_multiplier=0.9, sample_rate=0.01, steps=10**7), delta=1e-5)
    assert ew.cumulants.cache_info().misses == misses and math.isfinite(eps)


@pytest.mark.parametrize("sigma", [1e-3, 0.01, 0.1, 1.0, 10.0, 1e3, 1e6])
@pytest.mark.parametrize("q", [1e-9, 1e-4, 0.01, 0.5, 0.999999, 1.0])
def test_no_nan_anywhere(sigma, q):
    """Any σ and q: a finite ε >= 0 (or, far outside the expansion's range, a clear error) — never NaN."""
    ledger = Ledger.of(noise_multiplier=sigma, sample_rate=q, steps=100)
    for order in (1, 3):
        try:
            eps = get_accountant("edgeworth", order=order).estimate(ledger, delta=1e-5)
        except ConfigError as e:
            assert "Edgeworth" in str(e)
            continue
        assert math.isfinite(eps) and eps >= 0
        assert not math.isnan(get_accountant("edgeworth", order=order).delta(ledger, epsilon=1.0))


def test_huge_noise_leaks_nothing_and_epsilon_is_never_negative():
    acc = get_accountant("edgeworth")
    assert acc.estimate(Ledger.of(noise_multiplier=1e6, sample_rate=0.5, steps=10), delta=1e-5) == 0.0
    assert acc.estimate(Ledger.of(noise_multiplier=5.0, sample_rate=1e-4, steps=10), delta=0.5) == 0.0


def test_bad_order():
    with pytest.raises(ConfigError, match="`order` must be 1, 2 or 3"):
        get_accountant("edgeworth", order=4)
    with pytest.raises(ConfigError, match="`orderings` must be"):
        get_accountant("edgeworth", orderings="add")
