"""Results that must not replace each other, and damaged run directories (issue 18): eval on data the run was not
trained on, `--only` over an unreadable eval.json, missing or truncated model files."""

import json
import shutil

import pytest

from privtune.cli import main
from privtune.data.schema import write_dataset
from privtune.data.synth import generate
from privtune.errors import ConfigError, ModelLoadError
from privtune.evaluation.evaluate import EvalConfig, evaluate_run

QUICK = EvalConfig(max_records=8)


def _data(root, seed):
    splits, info = generate("customersim", n_train=12, n_test=6, seed=seed, canary_repeats=0)
    return write_dataset(root / f"cs{seed}", splits, info)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from privtune.training.run import train

    root = tmp_path_factory.mktemp("evalsafety")
    data, other = _data(root, 0), _data(root, 1)
    run = root / "run"
    train(data=str(data), method="lora", model="tiny:gpt_neox", out=run, steps=2, batch_size=4, max_length=48)
    evaluate_run(run, data, only="privacy,utility", config=QUICK)
    return run, data, other


@pytest.fixture
def run_copy(setup, tmp_path):
    run, data, other = setup
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst, data, other


def test_eval_on_other_data_is_refused_and_eval_json_kept(run_copy):
    run, _, other = run_copy
    before = (run / "eval.json").read_text()
    with pytest.raises(ConfigError, match="--other-data"):
        evaluate_run(run, other, only="utility", config=QUICK)
    assert (run / "eval.json").read_text() == before


def test_eval_on_other_data_when_intended_goes_beside_eval_json(run_copy):
    run, data, other = run_copy
    before = (run / "eval.json").read_text()
    res = evaluate_run(run, other, only="utility", config=QUICK, other_data=True)
    assert (run / "eval.json").read_text() == before              # the run's own results untouched
    files = list((run / "eval-other").iterdir())
    assert len(files) == 1 and json.loads(files[0].read_text()) == json.loads(json.dumps(res))
    rec = json.loads((run / "run.json").read_text())
    ds = res["dataset"]
    assert ds["trained_on"] is False and ds["run_dataset_hash"] == rec["dataset_hash"] != ds["content_hash"]
    assert ds["content_hash"][:12] in files[0].name
    own = json.loads(before)
    assert own["dataset"]["content_hash"] == rec["dataset_hash"] and own["stages"] == ["privacy", "utility"]


def test_dp_run_without_a_published_hash_still_refuses_other_data(tmp_path_factory, setup):
    """A DP run keeps its dataset hash out of run.json (issue 15); the check must use the internal copy."""
    from privtune.training.run import train

    _, data, other = setup
    run = tmp_path_factory.mktemp("dprun") / "run"
    train(data=str(data), method="dp-lora", model="tiny:gpt_neox", out=run, steps=1, batch_size=4, max_length=48,
          noise_multiplier=1.0)
    assert json.loads((run / "run.json").read_text())["dataset_hash"] is None
    with pytest.raises(ConfigError, match="--other-data"):
        evaluate_run(run, other, only="utility", config=QUICK, write=False)


def test_cli_eval_other_data_flag(run_copy, capsys):
    run, _, other = run_copy
    with pytest.raises(SystemExit) as e:
        main(["eval", str(run), "--data", str(other), "--only", "utility", "--max-records", "6"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--other-data" in err and len(err.strip().splitlines()) == 1
    main(["eval", str(run), "--data", str(other), "--only", "utility", "--max-records", "6", "--other-data"])
    assert "eval-other" in capsys.readouterr().err


@pytest.mark.parametrize("content", ['{"stages": ["privacy", "mi', "", "[1, 2]"])
def test_only_over_an_unreadable_eval_json_is_refused_before_any_work(run_copy, monkeypatch, content):
    """Issue 15: `eval --only` used to replace an unreadable eval.json, losing the other stages."""
    import privtune.evaluation.evaluate as ev

    run, data, _ = run_copy
    (run / "eval.json").write_text(content)
    monkeypatch.setattr(ev, "_load_run", lambda *a: pytest.fail("models loaded before the check"))
    with pytest.raises(ConfigError, match="eval.json"):
        evaluate_run(run, data, only="mia", config=QUICK)
    assert (run / "eval.json").read_text() == content


def test_only_keeps_the_other_stages(run_copy):
    run, data, _ = run_copy
    before = json.loads((run / "eval.json").read_text())
    res = evaluate_run(run, data, only="mia", config=QUICK)
    assert res["stages"] == ["privacy", "utility", "mia"]
    assert res["privacy"] == before["privacy"] and res["utility"] == before["utility"]


def test_without_only_an_unreadable_eval_json_is_rewritten_whole(run_copy):
    run, data, _ = run_copy
    (run / "eval.json").write_text("{broken")
    res = evaluate_run(run, data, only=None, config=EvalConfig(max_records=6, exposure_method="extrapolated",
                                                                  exposure_samples=50))
    assert json.loads((run / "eval.json").read_text())["stages"] == res["stages"]


@pytest.mark.parametrize("damage", ["missing adapter", "truncated adapter", "empty adapter", "broken config",
                                    "missing tokenizer"])
def test_damaged_model_files_are_one_line_errors(run_copy, damage, capsys):
    run, data, _ = run_copy
    m = run / "model"
    if damage == "missing adapter":
        (m / "adapter_model.safetensors").unlink()
    elif damage == "truncated adapter":
        w = m / "adapter_model.safetensors"
        w.write_bytes(w.read_bytes()[:-64])
    elif damage == "empty adapter":
        (m / "adapter_model.safetensors").write_bytes(b"")
    elif damage == "broken config":
        (m / "adapter_config.json").write_text('{"r": 8, "lora_al')
    else:
        (m / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match="saved model"):
        evaluate_run(run, data, only="utility", config=QUICK)
    with pytest.raises(SystemExit) as e:
        main(["eval", str(run), "--data", str(data), "--only", "utility"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_damaged_full_model_is_a_one_line_error(tmp_path, setup):
    from privtune.training.run import load_trained, train

    _, data, _ = setup
    out = tmp_path / "fft"
    train(data=str(data), method="fft", model="tiny:gpt_neox", out=out, steps=1, batch_size=4, max_length=32)
    w = out / "model" / "model.safetensors"
    w.write_bytes(w.read_bytes()[: len(w.read_bytes()) // 2])
    with pytest.raises(ModelLoadError, match="readable saved model"):
        load_trained(out)
    w.unlink()
    with pytest.raises(ModelLoadError, match="model.safetensors missing"):
        load_trained(out)
