"""`privtune data ...` commands: thin wrappers; outputs redacted; errors are one line with exit status 2."""

import json

import pytest

from privtune.cli import main
from privtune.data.schema import load_dataset


def run(args, capsys):
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_synth_cli_writes_dataset_and_hides_secret(tmp_path, capsys):
    out = tmp_path / "cs"
    code, stdout, stderr = run(["data", "synth", "customersim", "--out", str(out), "--train", "25", "--test", "5",
                                "--seed", "7", "--canary", "918273", "--canary-repeats", "4",
                                "--audit-canaries", "6"], capsys)
    assert code == 0, stderr
    ds = load_dataset(out)
    assert ds.info.counts["train"] == 25 + 4 + sum(ds.info.audit["included"])
    assert ds.info.canary["secret"] == "918273"
    assert "918273" not in stdout + stderr and "[CANARY]" in stdout + stderr
    for s in ds.info.audit["secrets"]:
        assert s not in stdout + stderr
    # same command again: idempotent; a different dataset at the same place: one-line error, exit 2
    assert run(["data", "synth", "customersim", "--out", str(out), "--train", "25", "--test", "5", "--seed", "7",
                "--canary", "918273", "--canary-repeats", "4", "--audit-canaries", "6"], capsys)[0] == 0
    code, _, err = run(["data", "synth", "customersim", "--out", str(out), "--train", "25", "--seed", "8"], capsys)
    assert code == 2 and "different dataset" in err and "\n" not in err.strip()


@pytest.mark.parametrize("args, needle", [
    (["data", "synth", "nosuch", "--out", "X"], "customersim"),
    (["data", "synth", "synbio", "--out", "X", "--canary", "12ab"], "digits"),
    (["data", "synth", "synbio", "--out", "X", "--pool", "public", "--canary-repeats", "3"], "pool"),
])
def test_synth_cli_errors(args, needle, tmp_path, capsys):
    args = [str(tmp_path / a) if a == "X" else a for a in args]
    code, _, err = run(args, capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert "12ab" not in err
    assert not any(tmp_path.iterdir())  # no partial output


def test_synth_cli_public_pool(tmp_path, capsys):
    code, _, err = run(["data", "synth", "synbio", "--out", str(tmp_path / "pub"), "--train", "10", "--test", "0",
                        "--pool", "public"], capsys)
    assert code == 0, err
    info = json.loads((tmp_path / "pub" / "dataset.json").read_text())
    assert info["name"] == "synbio-public" and "canary" not in info and info["params"]["pool"] == "public"
