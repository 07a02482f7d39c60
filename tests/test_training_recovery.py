"""Recovery and exit statuses (issue 18): mistyped TOML values are one-line errors, a run stopped by its privacy
budget exits 3 (and a sweep counts it as finished), JSON errors read cleanly."""

import json

import pytest

from _train_helpers import lm_dataset
from privtune.errors import ConfigError
from privtune.training.config import TrainConfig
from _cli_helpers import run


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return lm_dataset(tmp_path_factory.mktemp("d") / "cs")


@pytest.mark.parametrize("line, key", [
    ('epochs = "abc"', "epochs"),
    ("steps = 2.5", "steps"),
    ('batch_size = "16"', "batch_size"),
    ('lora_targets = "query"', "lora_targets"),
    ('secure_rng = "yes"', "secure_rng"),
    ("lr = true", "lr"),
    ("epsilon = [8]", "epsilon"),
    ("method = 3", "method"),
])
def test_mistyped_config_values_are_one_line_errors(data, tmp_path, capsys, line, key):
    cfg = tmp_path / "c.toml"
    # a small model and few steps, so that a value the old code let through fails fast rather than training
    base = {"data": f'"{data}"', "model": '"tiny:gpt_neox"', "steps": "1", "batch_size": "4", "max_length": "32"}
    base.pop(key, None)
    if key == "epochs":     # the case: epochs is read when steps is not given
        base.pop("steps")
    cfg.write_text("[train]\n" + "".join(f"{k} = {v}\n" for k, v in base.items()) + line + "\n")
    out = tmp_path / "run"
    code, _, err = run(["train", "--config", str(cfg), "--out", str(out)], capsys)
    assert code == 2 and f"`{key}` must be" in err and "c.toml" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_config_types_accept_what_toml_and_run_json_give():
    cfg = TrainConfig.from_dict({"data": "d", "epochs": 1, "steps": 4.0, "lr": 1e-3, "epsilon": None,
                                 "lora_targets": ["query"], "extra": {"x": 1}})
    assert cfg.steps == 4 and isinstance(cfg.steps, int) and cfg.epochs == 1 and cfg.lora_targets == ["query"]
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="`max_length` must be an integer"):
        TrainConfig.from_dict({"max_length": "128"})


def test_budget_exhausted_run_exits_3(data, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run(["train", "--data", str(data), "--method", "dp-lora", "--model", "tiny:gpt_neox",
                        "--steps", "30", "--noise-multiplier", "1.5", "--epsilon", "2", "--batch-size", "4",
                        "--max-length", "32", "--checkpoint-every", "10", "--out", str(out)], capsys)
    rec = json.loads((out / "run.json").read_text())
    assert rec["status"] == "budget_exhausted" and rec["steps"] < 30
    assert code == 3 and "budget" in err and (out / "model").is_dir()
    code, _, _ = run(["train", "--resume", str(out), "--json"], capsys)   # finished: reported again, same status
    assert code == 3


def test_completed_run_exits_0(data, tmp_path, capsys):
    code, _, err = run(["train", "--data", str(data), "--method", "lora", "--model", "tiny:gpt_neox", "--steps", "1",
                        "--batch-size", "4", "--max-length", "32", "--out", str(tmp_path / "r")], capsys)
    assert code == 0, err


def test_sweep_counts_a_budget_exhausted_run_as_finished(data, tmp_path):
    from privtune.experiments.sweep import execute, run_state

    cfg = {"run_id": "r", "grid": {}, "train": dict(data=str(data), method="dp-lora", model="tiny:gpt_neox", steps=30,
                                                   noise_multiplier=1.5, epsilon=2.0, batch_size=4, max_length=32,
                                                   checkpoint_every=10)}
    ev = {"only": ["utility"], "max_records": 6}
    out = execute(cfg, str(tmp_path / "r"), str(data), ev)
    assert out["status"] == "completed", out
    assert json.loads((tmp_path / "r" / "run.json").read_text())["status"] == "budget_exhausted"
    assert run_state(tmp_path / "r", ev) == "done"


def test_sweep_exit_status_reaches_the_shell(tmp_path, capsys, monkeypatch):
    """`typer.Exit(N)` inside a command used to be swallowed (exit 0): a sweep with failures must exit 1."""
    import privtune.experiments.sweep as sweep_mod
    from privtune.experiments.sweep import RunOutcome, SweepResult

    def failing(study, *, out, **options):
        return SweepResult(tmp_path, [RunOutcome("a", "failed", "train", "boom")])

    monkeypatch.setattr(sweep_mod, "run_sweep", failing)
    study = tmp_path / "s.toml"
    study.write_text("")
    code, _, err = run(["sweep", str(study), "--out", str(tmp_path / "o")], capsys)
    assert code == 1 and "failed" in err


@pytest.mark.parametrize("line", ['{"text": "abc', '{"text": }'])
def test_malformed_json_lines_read_cleanly(tmp_path, line):
    from privtune.data.importers import import_dataset
    from privtune.data.schema import read_jsonl
    from privtune.errors import DataError

    p = tmp_path / "x.jsonl"
    p.write_text('{"id": "r1", "text": "fine"}\n' + line + "\n")
    for read in (lambda: import_dataset(p, out=tmp_path / "ds"), lambda: read_jsonl(p)):
        with pytest.raises(DataError) as e:
            read()
        assert "at at" not in str(e.value) and "x.jsonl:2" in str(e.value) and "column" in str(e.value)
