"""`examples/real-model.toml` and `privtune demo --model smollm2-135m` are the same study, sized for a real model."""

from pathlib import Path

import pytest

from privtune.errors import ConfigError
from privtune.experiments.config import parse_study
from privtune.experiments.demo import SCALES, demo_scale, study_text, tomllib

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "real-model.toml"


def _runs(text, tmp_path):
    study = parse_study(tomllib.loads(text), base_dir=tmp_path, where="study")
    return {r.run_id: r for r in study.expand()}


def test_example_and_demo_real_scale_expand_to_the_same_runs(tmp_path):
    example, demo = _runs(EXAMPLE.read_text("utf-8"), tmp_path), _runs(study_text(SCALES["real"]), tmp_path)
    assert example.keys() == demo.keys()  # run ids hash the dataset, model, method and every option
    runs = list(example.values())
    assert [(r.method, r.epsilon, r.model) for r in runs] == [
        ("fft", None, "smollm2-135m"), ("lora", None, "smollm2-135m"), ("dp-fft", 8.0, "smollm2-135m"),
        ("dp-lora", 8.0, "smollm2-135m")]
    lrs = {r.method: r.lr for r in runs}
    # fine-tuning rates for a pretrained model, each method its own: FFT's default (5e-4, set for the embedded
    # model) would wreck it, and LoRA's adapters need a larger rate than FFT's
    assert set(lrs) == {"fft", "lora", "dp-fft", "dp-lora"} and lrs["fft"] <= 1e-4 < lrs["lora"]
    sc = SCALES["real"]
    # DP: large Poisson batches (4x or more the non-DP batch), enough steps to learn something (about epochs / q)
    assert sc.dp_batch_size >= 4 * sc.batch_size
    assert sc.epochs * (sc.n_train + sc.canary_repeats) / sc.dp_batch_size >= 8
    # DP-LoRA clips at a small C, so that every per-example adapter gradient is clipped
    assert dict(sc.max_grad_norms).get("dp-lora", 1.0) <= 0.1
    # exact exposure scores every candidate with the 135M model: keep the candidate space small
    assert 10 ** sc.canary_digits <= 1000 and sc.workers == 1


def test_demo_scale_follows_the_model():
    assert demo_scale() == ("default", SCALES["default"])
    name, sc = demo_scale(model="smollm2-135m")
    assert name == "real" and sc == SCALES["real"]
    name, sc = demo_scale("tiny", model="tiny:llama")
    assert name == "tiny" and sc.model == "tiny:llama" and sc.n_train == SCALES["tiny"].n_train
    assert demo_scale(model="embedded:tiny")[0] == "default"
    with pytest.raises(ConfigError, match="--scale"):
        demo_scale("huge")


def test_demo_with_a_mistyped_model_fails_before_any_run(tmp_path, capsys):
    from privtune.cli import main

    with pytest.raises(SystemExit) as e:
        main(["demo", "--model", "smolm2-135m", "--out", str(tmp_path / "demo")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Did you mean smollm2-135m?" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "demo").exists()
