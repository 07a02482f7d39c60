import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from privtune.data.schema import Record, Span
from privtune.errors import ConfigError
from privtune.evaluation.tokens import encode, score_records


class Bigram(torch.nn.Module):
    """logits(x_t | x_<t) = table[x_{t-1}]: a model whose every token probability is known by hand."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table.clone())
        self.config = SimpleNamespace(vocab_size=table.shape[0])

    def get_output_embeddings(self):
        return None

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids])


def hand_nll(table, ids):
    """-ln softmax(table[ids[t-1]])[ids[t]] for t = 1..T-1, in plain Python."""
    out = []
    for prev, cur in zip(ids[:-1], ids[1:]):
        row = table[prev].tolist()
        lse = math.log(sum(math.exp(v) for v in row))
        out.append(lse - row[cur])
    return out


@pytest.fixture
def bigram(tokenizer):
    g = torch.Generator().manual_seed(0)
    return Bigram(torch.randn(len(tokenizer), len(tokenizer), generator=g) * 3)


def recs():
    return [Record("a", "Customer Ada Lovelace called from 5551234567.",
                   [Span(9, 21, "PERSON"), Span(34, 44, "PHONE")]),
            Record("b", "Order 12 shipped today."),
            Record("c", "Customer Alan Turing called.", [Span(9, 20, "PERSON")])]


def test_nll_top1_and_mask_match_hand_computation(tokenizer, bigram):
    rs = recs()
    ts = score_records(bigram, tokenizer, rs)
    enc = encode(tokenizer, rs, max_length=512)
    table = bigram.table.detach()
    for i, e in enumerate(enc):
        sl = ts.record(i)
        np.testing.assert_allclose(ts.nll[sl], hand_nll(table, e.input_ids), rtol=1e-5, atol=1e-5)
        top1 = [int(table[p].argmax()) == c for p, c in zip(e.input_ids[:-1], e.input_ids[1:])]
        assert ts.correct[sl].tolist() == top1
        # causal shift: predicted token t carries token t's sensitivity (BOS, token 0, is never predicted)
        assert ts.sensitive[sl].tolist() == list(e.sensitive[1:])
        labels = [ts.labels[j] if j >= 0 else None for j in ts.label[sl]]
        assert labels == list(e.span_label[1:])
    assert ts.n_tokens == sum(len(e.input_ids) - 1 for e in enc)
    assert set(ts.labels) == {"PERSON", "PHONE"}
    assert ts.sensitive[ts.record(1)].sum() == 0


def test_batching_and_padding_do_not_change_scores(tokenizer, toy):
    rs = toy.train[:7] + recs()
    big = score_records(toy.ft, tokenizer, rs)
    small = score_records(toy.ft, tokenizer, rs, batch_tokens=40)  # one or two records per batch
    np.testing.assert_allclose(big.nll, small.nll, atol=1e-4)
    assert (big.correct == small.correct).all()


def test_per_record_mean_and_select(tokenizer, bigram):
    ts = score_records(bigram, tokenizer, recs())
    means = ts.per_record_mean(mask=ts.sensitive)
    assert np.isnan(means[1])  # no sensitive token
    np.testing.assert_allclose(means[0], ts.nll[ts.record(0)][ts.sensitive[ts.record(0)]].mean())
    sub = ts.select([2, 0])
    assert sub.record_ids == ["c", "a"]
    np.testing.assert_array_equal(sub.nll[sub.record(1)], ts.nll[ts.record(0)])
    assert (ts.per_record_count() == np.diff(ts.offsets)).all()


def test_tokenizer_that_does_not_fit_the_model_is_refused(tokenizer):
    small = Bigram(torch.zeros(50, 50))
    with pytest.raises(ConfigError, match="tokenizer"):
        score_records(small, tokenizer, recs())
