"""What weakens a run's guarantee (δ >= 1/N, a known noise seed) is recorded, printed as one line, and reported."""

import json
import warnings

import pytest

from _train_helpers import lm_dataset
from privtune.cli import main
from privtune.experiments.report import build_report
from privtune.experiments.store import make_row
from privtune.training.run import train

pytest.importorskip("privtune.accounting")

N = 24


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return lm_dataset(tmp_path_factory.mktemp("d") / "cs", n_train=N)


def _grid(method, eps):
    return {"dataset": "cs", "model": "tiny:gpt_neox", "method": method, "epsilon": eps, "lora_r": 2, "lr": None,
            "epochs": None, "seed": 0}


def test_delta_at_least_one_over_n_is_one_readable_line_in_the_record_and_the_report(data, tmp_path, capsys):
    """Before: a raw AccountingWarning, exit 0, and nothing in run.json or the report."""
    out = tmp_path / "r"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            main(["train", "--data", str(data), "--method", "dp-lora", "--model", "tiny:gpt_neox", "--steps", "2",
                  "--batch-size", "4", "--max-length", "24", "--lora-r", "2", "--epsilon", "8", "--delta", "0.05",
                  "--out", str(out)])
        except SystemExit as e:
            assert e.code in (0, None)
    assert not [w for w in caught if "delta" in str(w.message)]      # no raw Python warning
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "privacy warning" in ln]
    assert len(lines) == 1 and lines[0].startswith("privacy warning: delta 0.05 is not below 1/N = 0.0417 (N = 24")
    rec = json.loads((out / "run.json").read_text())
    (warning,) = rec["privacy_warnings"]
    assert "1/N" in warning and rec["epsilon"] <= 8.0 and rec["epsilon_certified"] is True

    rows = [make_row(run_id="dp", status="completed", grid=_grid("dp-lora", 8.0), run_dir="runs/dp", run_json=rec),
            make_row(run_id="plain", status="completed", grid=_grid("lora", None), run_dir="runs/plain",
                     run_json={**rec, "private": False, "method": "lora", "privacy_warnings": [], "epsilon": None})]
    rep = build_report(rows, study={"name": "s"})
    assert rep.html.count(warning) >= 2    # in the findings and under the accounting table
    assert "Privacy warnings" in rep.html and "see its privacy warning" in rep.html
    assert f"Privacy warning for dp-lora ε=8: {warning}" in rep.markdown


def test_given_noise_multiplier_warns_too(data, tmp_path):
    """Before, only noise calibration checked δ: a run with --noise-multiplier got no warning at all."""
    rec = train(data=str(data), method="dp-lora", model="tiny:gpt_neox", noise_multiplier=1.0, delta=0.1, steps=1,
                batch_size=4, max_length=24, lora_r=2, eval_test=False, out=tmp_path / "r").record
    assert len(rec["privacy_warnings"]) == 1 and "delta 0.1 is not below 1/N" in rec["privacy_warnings"][0]
    ok = train(data=str(data), method="dp-lora", model="tiny:gpt_neox", noise_multiplier=1.0, delta=1 / (N + 1),
               steps=1, batch_size=4, max_length=24, lora_r=2, eval_test=False, out=tmp_path / "ok").record
    assert ok["privacy_warnings"] == []
