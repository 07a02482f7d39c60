"""One interface over all accountants: ε for δ, δ for ε, over a :class:`~privtune.accounting.ledger.Ledger`.

Definitions. A mechanism M is (ε, δ)-DP under the add/remove-one relation when for all neighbouring D, D' and
all events S, P[M(D) ∈ S] <= e^ε P[M(D') ∈ S] + δ. For a dominating pair (P, Q) of one step, the tight curve
is the hockey-stick divergence δ(ε) = E_Q[(1 − e^(ε − L))₊] with L = log(dQ/dP) (Balle & Wang 2018; Gopi et
al. 2021). ε(δ) is its inverse. ε is in nats; δ is a probability.

An accountant is ``certified`` when the ε it returns is an upper bound on the true ε(δ) of the ledger (RDP,
PLD pessimistic, PRV upper). Anything else is an *estimate* and is labelled so everywhere (Edgeworth).

Cross-check. PLD and PRV discretise the privacy-loss distribution; their bounds hold only while the numerics
do (grid, truncation, floating point), which fails at extreme step counts (PRV at 10⁸ steps once printed 72.8
where RDP certifies 10,036). RDP is analytic, cheap at any step count and a valid (looser) bound everywhere,
so every result of an accountant with ``rdp_cross_check`` is compared with it: a non-finite ε or one above
RDP's is replaced by RDP's, labelled (``capped_by: "rdp"``, with the accountant's own value in
``uncapped_epsilon``). The minimum of two upper bounds is an upper bound, and of two ε that grow with the
steps one that grows. Failures that make an ε too *low* cannot be caught this way; each accountant refuses
such ledgers up front with an :class:`AccountingRangeError` naming its range.

Adding an accountant: subclass :class:`Accountant` in one new file, implement ``_epsilon`` / ``_delta``,
decorate with ``@ACCOUNTANTS.register("name")`` and import it in ``privtune/accounting/__init__.py``.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from privtune.accounting.events import _real, check_delta
from privtune.accounting.ledger import MECHANISM, NEIGHBOURING, SAMPLING, Ledger, LedgerEntry
from privtune.errors import ConfigError, fmt
from privtune.registry import Registry


class AccountingRangeError(ConfigError):
    """The ledger lies outside the range where this accountant's numerics are valid (one line, names the range
    and the accountant to use instead). Calibration and the step budget treat it as "cannot certify"."""


@dataclass(frozen=True)
class EpsilonResult:
    """The ε an accountant gives a ledger at a target δ.

    For a homogeneous ledger ``noise_multiplier`` and ``sample_rate`` are numbers; for a heterogeneous one
    they are lists aligned with the ledger's entries and ``to_dict`` adds ``entry_steps`` (steps per entry),
    while ``steps`` is always the total.
    """

    accountant: str
    epsilon: float
    delta: float
    certified: bool
    entries: tuple[LedgerEntry, ...]
    order: int | None = None               # Edgeworth expansion order
    certified_epsilon: float | None = None  # for estimates: the certified (PLD) ε of the same ledger
    time_s: float | None = None             # wall time of this computation, seconds
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return sum(e.steps for e in self.entries)

    @property
    def kind(self) -> str:
        return "certified" if self.certified else "estimate"

    @property
    def noise_multiplier(self) -> float | list[float] | None:
        return _uniform([e.noise_multiplier for e in self.entries])

    @property
    def sample_rate(self) -> float | list[float] | None:
        return _uniform([e.sample_rate for e in self.entries])

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "accountant": self.accountant, "epsilon": _num(self.epsilon), "delta": self.delta,
            "noise_multiplier": self.noise_multiplier, "sample_rate": self.sample_rate, "steps": self.steps,
            "certified": self.certified, "kind": self.kind,
        }
        if len(self.entries) > 1:
            out["entry_steps"] = [e.steps for e in self.entries]
        if self.order is not None:
            out["order"] = self.order
        if self.certified_epsilon is not None:
            out["certified_epsilon"] = _num(self.certified_epsilon)
        if self.time_s is not None:
            out["time_s"] = self.time_s
        out.update(self.details)
        return out


def _cap_epsilon(extra: dict[str, Any], rdp_epsilon: float) -> dict[str, Any]:
    """``extra`` with its ε replaced by RDP's when it is not finite or above it (see the module docstring)."""
    eps = float(extra["epsilon"])
    out = {**extra, "rdp_epsilon": _num(rdp_epsilon)}
    if math.isnan(eps) or eps > rdp_epsilon:
        own = "nan" if math.isnan(eps) else _num(eps)
        out.update(epsilon=rdp_epsilon, capped_by="rdp", uncapped_epsilon=own)
    return out


def _uniform(values: list[float]) -> float | list[float] | None:
    if not values:
        return None
    return values[0] if len(set(values)) == 1 else values


def _num(x: float) -> float | str:
    """JSON has no infinity: an infinite ε is written as the string "inf"."""
    return x if math.isfinite(x) else "inf"


class Accountant(ABC):
    """Interprets a ledger of Poisson-subsampled Gaussian steps (add/remove-one neighbours).

    Subclasses set ``name`` and ``certified`` and implement ``_epsilon(ledger, delta) -> dict`` (key
    ``"epsilon"`` plus optional extra fields) and ``_delta(ledger, epsilon) -> float``. Validation, timing,
    the empty ledger (ε = 0, δ = 0: nothing was released) and the result type are handled here, once.
    """

    name: ClassVar[str]
    certified: ClassVar[bool]
    rdp_cross_check: ClassVar[bool] = False  # numerical bounds (PLD, PRV): capped by the RDP bound

    def supports(self, ledger: Ledger) -> bool:
        """True when this accountant can interpret ``ledger`` (Poisson sampling, add/remove, Gaussian
        steps)."""
        return (isinstance(ledger, Ledger) and ledger.neighbouring == NEIGHBOURING
                and ledger.sampling == SAMPLING and ledger.mechanism == MECHANISM)

    def epsilon(self, ledger: Ledger, *, delta: float) -> EpsilonResult:
        """The smallest ε (for certified accountants: an upper bound on it) such that the ledger is (ε,
        δ)-DP."""
        delta = check_delta(delta)
        self._check(ledger)
        start = time.perf_counter()
        if ledger.is_empty:  # nothing released: exactly (0, 0)-DP, for every accountant
            extra: dict[str, Any] = {"epsilon": 0.0}
            if not self.certified:
                extra["certified_epsilon"] = 0.0
        else:
            extra = self._epsilon(ledger, delta)
            if self.rdp_cross_check:
                extra = _cap_epsilon(extra, ACCOUNTANTS.get("rdp")().epsilon(ledger, delta=delta).epsilon)
        eps = float(extra.pop("epsilon"))
        if math.isnan(eps) or eps < 0:
            raise RuntimeError(f"{self.name} accountant returned epsilon={eps} for {ledger!r}, delta={delta}")
        known = {k: extra.pop(k) for k in ("order", "certified_epsilon") if k in extra}
        return EpsilonResult(accountant=self.name, epsilon=eps, delta=delta, certified=self.certified,
                             entries=ledger.entries, time_s=time.perf_counter() - start, details=extra,
                             **known)

    def delta(self, ledger: Ledger, *, epsilon: float) -> float:
        """The δ at which the ledger is (ε, δ)-DP (certified accountants: an upper bound on the tight
        δ(ε))."""
        eps = _real("epsilon", epsilon)
        if eps < 0:
            raise ConfigError(fmt("epsilon", ">= 0", epsilon))
        self._check(ledger)
        if ledger.is_empty:
            return 0.0
        d = float(self._delta(ledger, eps))
        if self.rdp_cross_check:
            bound = ACCOUNTANTS.get("rdp")().delta(ledger, epsilon=eps)
            d = bound if not math.isfinite(d) or d > bound else d
        return float(min(1.0, max(0.0, d)))

    def prepare(self) -> None:
        """Import heavy dependencies now, so that the ``time_s`` of results measures computation only."""

    def _check(self, ledger: Ledger) -> None:
        if not isinstance(ledger, Ledger):
            raise ConfigError(fmt("ledger", "a privtune Ledger", type(ledger).__name__))
        if not self.supports(ledger):
            raise ConfigError(fmt("ledger", f"supported by the {self.name} accountant", ledger))

    @abstractmethod
    def _epsilon(self, ledger: Ledger, delta: float) -> dict[str, Any]:
        ...

    @abstractmethod
    def _delta(self, ledger: Ledger, epsilon: float) -> float:
        ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


ACCOUNTANTS: Registry[type[Accountant]] = Registry("accountant")


def get_accountant(name: str, **options: Any) -> Accountant:
    """Instantiate a registered accountant, e.g. ``get_accountant("edgeworth", order=2)``."""
    cls = ACCOUNTANTS.get(name)
    try:
        return cls(**options)
    except TypeError as e:
        raise ConfigError(fmt("options", f"valid keyword options of the {name} accountant", sorted(options),
                              str(e))) from None


def certified_names() -> list[str]:
    """Names of the accountants whose ε is an upper bound."""
    return [n for n in ACCOUNTANTS.names() if ACCOUNTANTS.get(n).certified]
