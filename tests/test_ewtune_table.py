"""The EW-Tune table script: formatting (fast) and the table in docs/accounting.md matching a fresh run
(slow)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("ewtune_table", ROOT / "scripts" / "ewtune_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_doc_has_the_generated_table():
    text = (ROOT / "docs" / "accounting.md").read_text()
    mod = load_script()
    block = text.split(mod.START)[1].split(mod.END)[0]
    rows = [line for line in block.splitlines() if line.startswith("|")]
    assert len(rows) == len(mod.TASKS) + 2  # header, rule, one row per task
    for task in mod.TASKS:
        assert f"| {task} |" in block


@pytest.mark.slow
def test_doc_table_is_what_the_code_computes():
    mod = load_script()
    text = (ROOT / "docs" / "accounting.md").read_text()
    assert mod.markdown(mod.rows()) in text
