import copy

import numpy as np
import torch

from privtune.evaluation import cache
from privtune.evaluation import evaluate as ev
from privtune.evaluation.evaluate import EvalConfig, evaluate_models
from privtune.evaluation.tokens import score_records
from test_eval_runner import dataset


def test_scores_round_trip_through_the_cache(toy):
    ts = score_records(toy.ft, toy.tokenizer, toy.train[:5])
    k = cache.key("scores", test="round-trip")
    first = cache.cached_scores(k, lambda: ts)
    again = cache.cached_scores(k, lambda: 1 / 0)  # must not recompute
    for name in ("offsets", "nll", "correct", "sensitive", "label"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    assert again.record_ids == ts.record_ids and again.labels == ts.labels


def test_fingerprint_follows_the_weights(toy):
    a = cache.model_fingerprint(toy.base)
    assert a == cache.model_fingerprint(toy.base) != cache.model_fingerprint(toy.ft)
    other = copy.deepcopy(toy.base)
    with torch.no_grad():
        next(other.parameters())[0, 0] += 1e-3
    assert cache.model_fingerprint(other) != a


def test_base_scores_are_computed_once_across_runs(toy, monkeypatch, tmp_path):
    monkeypatch.setenv("PRIVTUNE_CACHE", str(tmp_path))  # empty cache whatever ran before
    calls = []
    real = ev.score_records
    monkeypatch.setattr(ev, "score_records",
                        lambda m, *a, **k: calls.append(m is toy.base) or real(m, *a, **k))
    ds = dataset(toy, canary=False, audit=False)
    cfg = EvalConfig(seed=7)
    r1 = evaluate_models(toy.ft, toy.base, toy.tokenizer, ds, only="privacy,utility", config=cfg)
    r2 = evaluate_models(toy.ft, toy.base, toy.tokenizer, ds, only="privacy,utility", config=cfg)
    assert calls.count(True) == 2  # train and test under the base model, in the first run only
    assert calls.count(False) == 4
    assert r1["privacy"] == r2["privacy"] and r1["utility"] == r2["utility"]
