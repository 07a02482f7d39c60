"""Every method trains on every tiny architecture and leaves a complete, loadable run directory."""

import json

import pytest
import torch

from _train_helpers import classification_dataset, lm_dataset
from privtune.models.tiny import LM_ARCHS
from privtune.training.run import load_trained, train

FAST = dict(steps=3, batch_size=4, max_length=48, checkpoint_every=2)
DP = dict(epsilon=8.0, delta=1e-5)
CONTRACT_KEYS = ["method", "model", "dataset", "status", "epsilon", "delta", "noise_multiplier", "max_grad_norm",
                 "sample_rate", "steps", "epochs", "accountant", "wall_time_s", "peak_memory_mb", "tokens_per_s",
                 "trainable_params", "total_params", "final_train_loss"]


@pytest.fixture(scope="module")
def lm_data(tmp_path_factory):
    return lm_dataset(tmp_path_factory.mktemp("data") / "cs")


def _needs_accounting(method):
    if method.startswith("dp-"):
        pytest.importorskip("privtune.accounting")


@pytest.mark.parametrize("method", ["fft", "lora", "dp-fft", "dp-lora"])
@pytest.mark.parametrize("arch", LM_ARCHS)
def test_method_trains_on_arch(tmp_path, lm_data, arch, method):
    _needs_accounting(method)
    out = tmp_path / "run"
    res = train(data=str(lm_data), method=method, model=f"tiny:{arch}", out=out, **FAST,
                **(DP if method.startswith("dp-") else {}))
    rec = json.loads((out / "run.json").read_text())
    assert rec == json.loads(json.dumps(res.record))
    assert rec["status"] == "completed" and rec["steps"] == 3 and rec["error"] is None
    for k in CONTRACT_KEYS:
        assert k in rec, k
    assert rec["wall_time_s"] > 0 and rec["peak_memory_mb"] > 0 and rec["examples_per_s"] > 0
    assert 0 < rec["trainable_params"] <= rec["total_params"]
    assert rec["test_loss"] > 0
    if method.startswith("dp-"):
        assert rec["sampling"] == "poisson" and rec["neighbouring"] == "add_or_remove_one"
        assert 0 < rec["epsilon"] <= 8.0 and rec["epsilon_certified"] is True
        assert rec["ledger_steps"] == 3 and (out / "ledger.json").is_file()
        # computed from the private data without noise: not released (docs/training.md)
        assert all(rec[k] is None for k in ("tokens_per_s", "final_train_loss", "train_loss_curve"))
        assert rec["dp_diagnostics"]["enabled"] is False
    else:
        assert rec["epsilon"] is None and rec["sampling"] == "shuffle"
        assert rec["tokens_per_s"] > 0 and len(rec["train_loss_curve"]) == 3 and rec["dp_diagnostics"] is None
    files = {p.name for p in (out / "model").iterdir()}
    if "lora" in method:
        assert {"adapter_config.json", "adapter_model.safetensors"} <= files
        assert rec["trainable_params"] < rec["total_params"] / 2
    else:
        assert "model.safetensors" in files and rec["trainable_params"] == rec["total_params"]
    # the trained model differs from its base on the same input
    run = load_trained(out, device="cpu")
    base = run.load_base()
    ids = run.tokenizer(["SYS: How can I help?"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        diff = (run.model(input_ids=ids).logits - base(input_ids=ids).logits).abs().max()
    assert diff > 0


@pytest.mark.parametrize("method", ["fft", "lora", "dp-fft", "dp-lora"])
def test_classification_methods(tmp_path, method):
    _needs_accounting(method)
    data = classification_dataset(tmp_path / "cls")
    out = tmp_path / "run"
    rec = train(data=str(data), task="classification", method=method, model="tiny:bert", out=out, **FAST,
                **(DP if method.startswith("dp-") else {})).record
    assert rec["status"] == "completed" and rec["class_labels"] == ["neg", "pos"]
    assert 0 <= rec["test_accuracy"] <= 1 and 0 <= rec["macro_f1"] <= 1
    run = load_trained(out)
    enc = run.tokenizer(["great service"], return_tensors="pt")
    assert run.model(**enc).logits.shape == (1, 2)


def test_non_dp_matches_dp_schedule(tmp_path, lm_data):
    """Non-DP runs take the same number of steps with fixed batches equal to the DP expected batch."""
    rec = train(data=str(lm_data), method="lora", model="tiny:llama", out=tmp_path / "r", epochs=1, batch_size=6,
                max_length=32).record
    assert rec["steps"] == 4 and rec["examples"] == 24 and rec["sample_rate"] == 6 / 24


def test_dp_run_releases_no_statistic_of_its_data(tmp_path, lm_data):
    """A DP run's published record (run.json, the --json output) holds nothing computed from the training data
    without noise — no loss, token or example count, empty batches, clip fraction, nor the data's content hash —
    unless --dp-diagnostics asks for them: then they sit under ``dp_diagnostics`` beside their label, only there."""
    from privtune.training.record import OUTSIDE_DP, PRIVATE_STATS

    kw = dict(data=str(lm_data), method="dp-lora", model="tiny:llama", epsilon=8.0, steps=3, batch_size=6,
              max_length=32, seed=1)
    rec = train(out=tmp_path / "dp", **kw).record
    assert all(rec[k] is None for k in PRIVATE_STATS) and rec["dataset_hash"] is None
    diag = train(out=tmp_path / "diag", dp_diagnostics=True, **kw).record
    plain = train(out=tmp_path / "plain", **{**kw, "method": "lora", "epsilon": None}).record
    for r in (rec, diag):
        assert all(r[k] is None for k in PRIVATE_STATS) and r["dataset_hash"] is None
        assert r["steps"] == 3 and r["expected_batch_size"] == 6 and r["examples_per_s"] > 0   # fixed by the plan
    assert rec["dp_diagnostics"] == {"enabled": False, "label": rec["dp_diagnostics"]["label"],
                                     "withheld": list(PRIVATE_STATS)}
    assert "outside the DP guarantee" in rec["dp_diagnostics"]["label"]
    d = diag["dp_diagnostics"]
    assert d["enabled"] is True and d["label"] == OUTSIDE_DP and set(PRIVATE_STATS) <= set(d)
    assert len(d["train_loss_curve"]) == 3 and d["final_train_loss"] > 0 and d["tokens"] > 0
    assert 0 <= d["clip_fraction"] <= 1 and d["examples"] >= 0
    # the same draws either way: diagnostics only record, they change nothing in training
    assert rec["epsilon"] == diag["epsilon"] and rec["test_loss"] == pytest.approx(diag["test_loss"])
    assert plain["final_train_loss"] > 0 and plain["dataset_hash"] and plain["dp_diagnostics"] is None
    # run.json on disk is what the record says (no copy of the statistics elsewhere in it)
    on_disk = json.loads((tmp_path / "dp" / "run.json").read_text())
    assert on_disk == json.loads(json.dumps(rec))
