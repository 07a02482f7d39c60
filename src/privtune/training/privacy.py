"""The privacy side of a DP run: the noise plan, the write-ahead ledger and the budget guard.

Every DP-SGD step is one invocation of the Poisson-subsampled Gaussian mechanism with noise multiplier sigma and
sample rate ``q = B / N``. Before a step runs, it is recorded in the ledger and the ledger is written to
``RUN/ledger.json`` atomically (*write-ahead*): whatever happens next — a crash, a SIGKILL — the ledger never counts
fewer invocations than were executed. A step executed again after a resume is a new invocation (fresh sampling and
noise, see :mod:`privtune.training.sampling`) and is counted again.

The *budget guard* allows a step only if the certified epsilon of the ledger extended by that step stays within the
target (:func:`privtune.accounting.max_steps`, computed once per session and counted down). The research-only
``edgeworth-estimate`` calibration cannot meet its target; its guard enforces the certified epsilon its noise costs
over the planned steps plus the reserve, stated in run.json up front (:mod:`.estimate_calibration`).

Resume never shrinks the ledger: ``ledger.json`` carries the run's ``run_id`` (as run.json and every checkpoint's
copy do), and :meth:`PrivacyState.load` refuses a ledger that is missing while the run has taken steps, damaged,
from another run, or shorter than the steps a checkpoint or run.json records (:class:`~privtune.errors.ResumeError`).

Noise from a target: sigma is the smallest noise whose certified epsilon after ``steps + reserve`` steps meets the
target (:func:`privtune.accounting.calibrate_noise`). The *reserve* (default: the checkpoint interval) is budget kept
for steps executed again after one crash, so that a resumed run still completes its planned steps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privtune.errors import BudgetError, ConfigError, ResumeError, fmt
from privtune.utils.fsio import atomic_write_json

LEDGER_FILE = "ledger.json"


@dataclass
class PrivacyPlan:
    """Fixed for the life of a run (stored in run.json; a resume never recalibrates)."""

    noise_multiplier: float
    sample_rate: float
    delta: float
    max_grad_norm: float
    accountant: str
    target_epsilon: float | None
    calibrated: bool               # sigma from calibrate_noise (else given)
    calibrated_steps: int | None   # planned steps + reserve
    reserve_steps: int
    secure_rng: bool
    noise_calibration: str = "certified"   # or "edgeworth-estimate" (research only, :mod:`.estimate_calibration`)
    guard_epsilon: float | None = None     # the guard's certified limit when it is not the target (estimate mode)
    estimate: dict[str, Any] | None = None  # estimate mode: sigma_EW, the certified sigma, claimed/certified epsilon
    noise_seed: int | None = None          # reproducible noise and masks (tests, debugging): no guarantee against
                                           # anyone who knows it (:mod:`privtune.training.randomness`)

    @property
    def budget_epsilon(self) -> float | None:
        """The certified epsilon the budget guard enforces: the target, or (estimate mode) ``guard_epsilon``."""
        return self.guard_epsilon if self.guard_epsilon is not None else self.target_epsilon

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PrivacyPlan":
        return cls(**d)


def plan_privacy(*, epsilon: float | None, delta: float, noise_multiplier: float | None, max_grad_norm: float,
                 sample_rate: float, steps: int, reserve: int, accountant: str, secure_rng: bool,
                 dataset_size: int | None = None, noise_calibration: str = "certified",
                 noise_seed: int | None = None) -> PrivacyPlan:
    """Decide sigma: given directly, or calibrated (certified) to ``epsilon`` over ``steps + reserve`` steps.

    An estimate accountant (Edgeworth) may steer the calibration; the accounting module then returns the noise whose
    *certified* epsilon meets the target, and the budget guard and run.json's ``epsilon`` use the certified bound.
    """
    from privtune.accounting import ACCOUNTANTS, calibrate_noise

    if accountant not in ACCOUNTANTS:
        ACCOUNTANTS.get(accountant)
    if noise_calibration == "edgeworth-estimate":
        if noise_multiplier is not None or epsilon is None:
            raise ConfigError(fmt("--noise-calibration edgeworth-estimate", "used with --epsilon and without "
                                  "--noise-multiplier (it chooses sigma from the target)", noise_multiplier))
        from privtune.training.estimate_calibration import calibrate_edgeworth_estimate

        est = calibrate_edgeworth_estimate(epsilon=epsilon, delta=delta, sample_rate=sample_rate, steps=steps,
                                           reserve=reserve)
        return PrivacyPlan(noise_multiplier=est.noise_multiplier, sample_rate=sample_rate, delta=delta,
                           max_grad_norm=max_grad_norm, accountant=accountant, target_epsilon=epsilon,
                           calibrated=True, calibrated_steps=steps, reserve_steps=reserve, secure_rng=secure_rng,
                           noise_calibration=noise_calibration, guard_epsilon=est.guard_epsilon,
                           estimate=est.to_dict(), noise_seed=noise_seed)
    if noise_multiplier is None:
        if epsilon is None:
            raise ConfigError(fmt("--epsilon", "given for a DP method (or give --noise-multiplier)", None))
        cal = calibrate_noise(target_epsilon=epsilon, delta=delta, sample_rate=sample_rate, steps=steps + reserve,
                              accountant=accountant, dataset_size=dataset_size)
        return PrivacyPlan(noise_multiplier=float(cal.noise_multiplier), sample_rate=sample_rate, delta=delta,
                           max_grad_norm=max_grad_norm, accountant=accountant, target_epsilon=epsilon,
                           calibrated=True, calibrated_steps=steps + reserve, reserve_steps=reserve,
                           secure_rng=secure_rng, noise_seed=noise_seed)
    return PrivacyPlan(noise_multiplier=float(noise_multiplier), sample_rate=sample_rate, delta=delta,
                       max_grad_norm=max_grad_norm, accountant=accountant, target_epsilon=epsilon,
                       calibrated=False, calibrated_steps=None, reserve_steps=reserve, secure_rng=secure_rng,
                       noise_seed=noise_seed)


def privacy_warnings(plan: PrivacyPlan | None, *, dataset_size: int, unit: str = "record") -> list[str]:
    """What weakens or voids the guarantee of a run with this plan, one readable line each (run.json
    ``privacy_warnings``, the CLI and the report show them). ``unit``: the privacy unit (``record`` or ``user``)
    that ``dataset_size`` counts."""
    if plan is None:
        return []
    out = []
    what, one, whole = (("training records", "one record", "whole records") if unit == "record" else
                        ("users", "all records of one user", "all records of a user"))
    if plan.delta >= 1.0 / dataset_size:
        out.append(f"delta {plan.delta:g} is not below 1/N = {1.0 / dataset_size:.3g} (N = {dataset_size} {what}): "
                   f"a mechanism that publishes {one} in full meets (0, 1/N)-DP, so this "
                   f"(epsilon, delta) guarantee allows {whole} to leak. Use delta well below 1/N, e.g. "
                   f"{0.1 / dataset_size:.1g}.")
    if plan.noise_seed is not None:
        out.append(f"reproducible DP run (--noise-seed {plan.noise_seed}): its noise and Poisson sampling can be "
                   "regenerated from the seed stored in run.json, and the (epsilon, delta) guarantee does not hold "
                   "against anyone who knows it. For tests and debugging only.")
    if plan.noise_calibration == "edgeworth-estimate" and plan.estimate:
        from privtune.training.estimate_calibration import EstimateCalibration

        out.append(EstimateCalibration(**plan.estimate).warning(plan.target_epsilon))
    return out


class BudgetExhausted(Exception):
    """Internal signal: the next step would push the certified epsilon past the target."""


class PrivacyState:
    """The ledger of a run, persisted write-ahead, and the budget guard."""

    def __init__(self, plan: PrivacyPlan, run_dir: Path, ledger: Any | None = None, *, run_id: str | None = None,
                 persist: bool = True):
        from privtune.accounting import Ledger

        self.plan = plan
        self.run_id = run_id
        self.persist = persist  # False on the ranks > 0 of a multi-process run: rank 0 writes the one ledger
        self.path = Path(run_dir) / LEDGER_FILE
        self.ledger = ledger if ledger is not None else Ledger()
        self._allowed = self._compute_allowed()

    @classmethod
    def load(cls, plan: PrivacyPlan, run_dir: Path, *, run_id: str | None, steps_taken: int = 0,
             taken_by: str = "", persist: bool = True) -> "PrivacyState":
        """The ledger of a run being resumed, refused unless it is this run's and counts ``steps_taken`` steps at
        least (``taken_by`` says what records them: a checkpoint, run.json)."""
        path = Path(run_dir) / LEDGER_FILE
        if not path.is_file():
            if steps_taken:
                raise ResumeError(fmt(LEDGER_FILE, "present once a run has taken DP steps (it counts every one)",
                                      f"no {path} while {taken_by} records {steps_taken} steps",
                                      "Restore it from a backup: resuming without it would restart the privacy "
                                      "accounting from zero and under-count the epsilon spent."))
            return cls(plan, run_dir, run_id=run_id, persist=persist)
        ledger, found_id = read_ledger_file(path)
        if found_id != run_id:
            raise ResumeError(fmt(f"{LEDGER_FILE} run_id", f"this run's ({run_id})", found_id,
                                  f"{path} belongs to another run: restore this run's ledger."))
        if ledger.steps < steps_taken:
            raise ResumeError(fmt(LEDGER_FILE, f"at least as long as the {steps_taken} steps {taken_by} records",
                                  f"{ledger.steps} steps in {path}", "It is an older or foreign copy: restore the "
                                  "latest one. Resuming with it would under-count the epsilon spent."))
        return cls(plan, run_dir, ledger, run_id=run_id, persist=persist)

    def _compute_allowed(self) -> int | None:
        if self.plan.budget_epsilon is None:
            return None
        from privtune.accounting import max_steps

        return int(max_steps(ledger=self.ledger, noise_multiplier=self.plan.noise_multiplier,
                             sample_rate=self.plan.sample_rate, target_epsilon=self.plan.budget_epsilon,
                             delta=self.plan.delta, accountant=self.plan.accountant))

    @property
    def steps(self) -> int:
        return self.ledger.steps

    @property
    def remaining(self) -> int | None:
        """Further steps the budget allows (None: no target)."""
        return self._allowed

    def begin_step(self) -> int:
        """Guard, record and persist one step *before* it runs; returns its ledger index (1-based)."""
        if self._allowed is not None and self._allowed <= 0:
            raise BudgetExhausted()
        self.ledger.record(noise_multiplier=self.plan.noise_multiplier, sample_rate=self.plan.sample_rate, steps=1)
        self.save()
        if self._allowed is not None:
            self._allowed -= 1
        return self.ledger.steps

    def save(self) -> None:
        if not self.persist:
            return
        atomic_write_json(self.path, {"run_id": self.run_id, "ledger": self.ledger.to_dict(),
                                      "delta": self.plan.delta, "accountant": self.plan.accountant})

    def epsilon(self) -> Any:
        """The accountant's EpsilonResult for the ledger (None for an empty ledger); see :func:`certified`."""
        from privtune.accounting import get_accountant

        if self.ledger.steps == 0:
            return None
        return get_accountant(self.plan.accountant).epsilon(self.ledger, delta=self.plan.delta)


def read_ledger_file(path: Path) -> tuple[Any, str | None]:
    """(Ledger, run_id) of a ledger file; one-line :class:`ResumeError` naming the file when it is damaged."""
    from privtune.accounting import Ledger

    try:
        data = json.loads(Path(path).read_text("utf-8"))
        return Ledger.from_dict(data["ledger"]), data.get("run_id")
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # JSONDecodeError and ConfigError are ValueErrors
        raise ResumeError(fmt(str(path), "a whole privtune ledger file", f"{type(e).__name__}: {e}",
                              "It is truncated or corrupt: restore it from a backup.")) from None


def certified(result: Any) -> float:
    """The certified epsilon of an EpsilonResult: its own, or for an estimate the certified bound it carries."""
    return float(result.epsilon if result.certified else result.certified_epsilon)


def check_budget_feasible(plan: PrivacyPlan, planned: int) -> None:
    """With sigma given directly, refuse a target that cannot allow even one step."""
    if plan.budget_epsilon is None:
        return
    from privtune.accounting import Ledger, max_steps

    n = max_steps(ledger=Ledger(), noise_multiplier=plan.noise_multiplier, sample_rate=plan.sample_rate,
                  target_epsilon=plan.budget_epsilon, delta=plan.delta, accountant=plan.accountant)
    if n < 1:
        raise BudgetError(fmt("--epsilon", f"large enough for one step at sigma {plan.noise_multiplier:g}",
                              plan.target_epsilon, "Raise --epsilon or --noise-multiplier."))
