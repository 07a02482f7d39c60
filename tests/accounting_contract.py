"""The contract every accountant satisfies; each accountant's test class inherits :class:`AccountantContract`.

Subclasses set ``name`` and, where the accountant is an approximation, the tolerances of its analytic checks.
"""

from __future__ import annotations

import math

import pytest

from privtune.accounting import ACCOUNTANTS, Ledger, get_accountant
from privtune.accounting.analytic import gaussian_delta, gaussian_epsilon
from privtune.errors import ConfigError


class AccountantContract:
    name: str = ""
    options: dict = {}
    # |ε − exact| allowed on pure Gaussian ledgers (q = 1); certified accountants may only err upwards
    gaussian_atol: float = 1e-3
    # ledgers small enough for this accountant to be quick in the fast suite
    small = dict(noise_multiplier=1.0, sample_rate=0.02, steps=50)

    @pytest.fixture
    def acc(self):
        return get_accountant(self.name, **self.options)

    def test_registered(self, acc):
        assert self.name in ACCOUNTANTS
        assert acc.name == self.name
        assert isinstance(acc.certified, bool)

    def test_result_has_contract_keys(self, acc):
        d = acc.epsilon(Ledger.of(**self.small), delta=1e-5).to_dict()
        assert {"accountant", "epsilon", "delta", "noise_multiplier", "sample_rate", "steps",
                "certified"} <= set(d)
        assert d["accountant"] == self.name and d["certified"] is acc.certified
        assert d["steps"] == self.small["steps"] and d["noise_multiplier"] == self.small["noise_multiplier"]
        assert d["kind"] == ("certified" if acc.certified else "estimate")
        assert d["epsilon"] > 0

    def test_empty_ledger_is_free(self, acc):
        assert acc.epsilon(Ledger(), delta=1e-5).epsilon == 0.0
        assert acc.delta(Ledger(), epsilon=1.0) == 0.0

    @pytest.mark.parametrize("delta", [0, 1, -1e-5, 1.5, float("nan")])
    def test_rejects_bad_delta(self, acc, delta):
        with pytest.raises(ConfigError, match="`delta` must be"):
            acc.epsilon(Ledger.of(**self.small), delta=delta)

    def test_rejects_non_ledger(self, acc):
        with pytest.raises(ConfigError, match="`ledger` must be"):
            acc.epsilon({"steps": 3}, delta=1e-5)

    @pytest.mark.parametrize("sigma,steps,delta", [(10.0, 100, 1e-5), (100.0, 10_000, 1e-8), (2.0, 10, 1e-6)])
    def test_pure_gaussian_is_exact(self, acc, sigma, steps, delta):
        """q = 1: the loss is N(μ²/2, μ²) with μ = sqrt(steps)/σ, so ε(δ) has a closed form."""
        exact = gaussian_epsilon(mu=math.sqrt(steps) / sigma, delta=delta)
        ledger = Ledger.of(noise_multiplier=sigma, sample_rate=1.0, steps=steps)
        eps = acc.epsilon(ledger, delta=delta).epsilon
        assert eps == pytest.approx(exact, abs=self.gaussian_atol)
        if acc.certified:
            assert eps >= exact - 1e-9

    def test_delta_inverts_epsilon(self, acc):
        ledger = Ledger.of(**self.small)
        eps = acc.epsilon(ledger, delta=1e-5).epsilon
        delta = acc.delta(ledger, epsilon=eps)
        assert 0 < delta
        assert math.log(delta) == pytest.approx(math.log(1e-5), abs=0.05)

    def test_monotone_in_sigma_steps_and_rate(self, acc):
        base = dict(self.small)
        e0 = acc.epsilon(Ledger.of(**base), delta=1e-5).epsilon
        more_noise = acc.epsilon(Ledger.of(**{**base, "noise_multiplier": base["noise_multiplier"] * 1.3}),
                                 delta=1e-5).epsilon
        more_steps = acc.epsilon(Ledger.of(**{**base, "steps": base["steps"] * 2}), delta=1e-5).epsilon
        more_rate = acc.epsilon(Ledger.of(**{**base, "sample_rate": base["sample_rate"] * 2}),
                                delta=1e-5).epsilon
        assert more_noise < e0 < more_steps
        assert e0 < more_rate

    def test_order_of_entries_does_not_matter(self, acc):
        a = dict(noise_multiplier=self.small["noise_multiplier"], sample_rate=self.small["sample_rate"])
        b = dict(noise_multiplier=a["noise_multiplier"] * 1.5, sample_rate=a["sample_rate"] * 2)
        n = self.small["steps"]
        split = Ledger()
        split.record(**a, steps=n // 2)
        split.record(**b, steps=n)
        split.record(**a, steps=n - n // 2)
        grouped = Ledger()
        grouped.record(**b, steps=n)
        grouped.record(**a, steps=n)
        assert len(split.entries) == 3 and len(grouped.entries) == 2
        e1 = acc.epsilon(split, delta=1e-5).epsilon
        e2 = acc.epsilon(grouped, delta=1e-5).epsilon
        assert e1 == pytest.approx(e2, rel=2e-3)

    def test_heterogeneous_gaussian_equals_homogeneous(self, acc):
        """At q = 1, n1 steps at σ1 then n2 at σ2 are μ-GDP with μ² = n1/σ1² + n2/σ2²: one σ gives the
        same."""
        het = Ledger()
        het.record(noise_multiplier=4.0, sample_rate=1.0, steps=10)
        het.record(noise_multiplier=8.0, sample_rate=1.0, steps=40)
        sigma = math.sqrt(50 / (10 / 16 + 40 / 64))
        hom = Ledger.of(noise_multiplier=sigma, sample_rate=1.0, steps=50)
        exact = gaussian_epsilon(mu=math.sqrt(10 / 16 + 40 / 64), delta=1e-5)
        e_het = acc.epsilon(het, delta=1e-5).epsilon
        e_hom = acc.epsilon(hom, delta=1e-5).epsilon
        assert e_het == pytest.approx(e_hom, abs=self.gaussian_atol)
        assert e_het == pytest.approx(exact, abs=self.gaussian_atol)
        assert gaussian_delta(mu=math.sqrt(10 / 16 + 40 / 64), epsilon=exact) == pytest.approx(1e-5, rel=1e-9)
