"""Two processes (gloo, CPU) train like one: the same ledger and, within floating-point tolerance, the same model."""

import json

import pytest
import torch
from safetensors.torch import load_file

from _train_helpers import lm_dataset
from privtune.errors import ConfigError, TrainingError
from privtune.training.distributed import SINGLE, Dist, launch
from privtune.training.run import train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return lm_dataset(tmp_path_factory.mktemp("d") / "cs", n_train=20, n_test=4)


def _adapter(run):
    return load_file(str(run / "model" / "adapter_model.safetensors"))


def test_two_processes_match_one(data, tmp_path):
    cfg = dict(data=str(data), method="dp-lora", model="tiny:gpt_neox", noise_multiplier=1.0, batch_size=6,
               physical_batch_size=2, max_length=24, steps=3, lora_r=2, seed=5, eval_test=False,
               dp_diagnostics=True)   # the per-step statistics compared below (recorded under dp_diagnostics)
    one = train(out=tmp_path / "one", **cfg)
    two = train(out=tmp_path / "two", nproc=2, **cfg)
    r1, r2 = one.record, two.record
    d1, d2 = r1["dp_diagnostics"], r2["dp_diagnostics"]
    assert r2["status"] == "completed" and r2["processes"] == 2 and r1["processes"] == 1
    assert json.loads((tmp_path / "two" / "ledger.json").read_text()) == \
        json.loads((tmp_path / "one" / "ledger.json").read_text())
    assert r2["epsilon"] == r1["epsilon"] and r2["ledger_steps"] == r1["ledger_steps"] == 3
    assert d2["examples"] == d1["examples"] and d2["tokens"] == d1["tokens"]  # the same logical batches
    assert d2["clip_fraction"] == d1["clip_fraction"]
    a1, a2 = _adapter(tmp_path / "one"), _adapter(tmp_path / "two")
    assert a1.keys() == a2.keys()
    moved = 0
    for k in a1:
        torch.testing.assert_close(a2[k], a1[k], rtol=1e-4, atol=1e-5)
        moved += int(not torch.equal(a1[k], torch.zeros_like(a1[k])))
    assert moved  # the adapters trained
    for (s1, l1), (s2, l2) in zip(d1["train_loss_curve"], d2["train_loss_curve"]):
        assert s1 == s2 and l1 == pytest.approx(l2, rel=1e-4)


def test_dist_helpers_single_process_and_bad_nproc():
    import numpy as np

    idx = np.arange(7)
    assert (SINGLE.shard(idx) == idx).all() and (SINGLE.same_batch(idx, 10) == idx).all()
    assert list(Dist(rank=1, world=3).shard(idx)) == [1, 4]
    with pytest.raises(ConfigError, match="--nproc"):
        launch(nproc=0, out="x", config={})


def test_failure_in_workers_is_one_line(data, tmp_path):
    with pytest.raises(TrainingError, match="every process.*--method"):
        launch(nproc=2, out=tmp_path / "r", config={"data": str(data), "method": "nope"}, timeout=300)
