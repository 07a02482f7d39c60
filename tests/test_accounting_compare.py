"""Schedules from (q, steps) or (N, B, epochs); side-by-side comparison keeps going when one accountant
fails."""

from __future__ import annotations

import pytest

from privtune.accounting import Ledger, get_accountant
from privtune.accounting.base import Accountant
from privtune.accounting.compare import (AccountantFailure, compare, epsilon_curve, make_accountants,
                                         resolve_schedule)
from privtune.errors import ConfigError


def test_schedule_forms():
    assert resolve_schedule(sample_rate=0.01, steps=30).steps == 30
    s = resolve_schedule(dataset_size=67349, batch_size=2000, epochs=20)
    assert s.sample_rate == pytest.approx(2000 / 67349) and s.steps == 674  # ceil(20·N/B)
    assert resolve_schedule(dataset_size=1000, batch_size=10, steps=7).to_dict() == {
        "sample_rate": 0.01, "steps": 7, "dataset_size": 1000, "batch_size": 10}


@pytest.mark.parametrize("kwargs,match", [
    (dict(steps=10), "`sample_rate` must be given"),
    (dict(sample_rate=0.1), "`steps` must be given"),
    (dict(sample_rate=0.1, batch_size=10, dataset_size=100, steps=3), "`sample_rate` must be given alone"),
    (dict(sample_rate=0.1, steps=3, epochs=2), "`steps` must be given alone"),
    (dict(dataset_size=10, batch_size=20, steps=3), "`batch_size` must be <= dataset_size"),
    (dict(dataset_size=100, batch_size=10, epochs=-1), "`epochs` must be > 0"),
])
def test_schedule_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        resolve_schedule(**kwargs)


class _Broken(Accountant):
    name = "broken"
    certified = True

    def _epsilon(self, ledger, delta):
        raise ConfigError("`ledger` must be something this accountant understands. Found 1.")

    def _delta(self, ledger, epsilon):
        return 1.0


def test_compare_reports_failures_as_rows():
    rows = compare(Ledger.of(noise_multiplier=1.0, sample_rate=0.02, steps=20), delta=1e-5,
                   accountants=[get_accountant("rdp"), _Broken()])
    assert rows[0].accountant == "rdp" and rows[0].epsilon > 0
    assert isinstance(rows[1], AccountantFailure) and rows[1].to_dict()["error"].startswith("`ledger` must")


def test_all_lists_certified_accountants_first():
    names = [a.name for a in make_accountants(order=2)]
    assert names[-1] == "edgeworth" and set(names) == {"rdp", "pld", "prv", "edgeworth"}
    assert make_accountants(["edgeworth"], order=2)[0].order == 2


def test_curve_rises_with_steps():
    curve = epsilon_curve(noise_multiplier=1.0, sample_rate=0.02, steps=100, delta=1e-5, points=4,
                          accountants=make_accountants(["rdp", "edgeworth"]))
    assert curve.steps == [25, 50, 75, 100]
    for eps in curve.epsilon.values():
        assert eps == sorted(eps)
    assert curve.to_dict()["series"][1]["certified"] is False
