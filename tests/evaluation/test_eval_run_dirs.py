"""End to end: `privtune train` run directories evaluated by `evaluate_run` and `privtune eval`."""

import json

import pytest

from privtune.cli import main
from privtune.data.schema import write_dataset
from privtune.data.synth import generate
from privtune.errors import ConfigError
from privtune.evaluation.evaluate import EvalConfig, evaluate_run
from privtune.evaluation.extraction import ExtractionConfig
from privtune.training.run import train

FAST = dict(steps=3, batch_size=4, max_length=64, checkpoint_every=2)
QUICK = EvalConfig(max_records=12, exposure_method="extrapolated", exposure_samples=300,
                   extraction=ExtractionConfig(n_prompts=6, n_reconstruction=6, k_distractors=3))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    splits, info = generate("customersim", n_train=16, n_test=8, seed=0, canary_repeats=2, audit_canaries=8)
    return write_dataset(tmp_path_factory.mktemp("data") / "cs", splits, info)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("runs")
    train(data=str(data), method="lora", model="tiny:gpt_neox", out=root / "lora", **FAST)
    train(data=str(data), method="dp-lora", model="tiny:gpt_neox", out=root / "dp", epsilon=8.0, delta=1e-5,
          **FAST)
    return root


def test_evaluate_run_writes_eval_json(runs, data):
    res = evaluate_run(runs / "lora", data, config=QUICK)
    on_disk = json.loads((runs / "lora" / "eval.json").read_text())
    assert on_disk == json.loads(json.dumps(res))
    assert res["stages"] == ["privacy", "utility", "exposure", "mia", "extraction", "audit", "users"]
    assert res["users"]["available"] is False and res["users"]["reason"]  # the generator names no owner (yet)
    assert res["run"]["method"] == "lora" and res["run"]["epsilon"] is None
    assert res["exposure"]["method"] == "extrapolated" and res["exposure"]["estimate"] is True
    assert res["audit"]["certified_epsilon"] is None and res["audit"]["consistent"] is None
    for key in ("sensitive_train_nll", "sensitive_train_nll_base", "sensitive_test_nll"):
        assert isinstance(res["privacy"][key], float)


def test_dp_run_audit_reads_its_certified_epsilon(runs, data):
    """The audit of a DP run compares with the run's certified epsilon and delta. Whether it is consistent is not
    asserted here: 8 audit canaries bound epsilon by 0.40 at most, which can never contradict epsilon 8 (the
    comparison itself is tested at its boundary in test_eval_audit.py)."""
    res = evaluate_run(runs / "dp", data, only="audit,utility", config=QUICK)
    rec = json.loads((runs / "dp" / "run.json").read_text())
    assert res["audit"]["certified_epsilon"] == rec["epsilon"] <= 8.0 + 1e-9
    assert res["audit"]["delta"] == rec["delta"]
    assert res["stages"] == ["utility", "audit"]


def test_cli_eval_json_and_partial_update(runs, data, capsys):
    first = evaluate_run(runs / "lora", data, only="utility", config=QUICK)
    main(["eval", str(runs / "lora"), "--data", str(data), "--only", "mia", "--max-records", "10", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert "mia" in out and out["mia"]["loss"]["n_members"] == 10
    on_disk = json.loads((runs / "lora" / "eval.json").read_text())
    assert on_disk["mia"] == out["mia"] and on_disk["utility"] == first["utility"]  # earlier stage kept


def test_unfinished_run_is_refused_without_writing(runs, data, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(runs / "dp", bad)
    shutil.rmtree(bad / "model")
    (bad / "eval.json").unlink(missing_ok=True)
    with pytest.raises(ConfigError, match="finished run with a model"):
        evaluate_run(bad, data)
    assert not (bad / "eval.json").exists()
