import math

import numpy as np
import pytest
from scipy import stats

from eval_helpers import make_model
from privtune.data.schema import Record
from privtune.data.synth.canaries import CanarySpec
from privtune.errors import DataError
from privtune.evaluation.exposure import (Canary, all_secrets, canary_exposure, exposure_from_rank,
                                          extrapolated_exposure, find_window, tokenize_windows)
from privtune.evaluation.tokens import score_records
from privtune.evaluation.trie import PAD, pad_sequences, sequence_logprobs


def brute_force(model, tokenizer, canary, window, secrets):
    """Score every candidate as a whole text and sum the log-probabilities of its window tokens."""
    ts = score_records(model, tokenizer, [Record(str(i), canary.text(s)) for i, s in enumerate(secrets)])
    n_ctx = len(window.context_ids)
    seqs = tokenize_windows(tokenizer, window, secrets)
    out = []
    for i in range(len(secrets)):
        n = int((seqs[i] != PAD).sum())
        out.append(-ts.nll[ts.record(i)][n_ctx - 1:n_ctx - 1 + n].sum())
    return np.array(out)


# The KV cache goes in and comes out under the name the model uses (transformers renamed past_key_values to cache
# and warns on the old name, as an argument and as an output field): a deprecation warning here fails the test.
@pytest.mark.filterwarnings("error::FutureWarning")
@pytest.mark.parametrize("template", ["Agent: confirm please. Customer: My ID is {secret}. Thanks!",
                                      "{secret} is my code", "code:{secret}!"])
def test_prefix_tree_equals_scoring_every_candidate(tokenizer, template, transformers_warnings):
    model = make_model(tokenizer, seed=3)
    canary = Canary(CanarySpec(template, "0123456789", 3), "042")
    window = find_window(tokenizer, canary)
    secrets = all_secrets(canary.spec)
    seqs = tokenize_windows(tokenizer, window, secrets)
    tree = sequence_logprobs(model, context_ids=window.context_ids, sequences=seqs)
    np.testing.assert_allclose(tree, brute_force(model, tokenizer, canary, window, secrets), atol=2e-4)
    # small batches walk the same tree
    small = sequence_logprobs(model, context_ids=window.context_ids, batch_size=7,
                              sequences=tokenize_windows(tokenizer, window, secrets))
    np.testing.assert_allclose(small, tree, atol=2e-4)
    assert transformers_warnings == []


# The KV cache goes in and comes out under the name the model uses (transformers renamed past_key_values to cache
# and warns on the old name, as an argument and as an output field): a deprecation warning here fails the test.
@pytest.mark.filterwarnings("error::FutureWarning")
@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma"])
def test_prefix_tree_on_other_architectures(tokenizer, arch, transformers_warnings):
    model = make_model(tokenizer, seed=5, arch=arch)
    canary = Canary(CanarySpec("Customer: My ID is {secret}.", "0123456789", 2), "42")
    window = find_window(tokenizer, canary)
    secrets = all_secrets(canary.spec)
    tree = sequence_logprobs(model, context_ids=window.context_ids, batch_size=16,
                             sequences=tokenize_windows(tokenizer, window, secrets))
    assert transformers_warnings == []
    np.testing.assert_allclose(tree, brute_force(model, tokenizer, canary, window, secrets), atol=2e-4)


def test_window_tokenizes_like_the_full_text(tokenizer):
    canary = Canary(CanarySpec("Customer: My ID is {secret}. Thanks!", "0123456789", 4), "4721")
    w = find_window(tokenizer, canary)
    assert w.left.endswith(" ") and canary.prefix.endswith(w.left)
    for s in ["0000", "4721", "9999", "1203"]:
        full = tokenizer(canary.text(s))["input_ids"]
        win = tokenizer(w.left + s + w.right, add_special_tokens=False)["input_ids"]
        assert full[:len(w.context_ids) + len(win)] == w.context_ids + win


def test_sequences_of_different_lengths(tokenizer):
    model = make_model(tokenizer, seed=4)
    seqs = [[5, 6, 7], [5, 6], [5, 8, 9, 10], [11], [5, 6, 7, 12]]
    got = sequence_logprobs(model, context_ids=[0], sequences=pad_sequences(seqs))
    import torch
    for s, g in zip(seqs, got):
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=torch.tensor([[0] + s])).logits[0], -1)
        assert g == pytest.approx(sum(float(lp[t, tok]) for t, tok in enumerate(s)), abs=1e-4)


def test_exposure_formula():
    assert exposure_from_rank(1, 10**6) == pytest.approx(math.log2(10**6))
    assert exposure_from_rank(10**6, 10**6) == 0.0
    assert exposure_from_rank(1024, 2 ** 20) == pytest.approx(10.0)


def test_extrapolation_recovers_a_known_tail():
    # log-perplexities ~ N(0, 1): a canary 3 standard deviations below has exposure -log2 Phi(-3)
    rng = np.random.default_rng(0)
    sample_scores = -rng.standard_normal(20_000)
    est = extrapolated_exposure(sample_scores, canary_score=3.0)
    assert est == pytest.approx(-math.log2(stats.norm.cdf(-3.0)), rel=0.05)


def test_memorised_canary_is_ranked_first_and_untouched_model_is_not(toy):
    ft = canary_exposure(toy.ft, toy.tokenizer, toy.canary)
    assert ft.method == "exact" and ft.rank == 1 and ft.n_scored == 10**4
    assert ft.exposure_bits == pytest.approx(math.log2(10**4)) == ft.max_exposure_bits
    base = canary_exposure(toy.base, toy.tokenizer, toy.canary)
    assert base.exposure_bits < 8 and base.rank > 10
    d = ft.to_dict()
    assert {"exposure_bits", "max_exposure_bits", "rank", "method", "definition"} <= set(d)
    assert toy.canary.secret not in str(d)


def test_extrapolated_method_is_labelled_an_estimate(toy):
    r = canary_exposure(toy.ft, toy.tokenizer, toy.canary, method="extrapolated", n_samples=500)
    assert r.method == "extrapolated" and r.rank is None and r.to_dict()["estimate"] is True
    assert r.exposure_bits > 8  # memorised: far in the tail
    assert r.exposure_bits <= r.max_exposure_bits


def test_canary_info_errors():
    with pytest.raises(DataError, match="canary"):
        Canary.from_info(None)
    with pytest.raises(DataError, match="missing"):
        Canary.from_info({"template": "My ID is {secret}.", "alphabet": "0123456789", "length": 6})
    with pytest.raises(DataError, match="candidates"):
        Canary.from_info({"template": "x {secret}", "alphabet": "01", "length": 3, "secret": "010",
                          "candidates": 9})
    with pytest.raises(DataError, match="secret"):
        Canary.from_info({"template": "x {secret}", "alphabet": "01", "length": 3, "secret": "012"})
    c = Canary.from_info({"template": "x {secret}", "alphabet": "01", "length": 3, "secret": "011"})
    assert all_secrets(c.spec)[c.index()] == "011" == c.spec.secret_at(c.index())
