"""examples/ewtune.toml: the EW-Tune study stays valid and keeps the protocol it documents (docs/ewtune.md)."""

import math
import re
from pathlib import Path

import pytest

from privtune.experiments.config import load_study, parse_study, tomllib

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ewtune.toml"


def test_example_validates_and_keeps_the_protocol():
    study = load_study(EXAMPLE)
    assert study.name == "ewtune"  # not a variant's name
    runs = {r.method: r for r in study.expand()}
    assert set(runs) == {"dp-rgp-ewtune", "dp-rgp", "dp-lora", "dp-fft", "rgp"}
    ew, cert = runs["dp-rgp-ewtune"], runs["dp-rgp"]
    assert ew.base_method == "dp-rgp" and ew.train_options["noise_calibration"] == "edgeworth-estimate"
    # the two dp-rgp arms differ in the noise calibration only
    assert {k: v for k, v in ew.train_options.items() if k != "noise_calibration"} == cert.train_options
    assert (ew.lr, ew.epochs, ew.seed) == (cert.lr, cert.epochs, cert.seed)
    for r in runs.values():
        assert r.train_options["task"] == "classification" and re.fullmatch(r"minilm(:[1-6])?", r.model)
        assert r.epsilon == (8 if r.private else None)
        if r.private:
            assert r.train_options["delta"] == 1e-5
    ds = study.datasets["sentiment"]
    assert ds.generator == "sentiment"
    q = study.train["batch_size"] / ds.options["train"]
    assert 0.05 <= q <= 0.1  # EW-Tune's large logical batch, scaled to the data


def test_example_shows_an_edgeworth_gap():
    """At the example's q and steps, σ from the Edgeworth estimate certifies more than the target: the study has a
    gap to measure (pure accounting, no training)."""
    pytest.importorskip("dp_accounting")
    import warnings

    from privtune.training.estimate_calibration import calibrate_edgeworth_estimate

    study = load_study(EXAMPLE)
    n, b = study.datasets["sentiment"].options["train"], study.train["batch_size"]
    steps = math.ceil(study.epochs[0] * n / b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = calibrate_edgeworth_estimate(epsilon=8.0, delta=1e-5, sample_rate=b / n, steps=steps, reserve=0)
    assert cal.noise_multiplier < cal.certified_noise_multiplier and cal.certified_epsilon > 8.5


@pytest.mark.slow
def test_shrunken_example_runs_and_reports(tmp_path):
    """The example end to end on a tiny model and a few records: every run completes; the report labels the claimed
    ε an estimate beside the certified one."""
    from privtune.experiments import run_sweep, write_report

    text = EXAMPLE.read_text("utf-8")
    text = re.sub(r"(?m)^models = .*$", 'models = ["tiny:bert"]', text)
    text = re.sub(r"(?m)^train = \d+", "train = 96", text)
    text = re.sub(r"(?m)^test = \d+", "test = 32", text)
    text = re.sub(r"(?m)^batch_size = \d+", "batch_size = 8", text)
    text = re.sub(r"(?m)^epochs = .*$", "epochs = [1]", text)
    text = re.sub(r"(?m)^max_length = \d+", "max_length = 32", text)
    text = re.sub(r"(?m)^physical_batch_size = \d+", "physical_batch_size = 8", text)
    study = parse_study(tomllib.loads(text), where="shrunken ewtune")
    result = run_sweep(study, out=tmp_path / "study", workers=0)
    assert result.to_dict()["failed"] == 0
    md = write_report(tmp_path / "study").markdown
    assert "dp-rgp-ewtune" in md and "(estimate)" in md
    assert re.search(r"claims ε = [\d.]+ \(estimate\) but its certified ε is", md)
