import json
import sys

import pandas as pd
import pytest

from privtune.errors import ConfigError, MissingDependencyError
from privtune.experiments.store import ResultStore, export_results, flatten, make_row

from _exp_helpers import eval_json, grid, run_json


def test_flatten():
    flat = flatten({"a": {"b": 1, "c": {"d": None}}, "l": [[1, 2.5]], "t": True, "e": {}})
    assert flat == {"a.b": 1, "a.c.d": None, "l": "[[1, 2.5]]", "t": 1, "e": None}


def test_row_has_every_contract_field_as_a_column(tmp_path):
    ev = {"created": "2026", "records": {"train": 10}, "run": {"method": "dp-fft"},
          **eval_json(nll_train=2.9, util=2.3, auc=0.6)}
    r = make_row(run_id="x", status="completed", grid=grid("dp-fft", 8.0), run_json=run_json("dp-fft", eps=8.0),
                 eval_json=ev)
    assert r["eval.created"] == "2026" and r["eval.records.train"] == 10 and r["eval.run.method"] == "dp-fft"
    for key in ("method", "model", "dataset", "status", "epsilon", "delta", "noise_multiplier", "max_grad_norm",
                "sample_rate", "steps", "epochs", "accountant", "wall_time_s", "peak_memory_mb", "tokens_per_s",
                "trainable_params", "total_params", "final_train_loss"):
        assert f"run.{key}" in r
    assert r["privacy.sensitive_train_nll"] == 2.9 and r["utility.nonsensitive_test_nll_base"] == 2.5
    assert r["mia.loss.auc"] == 0.6 and r["mia.zlib.tpr_at_1pct_fpr"] == 0.005
    assert r["exposure.exposure_bits"] == 2.0 and r["grid.epsilon"] == 8.0 and r["run.epsilon"] == 8.0
    # a DP run's training statistics are not released (null) ...
    assert r["run.train_loss_curve"] is None and r["run.final_train_loss"] is None and r["run.tokens_per_s"] is None
    assert r["run.dp_diagnostics.enabled"] == 0 and "not released" in r["run.dp_diagnostics.label"]
    # ... unless recorded as diagnostics: then in their own columns, beside the label
    d = make_row(run_id="y", status="completed", grid=grid("dp-fft", 8.0),
                 run_json=run_json("dp-fft", eps=8.0, dp_diagnostics=True))
    assert json.loads(d["run.dp_diagnostics.train_loss_curve"])[0] == [1, 3.0] and d["run.train_loss_curve"] is None
    assert d["run.dp_diagnostics.label"] == "outside the DP guarantee (computed from private data without noise)"
    plain = make_row(run_id="z", status="completed", grid=grid("fft"), run_json=run_json("fft"))
    assert json.loads(plain["run.train_loss_curve"])[0] == [1, 3.0] and plain["run.dp_diagnostics"] is None


def test_store_upsert_evolves_schema_and_exports(tmp_path):
    with ResultStore(tmp_path) as s:
        s.put_study({"name": "t", "config": {"methods": ["fft"]}, "toml": "name = 't'"})
        s.upsert(make_row(run_id="a", status="completed", grid=grid("fft"), run_json=run_json("fft"),
                          eval_json=eval_json(nll_train=2.5, util=2.1)))
        s.upsert(make_row(run_id="b", status="failed", stage="train", error="boom", grid=grid("lora")))
        n_cols = len(s.columns())
        ev = eval_json(nll_train=2.8, util=2.2)
        ev["mia"]["lira"] = {"auc": 0.7, "tpr_at_1pct_fpr": 0.1}      # a key the first row did not have
        s.upsert(make_row(run_id="c", status="completed", grid=grid("lora"), run_json=run_json("lora"), eval_json=ev))
        assert "mia.lira.auc" in s.columns() and len(s.columns()) == n_cols + 2
        # replacing a row updates it in place
        s.upsert(make_row(run_id="b", status="failed", stage="eval", error="boom again", grid=grid("lora")))
    with ResultStore(tmp_path, create=False) as s:   # reopened: same rows, same columns
        rows = {r["run_id"]: r for r in s.rows()}
        assert set(rows) == {"a", "b", "c"}
        assert rows["a"]["mia.lira.auc"] is None and rows["c"]["mia.lira.auc"] == 0.7
        assert rows["b"]["stage"] == "eval" and rows["b"]["error"] == "boom again"
        assert rows["b"]["run.method"] is None and rows["b"]["grid.method"] == "lora"
        assert json.loads(s.study()["config"]) == {"methods": ["fft"]}
        s.delete_missing({"a", "c"})
        assert [r["run_id"] for r in s.rows()] == ["a", "c"]
        # rows come back in the study's order (seq), not in the order they were last written
        s.upsert(make_row(run_id="z", status="pending", grid=grid("fft"), seq=0))
        s.upsert(make_row(run_id="y", status="pending", grid=grid("fft"), seq=1))
        assert [r["run_id"] for r in s.rows()] == ["z", "y", "a", "c"]
        s.delete_missing({"a", "c"})
    csv, pq = tmp_path / "out.csv", tmp_path / "out.parquet"
    pytest.importorskip("pyarrow")
    export_results(tmp_path, csv=csv, parquet=pq)
    for df in (pd.read_csv(csv), pd.read_parquet(pq)):
        assert list(df.columns[:3]) == ["run_id", "status", "stage"]
        assert list(df["run_id"]) == ["a", "c"]
        assert df.set_index("run_id").loc["a", "privacy.sensitive_train_nll"] == 2.5


def test_export_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="results.sqlite"):
        export_results(tmp_path / "nothing", csv=tmp_path / "x.csv")
    ResultStore(tmp_path).close()
    with pytest.raises(ConfigError, match="--csv/--parquet"):
        export_results(tmp_path)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(MissingDependencyError, match=r"privtune\[parquet\]"):
        export_results(tmp_path, csv=tmp_path / "x.csv", parquet=tmp_path / "x.parquet")
    assert not (tmp_path / "x.csv").exists()   # nothing written when one export cannot be made
