"""`privtune train` from the command line: good runs, a TOML config, and one-line errors with nothing written."""

import json

import pytest

from _train_helpers import classification_dataset, lm_dataset
from privtune.cli import main
from privtune.data.schema import DatasetInfo, Record, write_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return lm_dataset(tmp_path_factory.mktemp("d") / "cs")


def _run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    cap = capsys.readouterr()
    return e.value.code, cap.out, cap.err


def _ok(argv, capsys):
    try:
        main(argv)
    except SystemExit as e:  # typer may exit 0 explicitly
        assert e.code in (0, None)
    return capsys.readouterr()


FAST = ["--model", "tiny:llama", "--steps", "2", "--batch-size", "4", "--max-length", "32"]


def test_cli_trains_and_prints_summary(data, tmp_path, capsys):
    out = tmp_path / "run"
    cap = _ok(["train", "--data", str(data), "--method", "lora", *FAST, "--out", str(out)], capsys)
    assert "completed" in cap.err and "no DP guarantee" in cap.err
    assert json.loads((out / "run.json").read_text())["steps"] == 2


def test_cli_dp_summary_withholds_the_loss_unless_diagnostics(data, tmp_path, capsys, monkeypatch):
    """The one-line summary of a DP run prints no training loss (computed from private data without noise); with
    --dp-diagnostics it prints it labelled. The progress bar (forced on) follows the same rule."""
    monkeypatch.setenv("PRIVTUNE_PROGRESS", "1")
    dp = ["train", "--data", str(data), "--method", "dp-lora", "--epsilon", "8", *FAST]
    err = " ".join(_ok([*dp, "--out", str(tmp_path / "a")], capsys).err.split())   # rich wraps long lines
    assert "train loss withheld (DP: computed from private data without noise" in err
    assert not any(c.isdigit() for c in err.split("loss")[1].split("ε")[0])            # the bar shows no value
    err = " ".join(_ok([*dp, "--dp-diagnostics", "--out", str(tmp_path / "b")], capsys).err.split())
    loss = json.loads((tmp_path / "b" / "run.json").read_text())["dp_diagnostics"]["final_train_loss"]
    label = "outside the DP guarantee (computed from private data without noise)"
    assert f"train loss {round(loss, 4)} (diagnostic: {label})" in err
    assert "(diagnostic, outside the DP guarantee)" in err


def test_cli_config_file_with_override(data, tmp_path, capsys):
    cfg = tmp_path / "t.toml"
    cfg.write_text(f'[train]\ndata = "{data}"\nmethod = "fft"\nmodel = "tiny:gemma"\nsteps = 2\nbatch-size = 4\n'
                   'max_length = 32\nlr = 0.01\n')
    out = tmp_path / "run"
    _ok(["train", "--config", str(cfg), "--lr", "0.002", "--out", str(out)], capsys)
    rec = json.loads((out / "run.json").read_text())
    assert rec["method"] == "fft" and rec["model"] == "tiny:gemma" and rec["learning_rate"] == 0.002



@pytest.mark.parametrize("extra, needle", [
    (["--method", "nope"], "`--method` must be one of"),
    (["--method", "lora", "--model", "nobody/no-such-model"], "download it first"),
    (["--method", "dp-lora", "--epsilon", "0"], "`--epsilon` must be a positive"),
    (["--method", "dp-lora", "--epsilon", "-1"], "`--epsilon` must be a positive"),
    (["--method", "lora", "--batch-size", "1000"], "`--batch-size` must be at most"),
    (["--method", "lora", "--epsilon", "8"], "a DP method"),
    (["--method", "lora", "--task", "classification"], "`--task` must be the dataset's task"),
    (["--method", "lora", "--lr-schedule", "zigzag"], "`--lr-schedule`"),
    (["--method", "dp-lora", "--accountant", "nope"], "accountant"),
])
def test_bad_input_one_line_exit_2_nothing_written(data, tmp_path, capsys, extra, needle):
    if "dp-lora" in extra and needle == "accountant":
        pytest.importorskip("privtune.accounting")
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--model", "tiny:llama", "--steps", "2", "--batch-size", "4"]
    code, _, err = _run([*args, *extra, "--out", str(out)], capsys)
    assert code == 2 and needle in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_dp_method_needs_a_budget(data, tmp_path, capsys):
    pytest.importorskip("privtune.accounting")
    code, _, err = _run(["train", "--data", str(data), "--method", "dp-fft", *FAST, "--out", str(tmp_path / "r")],
                        capsys)
    assert code == 2 and "--epsilon" in err and not (tmp_path / "r").exists()


def test_existing_non_empty_out_is_refused_and_untouched(data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = _run(["train", "--data", str(data), "--method", "lora", *FAST, "--out", str(out)], capsys)
    assert code == 2 and "--out" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_classification_without_test_split(tmp_path, capsys):
    d = tmp_path / "cls"
    recs = [Record(id=f"r{i}", text=f"text {i}", label="a" if i % 2 else "b") for i in range(8)]
    write_dataset(d, {"train": recs}, DatasetInfo(name="c", source="t", task="classification"))
    code, _, err = _run(["train", "--data", str(d), "--task", "classification", "--method", "lora", "--model",
                         "tiny:bert", "--steps", "1", "--batch-size", "4", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "split `test` must exist" in err and not (tmp_path / "r").exists()


def test_missing_dataset_and_resume_misuse(data, tmp_path, capsys):
    code, _, err = _run(["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "dataset directory" in err
    code, _, err = _run(["train", "--resume", str(tmp_path / "none")], capsys)
    assert code == 2 and "run.json" in err
    code, _, err = _run(["train", "--resume", str(tmp_path), "--epochs", "3"], capsys)
    assert code == 2 and "--resume" in err


def test_classification_cli(tmp_path, capsys):
    d = classification_dataset(tmp_path / "cls")
    out = tmp_path / "r"
    _ok(["train", "--data", str(d), "--task", "classification", "--method", "fft", "--model", "tiny:bert",
         "--steps", "2", "--batch-size", "4", "--out", str(out)], capsys)
    rec = json.loads((out / "run.json").read_text())
    assert "test_accuracy" in rec and "macro_f1" in rec
