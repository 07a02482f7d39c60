"""`privtune account`: contract keys, tables, errors as one line with exit status 2."""

from __future__ import annotations

import json

import pytest

from privtune.cli import main

BASE = ["--sample-rate", "0.02", "--steps", "200"]


def run(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_epsilon_json_has_the_contract_keys(capsys):
    code, out, _ = run(capsys, "account", "epsilon", "--noise-multiplier", "1.0", *BASE, "--delta", "1e-5",
                       "--json")
    d = json.loads(out)
    assert code == 0
    assert {"accountant", "epsilon", "delta", "noise_multiplier", "sample_rate", "steps",
            "certified"} <= set(d)
    assert d["accountant"] == "pld" and d["certified"] is True and d["steps"] == 200


def test_edgeworth_json_carries_order_and_certified_epsilon(capsys):
    code, out, _ = run(capsys, "account", "epsilon", "--noise-multiplier", "1.0", *BASE, "--accountant",
                       "edgeworth", "--order", "2", "--json")
    d = json.loads(out)
    assert code == 0 and d["certified"] is False and d["order"] == 2 and d["certified_epsilon"] > 0


def test_all_prints_results_list_and_table(capsys):
    code, out, _ = run(capsys, "account", "epsilon", "--noise-multiplier", "1.0", *BASE, "--accountant",
                       "all", "--json")
    rows = json.loads(out)["results"]
    assert code == 0 and {r["accountant"] for r in rows} == {"rdp", "pld", "prv", "edgeworth"}
    assert {r["accountant"]: r["certified"] for r in rows} == {"rdp": True, "pld": True, "prv": True,
                                                                "edgeworth": False}
    code, out, _ = run(capsys, "account", "epsilon", "--noise-multiplier", "1.0", *BASE, "--accountant",
                       "all")
    assert code == 0 and "estimate" in out and "certified" in out and "ms" in out


def test_dataset_form_and_delta_warning(capsys):
    code, out, err = run(capsys, "account", "epsilon", "--noise-multiplier", "1.0", "--dataset-size", "1000",
                         "--batch-size", "20", "--epochs", "2", "--delta", "0.01", "--json")
    d = json.loads(out)
    assert code == 0 and d["sample_rate"] == 0.02 and d["steps"] == 100
    assert "warning:" in err and "1/dataset_size" in err


def test_noise_with_edgeworth_reports_both_sigmas(capsys):
    code, out, _ = run(capsys, "account", "noise", "--epsilon", "3", *BASE, "--accountant", "edgeworth",
                       "--json")
    d = json.loads(out)
    assert code == 0 and d["certified"] is True and d["epsilon"] <= 3
    assert d["noise_multiplier"] >= d["edgeworth_noise_multiplier"] > 0
    assert {"accountant", "epsilon", "delta", "noise_multiplier", "sample_rate", "steps"} <= set(d)


def test_noise_text(capsys):
    code, out, _ = run(capsys, "account", "noise", "--epsilon", "3", *BASE)
    assert code == 0 and out.startswith("σ = ") and "certified ε" in out


@pytest.mark.parametrize("argv,match", [
    (["epsilon", "--noise-multiplier", "0", *BASE], "`noise_multiplier` must be > 0"),
    (["epsilon", "--noise-multiplier", "1", "--sample-rate", "1.5", "--steps", "10"],
     "`sample_rate` must be in"),
    (["epsilon", "--noise-multiplier", "1", "--sample-rate", "0.1", "--steps", "0"],
     "`steps` must be an integer"),
    (["epsilon", "--noise-multiplier", "1", *BASE, "--delta", "1"], "`delta` must be in (0, 1)"),
    (["epsilon", "--noise-multiplier", "1", "--steps", "10"], "`sample_rate` must be given"),
    (["epsilon", "--noise-multiplier", "1", *BASE, "--accountant", "moments"],
     "`--accountant` must be one of"),
    (["epsilon", "--noise-multiplier", "1", *BASE, "--accountant", "edgeworth", "--order", "4"],
     "`order` must be"),
    (["noise", "--epsilon", "1e-6", "--delta", "1e-10", "--sample-rate", "1", "--steps", "1000000"],
     "`target_epsilon` must be reachable"),
    (["curve", "--noise-multiplier", "1", *BASE, "--out", "plot.jpg"],
     "`--out` must be a path ending in .png"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, match):
    code, out, err = run(capsys, "account", *argv)
    assert code == 2 and out == ""
    assert match in err and len(err.strip().splitlines()) == 1


def test_curve_writes_png(capsys, tmp_path):
    png = tmp_path / "curve.png"
    code, out, _ = run(capsys, "account", "curve", "--noise-multiplier", "1.0", *BASE, "--points", "3",
                       "--accountant", "pld", "--out", str(png), "--json")
    d = json.loads(out)
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert d["steps"] == [67, 133, 200] and d["series"][0]["accountant"] == "pld"
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]  # no temporary files left behind
