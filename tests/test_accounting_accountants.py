"""Each accountant against the shared contract, plus what is specific to it."""

from __future__ import annotations

import math

import pytest

from accounting_contract import AccountantContract
from privtune.accounting import Ledger, get_accountant
from privtune.accounting.rdp import RDPAccountant
from privtune.errors import ConfigError


class TestRDP(AccountantContract):
    name = "rdp"
    gaussian_atol = 0.6  # RDP is loose even for the pure Gaussian (the conversion loses ~log terms)

    def test_custom_orders_can_only_loosen(self):
        ledger = Ledger.of(noise_multiplier=1.5, sample_rate=0.04, steps=2250)
        full = RDPAccountant().epsilon(ledger, delta=1e-5).epsilon
        few = RDPAccountant(orders=[2, 8, 32]).epsilon(ledger, delta=1e-5).epsilon
        assert few >= full

    def test_rejects_bad_orders(self):
        with pytest.raises(ConfigError, match="`orders` must be"):
            RDPAccountant(orders=[0.5, 2])


class TestPLD(AccountantContract):
    name = "pld"
    gaussian_atol = 5e-3

    def test_fixed_discretization_is_used(self):
        ledger = Ledger.of(noise_multiplier=1.0, sample_rate=0.02, steps=50)
        coarse = get_accountant("pld", discretization=1e-2).epsilon(ledger, delta=1e-5)
        auto = get_accountant("pld").epsilon(ledger, delta=1e-5)
        assert coarse.details["discretization"] == 1e-2
        assert coarse.epsilon >= auto.epsilon  # pessimistic: a coarser grid can only be looser


class TestPRV(AccountantContract):
    name = "prv"
    gaussian_atol = 0.011  # the certified upper bound adds eps_error = 0.01

    def test_bounds_bracket_the_estimate(self):
        r = get_accountant("prv").epsilon(Ledger.of(**self.small), delta=1e-5)
        assert r.details["epsilon_lower"] <= r.details["epsilon_estimate"] <= r.epsilon
        assert r.epsilon - r.details["epsilon_estimate"] == pytest.approx(0.01, abs=2e-3)


def test_unknown_accountant_lists_choices():
    with pytest.raises(ConfigError, match="one of .*pld.*prv.*rdp"):
        get_accountant("moments")


def test_unknown_option_is_a_config_error():
    with pytest.raises(ConfigError, match="`options` must be"):
        get_accountant("pld", eps_error=0.1)


def test_infinite_epsilon_is_json_safe():
    r = get_accountant("rdp").epsilon(Ledger.of(noise_multiplier=0.1, sample_rate=1.0, steps=10), delta=1e-5)
    assert math.isfinite(r.epsilon) or r.to_dict()["epsilon"] == "inf"
