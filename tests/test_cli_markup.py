"""Brackets in messages, paths, names and help survive rich's markup (``[train]`` is a style tag to rich)."""

import re

import pytest
import typer

from privtune.cli import app

from _cli_helpers import run as run_cli

_TAG = re.compile(r"\[[a-z#/@][^\[\]]*\]")  # what rich would take for a style tag


def run(argv, capsys):
    code, out, err = run_cli(argv, capsys)
    return code, out, " ".join(err.split())  # rich wraps long lines


def _commands(cmd, path=()):
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_help_keeps_bracketed_text(capsys):
    # e.g. train --config "([train] table)" and results --parquet "pip install 'privtune[parquet]'"
    checked = 0
    for path, cmd in _commands(typer.main.get_command(app)):
        texts = [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]
        wanted = {m.group() for t in texts for m in _TAG.finditer(t.replace("\\[", "["))}
        if not wanted:
            continue
        code, out, err = run([*path, "--help"], capsys)
        assert code == 0, err
        shown = " ".join(out.split())
        for w in wanted:
            assert w in shown, (path, w)
        checked += 1
    assert checked >= 2


def test_error_message_keeps_brackets(tmp_path, capsys):
    code, _, err = run(["data", "validate", str(tmp_path / "ds[train]")], capsys)
    assert code == 2 and "ds[train]" in err and err.startswith("error:") and err.count("error:") == 1
    study = tmp_path / "s.toml"
    study.write_text('methods = ["fft"]\n')
    code, _, err = run(["sweep", str(study), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "[datasets.cs]" in err


@pytest.mark.parametrize("name", ["cs[train]"])
def test_names_and_paths_keep_brackets(name, tmp_path, capsys):
    src = tmp_path / "chats.jsonl"
    src.write_text('{"text": "call 555-123-4567 now"}\n{"text": "hello there"}\n')
    out = tmp_path / "ds[x]"
    code, _, err = run(["data", "import", str(src), "--out", str(out), "--name", name, "-t", "regex",
                        "--test-fraction", "0"], capsys)
    assert code == 0 and f"{out}: {name}" in err, err
    code, _, err = run(["data", "stats", str(out)], capsys)
    assert code == 0 and name in err
    code, _, err = run(["data", "validate", str(out)], capsys)
    assert code == 0 and str(out) in err
