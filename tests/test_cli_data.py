"""`privtune data ...` commands: thin wrappers; outputs redacted; errors are one line with exit status 2."""

import json

import pytest

from privtune.data.schema import load_dataset
from _cli_helpers import run


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


def test_import_stats_tag_eval_cli(tmp_path, capsys):
    src = tmp_path / "chats.jsonl"
    src.write_text('{"text": "I am Ada Lovelace, call 555-123-4567."}\n{"text": "Order 123-45678-9012 is late."}\n')
    crm = tmp_path / "crm.csv"
    crm.write_text("PERSON\nAda Lovelace\n")
    out = tmp_path / "ds"
    code, _, err = run(["data", "import", str(src), "--out", str(out), "--tagger", "regex",
                        "--tagger", f"values:{crm}", "--test-fraction", "0"], capsys)
    assert code == 0, err
    assert "Ada" not in err  # summary shows labels and counts, never values
    code, stdout, err = run(["data", "stats", str(out), "--json"], capsys)
    st = json.loads(stdout)
    assert code == 0 and st["total"]["spans"] == {"PERSON": 1, "PHONE": 1, "ORDER_ID": 1}
    assert st["total"]["tokens"] == 6 + 4 and st["total"]["sensitive_tokens"] == 4
    code, stdout, err = run(["data", "tag-eval", str(out), "--tagger", "regex", "--json"], capsys)
    res = json.loads(stdout)
    assert code == 0 and res["labels"]["PERSON"]["span_recall"] == 0.0
    assert res["labels"]["PHONE"]["span_precision"] == 1.0 and res["labels"]["ALL"]["span_recall"] == 2 / 3
    code, _, err = run(["data", "stats", str(out)], capsys)
    assert code == 0 and "sensitive tokens" in err


def test_import_cli_bad_input_one_line(tmp_path, capsys):
    src = tmp_path / "rows.csv"
    src.write_text("body\nhello\n")
    code, _, err = run(["data", "import", str(src), "--out", str(tmp_path / "ds")], capsys)
    assert code == 2 and "rows.csv:1" in err and "--text-column" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ds").exists()



# A child process in which any network attempt (name lookup or connect) ends the process with status 97.
_NO_NETWORK = """
import os, socket, sys
def refuse(*args, **kwargs):
    sys.stderr.write("NETWORK ATTEMPT\\n"); sys.stderr.flush(); os._exit(97)
socket.getaddrinfo = refuse
socket.socket.connect = socket.socket.connect_ex = refuse
from privtune.cli import main
main(sys.argv[1:])
"""


def test_stats_tokenizer_is_never_downloaded_without_allow_download(tmp_path, capsys):
    # The test session runs with HF_HUB_OFFLINE=1; the child (a fresh process) does not: privtune itself must keep
    # the hub libraries from connecting (this took 50 s of retries before failing).
    import os
    import subprocess
    import sys

    out = tmp_path / "ds"
    assert run(["data", "synth", "customersim", "--out", str(out), "--train", "4", "--test", "0"], capsys)[0] == 0
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_HOME"] = str(tmp_path / "hf")  # an empty cache
    proc = subprocess.run([sys.executable, "-c", _NO_NETWORK, "data", "stats", str(out), "--tokenizer", "nosuch/tok"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert "NETWORK ATTEMPT" not in proc.stderr and proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "nosuch/tok" in err and "--allow-download" in err


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """The hub libraries told they are online (as without HF_HUB_OFFLINE), every connection refused and recorded."""
    import socket

    from huggingface_hub import constants

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network refused by the test")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def test_tag_eval_and_model_tokenizer_stay_offline(no_network, tmp_path, capsys):
    from huggingface_hub import constants

    from privtune.errors import ModelLoadError
    from privtune.models.loading import load_tokenizer

    out = tmp_path / "ds"
    assert run(["data", "synth", "customersim", "--out", str(out), "--train", "4", "--test", "0"], capsys)[0] == 0
    code, _, err = run(["data", "tag-eval", str(out), "--tokenizer", "nosuch/tok"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--allow-download" in err
    with pytest.raises(ModelLoadError, match="--allow-download"):
        load_tokenizer("nosuch/tok")
    assert no_network == [] and constants.HF_HUB_OFFLINE is False  # no attempt; the flag restored
