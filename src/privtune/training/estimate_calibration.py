"""``--noise-calibration edgeworth-estimate``: EW-Tune's noise calibration as its authors used it. Research only.

EW-Tune (Behnia et al. 2022) chooses the noise multiplier sigma so that its first-order Edgeworth accountant
(remove-one ordering) *estimates* epsilon = target after the planned steps. The estimate is not an upper bound; on the
GLUE settings its sigma has a certified (PLD) epsilon of 8.3 to 9.1 for a target of 8 (docs/accounting.md), and
more at small scale. This mode reproduces that choice so that its cost can be measured; it is never the default and
never presented as a guarantee:

- sigma_EW is the sigma at which the EW-Tune accountant's estimate over the planned steps equals ``--epsilon``
  (:func:`privtune.accounting.calibrate_noise` with that accountant reports it as ``edgeworth_noise_multiplier``);
- the run's ``epsilon`` in run.json is, as for every run, the *certified* epsilon of its own ledger — here above
  the target — with ``target_met: false``; the estimate is beside it as ``epsilon_estimate`` with its accountant;
- the budget guard does not stop the run at the target (sigma_EW cannot reach it) but at ``guard_epsilon``, the
  certified epsilon of the planned steps plus the resume reserve at sigma_EW, stated in run.json before the first
  step: the run spends what this choice of noise costs, says so, and no more;
- run.json carries ``privacy_warning``, ``certified_noise_multiplier`` (the sigma a certified calibration picks for
  the same run) and the CLI prints the warning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

NOISE_CALIBRATIONS = ("certified", "edgeworth-estimate")
#: the EW-Tune paper's accountant: first-order Edgeworth expansion, remove-one ordering only
EWTUNE_ACCOUNTANT: dict[str, Any] = {"order": 1, "orderings": "remove"}
EWTUNE_LABEL = "edgeworth (order 1, remove ordering: the EW-Tune accountant)"


class UnsafeCalibrationWarning(UserWarning):
    """Noise calibrated on an estimate: the certified epsilon of the run exceeds its target."""


@dataclass(frozen=True)
class EstimateCalibration:
    noise_multiplier: float            # sigma_EW: the estimate equals the target over the planned steps
    certified_noise_multiplier: float  # the certified calibration of the same planned steps
    claimed_epsilon: float             # the EW-Tune estimate at sigma_EW over the planned steps (the target)
    certified_epsilon: float           # certified epsilon of the planned steps at sigma_EW
    guard_epsilon: float               # certified epsilon of planned + reserve steps at sigma_EW: the guard's limit
    certified_by: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def warning(self, target: float) -> str:
        return (f"UNSAFE research setting (--noise-calibration edgeworth-estimate): sigma {self.noise_multiplier:.4g} "
                f"was chosen so that an Edgeworth *estimate* reads epsilon = {target:g}; its certified epsilon over "
                f"the planned steps is {self.certified_epsilon:.4g} (certified calibration: sigma "
                f"{self.certified_noise_multiplier:.4g}). Report the certified value, not the target.")


def ewtune_accountant() -> Any:
    from privtune.accounting import get_accountant

    return get_accountant("edgeworth", **EWTUNE_ACCOUNTANT)


def calibrate_edgeworth_estimate(*, epsilon: float, delta: float, sample_rate: float, steps: int,
                                 reserve: int, certifier: str = "pld") -> EstimateCalibration:
    """sigma_EW for ``steps`` planned steps and what it certifies (see the module docstring)."""
    from privtune.accounting import Ledger, calibrate_noise, get_accountant

    cal = calibrate_noise(target_epsilon=epsilon, delta=delta, sample_rate=sample_rate, steps=steps,
                          accountant=ewtune_accountant())
    sigma = float(cal.edgeworth_noise_multiplier)
    acc = get_accountant(certifier)

    def certified(n: int) -> float:
        return float(acc.epsilon(Ledger.of(noise_multiplier=sigma, sample_rate=sample_rate, steps=n),
                                 delta=delta).epsilon)

    claimed = ewtune_accountant().estimate(Ledger.of(noise_multiplier=sigma, sample_rate=sample_rate, steps=steps),
                                           delta=delta)
    out = EstimateCalibration(noise_multiplier=sigma, certified_noise_multiplier=float(cal.noise_multiplier),
                              claimed_epsilon=float(claimed), certified_epsilon=certified(steps),
                              guard_epsilon=certified(steps + reserve), certified_by=acc.name)
    warnings.warn(out.warning(epsilon), UnsafeCalibrationWarning, stacklevel=2)
    return out


def claimed_fields(ledger: Any, delta: float) -> dict[str, Any]:
    """The EW-Tune estimate of a run's ledger, labelled as an estimate (run.json, beside the certified epsilon)."""
    return {"epsilon_estimate": float(ewtune_accountant().estimate(ledger, delta=delta)),
            "epsilon_estimate_accountant": EWTUNE_LABEL, "epsilon_estimate_certified": False}


def plan_fields(plan: Any) -> dict[str, Any]:
    """run.json fields known before the first step (``plan``: a PrivacyPlan or None)."""
    if plan is None:
        return {}
    out: dict[str, Any] = {"noise_calibration": plan.noise_calibration}
    if plan.noise_calibration == "edgeworth-estimate" and plan.estimate:
        est = EstimateCalibration(**plan.estimate)
        out.update(guard_epsilon=plan.guard_epsilon, certified_noise_multiplier=est.certified_noise_multiplier,
                   privacy_warning=est.warning(plan.target_epsilon))
    return out


def final_fields(plan: Any, ledger: Any, epsilon: float | None) -> dict[str, Any]:
    """run.json fields at the end: whether the certified epsilon met the target, and the claim of an estimate run."""
    if plan is None or epsilon is None:
        return {}
    out: dict[str, Any] = {}
    if plan.target_epsilon is not None:
        out["target_met"] = bool(epsilon <= plan.target_epsilon)
    if plan.noise_calibration == "edgeworth-estimate" and ledger.steps:
        out.update(claimed_fields(ledger, plan.delta))
    return out
