from pathlib import Path

import pytest

from privtune.cli import main
from privtune.experiments.store import ResultStore

from _exp_helpers import study_rows

ROOT = Path(__file__).resolve().parents[1]


def run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
        raise SystemExit(0)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def stored(tmp_path):
    with ResultStore(tmp_path) as s:
        s.put_study({"name": "cli", "toml": "name = 'cli'"})
        for r in study_rows():
            s.upsert(r)
    return tmp_path


def test_report_and_results_commands(tmp_path, capsys):
    d = stored(tmp_path / "study")
    code, out, err = run(["report", str(d), "--out", str(tmp_path / "r.html")], capsys)
    assert code == 0 and (tmp_path / "r.html").is_file() and (tmp_path / "r.md").is_file()
    assert "LoRA memorised 60% as much as FFT" in " ".join(out.split()) and "r.html" in err
    code, out, err = run(["results", str(d), "--csv", str(tmp_path / "x.csv")], capsys)
    assert code == 0 and (tmp_path / "x.csv").read_text().startswith("run_id,status,stage")
    code, out, _ = run(["results", str(d)], capsys)
    assert code == 0 and "dp-lora" in out and "base model" in out


@pytest.mark.parametrize("argv, message", [
    (["sweep", "nowhere.toml", "--out", "x"], "`STUDY` must be an existing TOML file"),
    (["results", "nowhere"], "`DIR` must be a study directory with results.sqlite"),
    (["report", "nowhere"], "`DIR` must be a study directory with results.sqlite"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(argv, capsys)
    assert code == 2 and message in err and err.strip().count("\n") == 0


def test_study_typo_is_reported_before_anything_runs(tmp_path, capsys):
    p = tmp_path / "s.toml"
    p.write_text('methods = ["fft"]\nepoch = [1]\n[datasets.cs]\ngenerator = "customersim"\n')
    code, _, err = run(["sweep", str(p), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "Did you mean `epochs`?" in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, message", [
    (["--backend", "nope"], "`--backend` must be one of local, ray"),
    (["--address", "auto"], "`--address` must be used with --backend ray only"),
    (["--workers", "-1"], "`--workers` must be a non-negative integer"),
    (["--backend", "ray", "--workers", "0"], "`--workers` must be a positive integer (runs submitted at once)"),
])
def test_bad_backend_options_are_one_line_and_write_nothing(tmp_path, capsys, extra, message):
    p = tmp_path / "s.toml"
    p.write_text('methods = ["fft"]\n[datasets.cs]\ngenerator = "customersim"\n')
    code, _, err = run(["sweep", str(p), "--out", str(tmp_path / "out"), *extra], capsys)
    assert code == 2 and message in err and err.strip().count("\n") == 0 and not (tmp_path / "out").exists()


def test_ray_backend_without_ray_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)   # as if Ray were not installed
    p = tmp_path / "s.toml"
    p.write_text('methods = ["fft"]\n[datasets.cs]\ngenerator = "customersim"\n')
    code, _, err = run(["sweep", str(p), "--out", str(tmp_path / "out"), "--backend", "ray"], capsys)
    assert code == 2 and "pip install 'privtune[ray]'" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "out").exists()


@pytest.mark.ray
@pytest.mark.parametrize("address, message", [
    ("127.0.0.1:1", "Nothing answers there (ConnectionRefusedError)"),
    ("ray://nowhere", "`--address` must be auto, HOST:PORT or ray://HOST:PORT"),
])
def test_unreachable_ray_cluster_is_one_line_at_once(tmp_path, capsys, address, message):
    p = tmp_path / "s.toml"
    p.write_text('methods = ["fft"]\n[datasets.cs]\ngenerator = "customersim"\n')
    code, _, err = run(["sweep", str(p), "--out", str(tmp_path / "out"), "--backend", "ray", "--address", address],
                       capsys)
    assert code == 2 and message in err and err.strip().count("\n") == 0 and not (tmp_path / "out").exists()


def test_a_failed_run_makes_the_sweep_exit_1(tmp_path, capsys):
    p = tmp_path / "s.toml"
    p.write_text('models = ["tiny:nope"]\nmethods = ["fft"]\n[datasets.cs]\ngenerator = "customersim"\n'
                 'train = 8\ntest = 4\n')
    code, _, err = run(["sweep", str(p), "--out", str(tmp_path / "out"), "--workers", "0"], capsys)
    assert code == 1 and "1 failed" in " ".join(err.split())


def test_example_study_loads():
    from privtune.experiments import load_study

    runs = load_study(ROOT / "examples" / "tradeoff.toml").expand()
    # fft + 2 LoRA ranks + 3 budgets x (dp-fft + 2 ranks of dp-lora)
    assert len(runs) == 12
    assert {r.train_options["batch_size"] for r in runs if r.private} == {64}
