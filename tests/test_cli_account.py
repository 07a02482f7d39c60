"""`privtune account`: contract keys, tables, errors as one line with exit status 2."""

from __future__ import annotations

import json
import subprocess

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


# --- extreme step counts, Ctrl-C, and the Edgeworth orderings ------------------------------------------------------

def _privtune(*argv: str, timeout: float) -> "subprocess.CompletedProcess[str]":
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "privtune", *argv], capture_output=True, text=True,
                          timeout=timeout, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


def test_epsilon_at_1e9_steps_answers_every_accountant_within_seconds():
    """All four accountants at 10⁹ steps: numbers (PLD capped at the RDP bound, labelled) or PRV's one-line
    refusal naming its range — in seconds (before: hours, and PRV printed inf or 72.8 at 10⁷–10⁸)."""
    import time

    start = time.perf_counter()
    p = _privtune("account", "epsilon", "--noise-multiplier", "1", "--sample-rate", "0.01", "--steps",
                  "1000000000", "--accountant", "all", "--json", timeout=300)
    elapsed = time.perf_counter() - start
    assert p.returncode == 0, p.stderr
    rows = {r["accountant"]: r for r in json.loads(p.stdout)["results"]}
    assert rows["rdp"]["epsilon"] == pytest.approx(99358.9, rel=1e-5)
    assert rows["pld"]["epsilon"] == rows["rdp"]["epsilon"] and rows["pld"]["capped_by"] == "rdp"
    assert rows["prv"]["error"].startswith("`steps` must be <= 3,964,677 for the prv accountant")
    assert rows["edgeworth"]["certified_epsilon"] == rows["rdp"]["epsilon"]
    assert sum(r.get("time_s", 0) for r in rows.values()) < 30 and elapsed < 120


def test_text_output_says_when_the_rdp_bound_was_used():
    p = _privtune("account", "epsilon", "--noise-multiplier", "1", "--sample-rate", "0.01", "--steps",
                  "100000000", timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("ε = 10036.5 (certified, pld; capped at the rdp bound, below its own ")


def test_prv_refusal_is_one_line_with_exit_2():
    p = _privtune("account", "epsilon", "--noise-multiplier", "1", "--sample-rate", "0.01", "--steps",
                  "100000000", "--accountant", "prv", timeout=300)
    assert p.returncode == 2 and p.stdout == ""
    err = p.stderr.strip()
    assert len(err.splitlines()) == 1 and "`steps` must be <= 3,964,677 for the prv accountant" in err
    assert "Found 100000000." in err and "--accountant pld, or rdp" in err


def test_ctrl_c_stops_a_long_computation_promptly():
    """SIGINT during ε-against-steps at up to 10⁹ steps ends the process within seconds with status 130 (before,
    PLD sat in one uninterruptible C call for minutes)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    code = ("import sys, privtune.cli, privtune.accounting.pld, dp_accounting.pld.privacy_loss_distribution; "
            "print('ready', flush=True); privtune.cli.main(sys.argv[1:])")
    argv = ["account", "curve", "--noise-multiplier", "1", "--sample-rate", "0.01", "--steps", "1000000000",
            "--points", "20", "--accountant", "all", "--out", os.devnull + ".png"]
    proc = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            # as in a terminal: a test runner started in the background ignores SIGINT
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(4.0)     # past RDP, into PLD's compositions of 5·10⁷, 10⁸, ... steps (old code: minutes each)
        assert proc.poll() is None, "finished before it could be interrupted"
        sent = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        waited = time.perf_counter() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "interrupted" in err
    assert waited < 10.0


def test_orderings_remove_reproduces_ewtune_mnli(capsys):
    """EW-Tune's accountant (first order, remove ordering) gives 7.9995 at MNLI's σ 0.557 (q = 2000/392702,
    20 epochs = 3920 steps, δ 1e-5); privtune's default, both orderings, is more cautious."""
    mnli = ["--noise-multiplier", "0.557", "--dataset-size", "392702", "--batch-size", "2000", "--steps", "3920",
            "--delta", "1e-5", "--accountant", "edgeworth", "--order", "1", "--json"]
    code, out, _ = run(capsys, "account", "epsilon", *mnli, "--orderings", "remove")
    remove = json.loads(out)
    assert code == 0 and remove["orderings"] == "remove"
    assert remove["epsilon"] == pytest.approx(7.9995, abs=5e-4)
    code, out, _ = run(capsys, "account", "epsilon", *mnli)
    both = json.loads(out)
    assert code == 0 and both["orderings"] == "both" and both["epsilon"] > remove["epsilon"] + 0.3
    code, out, _ = run(capsys, "account", "epsilon", *mnli[:-1], "--orderings", "remove")
    assert code == 0 and "(estimate, edgeworth order 1, remove ordering)" in out


def test_orderings_on_noise_and_curve(capsys, tmp_path):
    code, out, _ = run(capsys, "account", "noise", "--epsilon", "8", "--dataset-size", "392702", "--batch-size",
                       "2000", "--steps", "3920", "--accountant", "edgeworth", "--orderings", "remove", "--json")
    d = json.loads(out)
    assert code == 0 and d["orderings"] == "remove"
    assert d["edgeworth_noise_multiplier"] == pytest.approx(0.557, abs=5e-4)   # EW-Tune's σ for MNLI
    png = tmp_path / "c.png"
    code, out, _ = run(capsys, "account", "curve", "--noise-multiplier", "1", *BASE, "--points", "2",
                       "--accountant", "edgeworth", "--orderings", "remove", "--out", str(png), "--json")
    assert code == 0 and png.is_file()
    code, _, err = run(capsys, "account", "epsilon", "--noise-multiplier", "1", *BASE, "--orderings", "add")
    assert code == 2 and "`--orderings` must be both or remove" in err


def test_help_says_which_ordering_ewtune_used(monkeypatch):
    from typer.testing import CliRunner

    from privtune.cli import app

    monkeypatch.setenv("COLUMNS", "250")  # rich sizes the help box from the terminal, not from CliRunner
    for cmd in ("epsilon", "noise", "curve"):
        out = CliRunner().invoke(app, ["account", cmd, "--help"], terminal_width=250).output
        text = " ".join(out.replace("│", " ").split())
        assert "--orderings" in text and "remove (the one EW-Tune's accountant uses" in text, cmd
