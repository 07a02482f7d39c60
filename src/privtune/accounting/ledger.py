"""The privacy ledger: an append-only record of the DP-SGD steps a model has seen.

The ledger is privtune's one source of truth for privacy: the trainer records every step in it, checkpoints
and ``run.json`` store :meth:`Ledger.to_dict`, a resume restores it with :meth:`Ledger.from_dict`, and every ε
shown anywhere is computed from it by an accountant (:mod:`privtune.accounting.base`).

What the ledger states, besides its entries:

* ``neighbouring = "add_or_remove_one"``: datasets D, D' are neighbours when one is the other plus one record.
* ``sampling = "poisson"``: each record joins each batch independently with probability q (the accountants
assume it;
  a fixed-size shuffled batch would need a different analysis).
* ``mechanism = "poisson_subsampled_gaussian"``: each step releases the sum of per-record gradients clipped to
L2 norm
  C plus N(0, σ²C²I).

Consecutive entries with the same (σ, q) merge, so a ledger of a million steps is one entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from privtune.accounting.events import (ComposedEvent, SelfComposedEvent, check_noise_multiplier,
                                        check_sample_rate, check_steps, dp_sgd_event)
from privtune.errors import ConfigError, fmt

NEIGHBOURING = "add_or_remove_one"
SAMPLING = "poisson"
MECHANISM = "poisson_subsampled_gaussian"
FORMAT = "privtune.ledger"
VERSION = 1


@dataclass(frozen=True)
class LedgerEntry:
    """``steps`` consecutive steps at noise multiplier σ and Poisson sampling rate q."""

    noise_multiplier: float
    sample_rate: float
    steps: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "noise_multiplier", check_noise_multiplier(self.noise_multiplier))
        object.__setattr__(self, "sample_rate", check_sample_rate(self.sample_rate))
        object.__setattr__(self, "steps", check_steps(self.steps))

    @property
    def event(self) -> SelfComposedEvent:
        return dp_sgd_event(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate,
                            steps=self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {"noise_multiplier": self.noise_multiplier, "sample_rate": self.sample_rate,
                "steps": self.steps}


class Ledger:
    """Append-only list of :class:`LedgerEntry`; see the module docstring for what it states."""

    neighbouring = NEIGHBOURING
    sampling = SAMPLING
    mechanism = MECHANISM

    def __init__(self, entries: tuple[LedgerEntry, ...] | list[LedgerEntry] = ()):
        self._entries: list[LedgerEntry] = []
        for e in entries:
            if not isinstance(e, LedgerEntry):
                raise ConfigError(fmt("entries", "a sequence of LedgerEntry", type(e).__name__))
            self.record(noise_multiplier=e.noise_multiplier, sample_rate=e.sample_rate, steps=e.steps)

    @classmethod
    def of(cls, *, noise_multiplier: float, sample_rate: float, steps: int) -> "Ledger":
        """A ledger of ``steps`` identical steps (the common case)."""
        ledger = cls()
        ledger.record(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
        return ledger

    def record(self, *, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Append ``steps`` steps at (σ, q); merges with the last entry when (σ, q) are identical."""
        entry = LedgerEntry(noise_multiplier, sample_rate, steps)
        last = self._entries[-1] if self._entries else None
        if last is not None and (last.noise_multiplier, last.sample_rate) == (entry.noise_multiplier,
                                                                               entry.sample_rate):
            self._entries[-1] = LedgerEntry(last.noise_multiplier, last.sample_rate, last.steps + entry.steps)
        else:
            self._entries.append(entry)

    def extended(self, *, noise_multiplier: float, sample_rate: float, steps: int) -> "Ledger":
        """A new ledger: this one followed by ``steps`` steps at (σ, q). This ledger is unchanged."""
        out = self.copy()
        out.record(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
        return out

    def copy(self) -> "Ledger":
        out = Ledger()
        out._entries = list(self._entries)
        return out

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        return tuple(self._entries)

    @property
    def steps(self) -> int:
        """Total number of steps recorded."""
        return sum(e.steps for e in self._entries)

    @property
    def is_empty(self) -> bool:
        return not self._entries

    @property
    def is_homogeneous(self) -> bool:
        """True when every step used the same (σ, q) (then it is a single entry)."""
        return len(self._entries) == 1

    @property
    def key(self) -> tuple[tuple[float, float, int], ...]:
        """Hashable summary, used to cache accountant computations."""
        return tuple((e.noise_multiplier, e.sample_rate, e.steps) for e in self._entries)

    @property
    def event(self) -> ComposedEvent:
        """The composition of all recorded steps as an event."""
        return ComposedEvent(tuple(e.event for e in self._entries))

    def __iter__(self) -> Iterator[LedgerEntry]:
        return iter(self.entries)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ledger) and self._entries == other._entries

    __hash__ = None  # mutable: use `key` to cache on a ledger's content

    def __repr__(self) -> str:
        body = ", ".join(f"{e.steps}×(σ={e.noise_multiplier:g}, q={e.sample_rate:g})" for e in self._entries)
        return f"Ledger([{body}])"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, stored in checkpoints and run.json."""
        return {"format": FORMAT, "version": VERSION, "mechanism": MECHANISM, "neighbouring": NEIGHBOURING,
                "sampling": SAMPLING, "steps": self.steps, "entries": [e.to_dict() for e in self._entries]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Ledger":
        """Inverse of :meth:`to_dict`; refuses a ledger that states another neighbouring relation or
        sampling."""
        if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
            raise ConfigError(fmt("ledger", "a dict with an `entries` list (Ledger.to_dict())",
                                  type(data).__name__ if not isinstance(data, dict) else sorted(data)))
        stated = (("neighbouring", NEIGHBOURING), ("sampling", SAMPLING), ("mechanism", MECHANISM))
        for key, expected in stated:
            if data.get(key, expected) != expected:
                raise ConfigError(fmt(f"ledger.{key}", repr(expected), data.get(key),
                                      "privtune accounts only Poisson-sampled Gaussian steps under "
                                      "add/remove."))
        if data.get("version", VERSION) > VERSION:
            raise ConfigError(fmt("ledger.version", f"<= {VERSION}", data.get("version"),
                                  "Upgrade privtune."))
        ledger = cls()
        for i, e in enumerate(data["entries"]):
            if not isinstance(e, dict) or not {"noise_multiplier", "sample_rate", "steps"} <= set(e):
                raise ConfigError(fmt(f"ledger.entries[{i}]", "{noise_multiplier, sample_rate, steps}", e))
            ledger.record(noise_multiplier=e["noise_multiplier"], sample_rate=e["sample_rate"],
                          steps=e["steps"])
        if "steps" in data and data["steps"] != ledger.steps:
            raise ConfigError(fmt("ledger.steps", f"the sum of the entries' steps ({ledger.steps})",
                                  data["steps"], "The ledger file is corrupt."))
        return ledger
