"""`--noise-calibration edgeworth-estimate` (EW-Tune's calibration, research only): what it costs is certified and
reported; an estimate never appears as the guarantee."""

import json
import warnings

import pytest

from _train_helpers import classification_dataset
from privtune.accounting import Ledger, get_accountant
from privtune.errors import ConfigError
from privtune.training.config import TrainConfig
from privtune.training.estimate_calibration import EWTUNE_LABEL, UnsafeCalibrationWarning
from privtune.training.privacy import PrivacyPlan, plan_privacy

Q, STEPS, RESERVE = 0.1, 30, 3


def _plan(calibration):
    return plan_privacy(epsilon=8.0, delta=1e-5, noise_multiplier=None, max_grad_norm=1.0, sample_rate=Q,
                        steps=STEPS, reserve=RESERVE, accountant="pld", secure_rng=False,
                        noise_calibration=calibration)


def test_estimate_sigma_is_smaller_and_its_certified_cost_is_stated():
    with pytest.warns(UnsafeCalibrationWarning, match="UNSAFE"):
        est = _plan("edgeworth-estimate")
    cert = _plan("certified")
    assert est.noise_multiplier < cert.noise_multiplier
    pld = get_accountant("pld")
    spent = pld.epsilon(Ledger.of(noise_multiplier=est.noise_multiplier, sample_rate=Q, steps=STEPS), delta=1e-5)
    assert spent.epsilon > 8.0 + 1.0  # at this small scale the estimate under-noises by more than one epsilon
    assert est.estimate["certified_epsilon"] == pytest.approx(spent.epsilon, rel=1e-6)
    assert est.estimate["claimed_epsilon"] == pytest.approx(8.0, abs=2e-3)
    assert est.guard_epsilon > est.estimate["certified_epsilon"] and est.budget_epsilon == est.guard_epsilon
    assert est.target_epsilon == 8.0 and cert.budget_epsilon == 8.0 and cert.guard_epsilon is None
    # the plan survives run.json unchanged (a resume never recalibrates); old plans load with the defaults
    assert PrivacyPlan.from_dict(json.loads(json.dumps(est.to_dict()))) == est
    old = {k: v for k, v in cert.to_dict().items() if k not in ("noise_calibration", "guard_epsilon", "estimate")}
    assert PrivacyPlan.from_dict(old).noise_calibration == "certified"


@pytest.mark.parametrize("kw,match", [
    (dict(noise_calibration="edgeworth"), "--noise-calibration"),
    (dict(method="lora", noise_calibration="edgeworth-estimate"), "DP method"),
    (dict(method="dp-rgp", noise_calibration="edgeworth-estimate", noise_multiplier=1.0), "without --noise-mult"),
])
def test_bad_calibration_options(tmp_path, kw, match):
    from privtune.training.session import make_plan

    data = classification_dataset(tmp_path / "cls")
    cfg = TrainConfig(data=str(data), task="classification", model="tiny:bert", batch_size=4, steps=2,
                      **({"epsilon": 8.0} if "noise_multiplier" not in kw else {}), **kw)
    with pytest.raises(ConfigError, match=match):
        make_plan(cfg)


def test_estimate_run_reports_the_certified_epsilon_it_spent(tmp_path):
    """The guard does not stop the run at the target; run.json's epsilon is the certified one (above the target),
    the estimate is beside it and labelled, and the warning travels with the run."""
    from privtune.training.run import train

    data = classification_dataset(tmp_path / "cls", n_train=40)
    kw = dict(data=str(data), task="classification", method="dp-rgp", model="tiny:bert", batch_size=4, epochs=1,
              max_length=24, epsilon=8.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsafeCalibrationWarning)
        rec = train(**kw, out=tmp_path / "a", noise_calibration="edgeworth-estimate").record
    assert rec["status"] == "completed" and rec["steps"] == rec["planned_steps"] == 10
    assert rec["noise_calibration"] == "edgeworth-estimate" and rec["epsilon_certified"] is True
    assert rec["epsilon"] > rec["target_epsilon"] and rec["target_met"] is False
    assert rec["epsilon"] <= rec["guard_epsilon"]
    assert rec["epsilon_estimate"] == pytest.approx(8.0, abs=2e-3) and rec["epsilon_estimate_certified"] is False
    assert rec["epsilon_estimate_accountant"] == EWTUNE_LABEL
    assert "UNSAFE" in rec["privacy_warning"] and f"{rec['epsilon']:.4g}" in rec["privacy_warning"]
    assert rec["noise_multiplier"] < rec["certified_noise_multiplier"]
    ref = train(**kw, out=tmp_path / "b").record
    assert ref["noise_calibration"] == "certified" and ref["target_met"] is True and ref["epsilon"] <= 8.0
    assert "privacy_warning" not in ref and "epsilon_estimate" not in ref
