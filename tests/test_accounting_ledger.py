"""Events and the ledger: validation, merging, serialisation."""

from __future__ import annotations

import json

import pytest

from privtune.accounting import (ComposedEvent, GaussianEvent, Ledger, LedgerEntry, PoissonSampledEvent,
                                 SelfComposedEvent, dp_sgd_event)
from privtune.accounting.events import to_dp_accounting
from privtune.errors import ConfigError


@pytest.mark.parametrize("sigma", [0, -1, float("inf"), float("nan"), "1", True])
def test_gaussian_event_rejects_bad_noise(sigma):
    with pytest.raises(ConfigError, match="`noise_multiplier` must be"):
        GaussianEvent(sigma)


@pytest.mark.parametrize("q", [0, -0.1, 1.0001, 2])
def test_poisson_event_rejects_bad_rate(q):
    with pytest.raises(ConfigError, match=r"`sample_rate` must be in \(0, 1\]"):
        PoissonSampledEvent(q, GaussianEvent(1.0))


@pytest.mark.parametrize("count", [0, -3, 1.5, "2"])
def test_self_composed_rejects_bad_count(count):
    with pytest.raises(ConfigError, match="`count` must be an integer >= 1"):
        SelfComposedEvent(GaussianEvent(1.0), count)


def test_events_are_frozen_and_hashable():
    e = dp_sgd_event(noise_multiplier=1.0, sample_rate=0.1, steps=3)
    assert e == SelfComposedEvent(PoissonSampledEvent(0.1, GaussianEvent(1.0)), 3)
    assert hash(e) == hash(SelfComposedEvent(PoissonSampledEvent(0.1, GaussianEvent(1.0)), 3))
    with pytest.raises(AttributeError):
        e.count = 4  # type: ignore[misc]


def test_translation_to_dp_accounting():
    from dp_accounting import dp_event

    ev = ComposedEvent((dp_sgd_event(noise_multiplier=1.0, sample_rate=0.1, steps=3),))
    assert to_dp_accounting(ev) == dp_event.ComposedDpEvent([dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(0.1, dp_event.GaussianDpEvent(1.0)), 3)])


def test_record_merges_consecutive_identical_steps():
    ledger = Ledger()
    for _ in range(5):
        ledger.record(noise_multiplier=1.0, sample_rate=0.01)
    ledger.record(noise_multiplier=1.0, sample_rate=0.02, steps=3)
    ledger.record(noise_multiplier=1.0, sample_rate=0.01, steps=2)
    assert ledger.entries == (LedgerEntry(1.0, 0.01, 5), LedgerEntry(1.0, 0.02, 3), LedgerEntry(1.0, 0.01, 2))
    assert ledger.steps == 10
    assert not ledger.is_homogeneous


def test_record_rejects_bad_input_without_changing_the_ledger():
    ledger = Ledger.of(noise_multiplier=1.0, sample_rate=0.01, steps=4)
    with pytest.raises(ConfigError, match="`steps` must be an integer >= 1"):
        ledger.record(noise_multiplier=1.0, sample_rate=0.01, steps=0)
    with pytest.raises(ConfigError, match="`noise_multiplier` must be"):
        ledger.record(noise_multiplier=0.0, sample_rate=0.01)
    assert ledger.steps == 4


def test_round_trip_through_json():
    ledger = Ledger()
    ledger.record(noise_multiplier=1.1, sample_rate=0.01, steps=100)
    ledger.record(noise_multiplier=0.9, sample_rate=0.02, steps=7)
    data = json.loads(json.dumps(ledger.to_dict()))
    assert data["neighbouring"] == "add_or_remove_one" and data["sampling"] == "poisson"
    assert Ledger.from_dict(data) == ledger


def test_from_dict_refuses_other_relations_and_corruption():
    data = Ledger.of(noise_multiplier=1.0, sample_rate=0.1, steps=2).to_dict()
    with pytest.raises(ConfigError, match="`ledger.neighbouring` must be"):
        Ledger.from_dict({**data, "neighbouring": "replace_one"})
    with pytest.raises(ConfigError, match="`ledger.sampling` must be"):
        Ledger.from_dict({**data, "sampling": "shuffle"})
    with pytest.raises(ConfigError, match="`ledger.steps` must be"):
        Ledger.from_dict({**data, "steps": 3})
    with pytest.raises(ConfigError, match="`ledger` must be"):
        Ledger.from_dict([1, 2])
    with pytest.raises(ConfigError, match=r"`ledger.entries\[0\]` must be"):
        Ledger.from_dict({**data, "entries": [{"noise_multiplier": 1.0}]})


def test_copy_and_extended_leave_the_original_alone():
    ledger = Ledger.of(noise_multiplier=1.0, sample_rate=0.1, steps=2)
    clone = ledger.copy()
    clone.record(noise_multiplier=1.0, sample_rate=0.1)
    longer = ledger.extended(noise_multiplier=2.0, sample_rate=0.1, steps=5)
    assert ledger.steps == 2 and clone.steps == 3 and longer.steps == 7
    assert longer.key == ((1.0, 0.1, 2), (2.0, 0.1, 5))


def test_ledger_is_not_hashable_but_its_key_is():
    ledger = Ledger.of(noise_multiplier=1.0, sample_rate=0.1, steps=2)
    with pytest.raises(TypeError):
        hash(ledger)
    assert hash(ledger.key) == hash(((1.0, 0.1, 2),))
    assert isinstance(ledger.event, ComposedEvent)
