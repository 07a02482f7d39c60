"""Privacy accounting: a ledger of what happened, accountants that interpret it, and calibration.

    from privtune.accounting import Ledger, get_accountant, calibrate_noise, max_steps

    ledger = Ledger.of(noise_multiplier=1.1, sample_rate=0.01, steps=2000)
    get_accountant("pld").epsilon(ledger, delta=1e-5).epsilon       # certified upper bound
    calibrate_noise(target_epsilon=8, delta=1e-5, sample_rate=0.01, steps=2000).noise_multiplier

Accountants (registry ``ACCOUNTANTS``): ``rdp``, ``pld`` and ``prv`` are certified upper bounds; ``edgeworth``
is an estimate and always carries the certified (PLD) ε of the same ledger. See docs/accounting.md.
"""

from privtune.accounting.base import ACCOUNTANTS, Accountant, EpsilonResult, certified_names, get_accountant
from privtune.accounting.events import (ComposedEvent, Event, GaussianEvent, PoissonSampledEvent,
                                        SelfComposedEvent, dp_sgd_event)
from privtune.accounting.ledger import Ledger, LedgerEntry

# Registration happens on import: one module per accountant.
from privtune.accounting import rdp as _rdp  # noqa: E402,F401
from privtune.accounting import pld as _pld  # noqa: E402,F401
from privtune.accounting import prv as _prv  # noqa: E402,F401
from privtune.accounting import edgeworth as _edgeworth  # noqa: E402,F401

from privtune.accounting.calibrate import CalibrationResult, calibrate_noise, max_steps  # noqa: E402

__all__ = ["ACCOUNTANTS", "Accountant", "CalibrationResult", "ComposedEvent", "EpsilonResult", "Event",
           "GaussianEvent", "Ledger", "LedgerEntry", "PoissonSampledEvent", "SelfComposedEvent",
           "calibrate_noise", "certified_names", "dp_sgd_event", "get_accountant", "max_steps"]
