import zlib

import numpy as np
import pytest

from privtune.data.schema import Record, Span
from privtune.evaluation.mia import ATTACKS, MIAView, attack_metrics, membership_inference
from privtune.evaluation.tokens import TokenScores, encode, score_records


def ts(nll, sensitive, offsets):
    nll = np.asarray(nll, float)
    return TokenScores([f"r{i}" for i in range(len(offsets) - 1)], np.asarray(offsets), nll, nll < 1,
                       np.asarray(sensitive, bool), np.where(np.asarray(sensitive, bool), 0, -1), ("PERSON",))


RECS = [Record("a", "Ada Lovelace wrote", [Span(0, 12, "PERSON")]), Record("b", "no names here at all")]
# record a: tokens 0..4, record b: tokens 5..9
NLL = [0.5, 1.0, 3.0, 0.1, 2.0, 4.0, 1.0, 1.0, 2.0, 0.2]
SENS = [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
BASE = [1.5, 2.0, 3.0, 0.1, 2.0, 4.0, 1.0, 1.0, 2.0, 0.2]


def view(sensitive=False):
    return MIAView.of(RECS, ts(NLL, SENS, [0, 5, 10]), ts(BASE, SENS, [0, 5, 10]), sensitive=sensitive)


def test_attack_scores_by_hand():
    assert ATTACKS.names() == ["loss", "min_k", "reference", "zlib"]
    np.testing.assert_allclose(ATTACKS.get("loss")().scores(view()), [-6.6 / 5, -8.2 / 5])
    np.testing.assert_allclose(ATTACKS.get("reference")().scores(view()), [2.0 / 5, 0.0])
    zl = [len(zlib.compress(r.text.encode(), 9)) for r in RECS]
    np.testing.assert_allclose(ATTACKS.get("zlib")().scores(view()), [-6.6 / 5 / zl[0], -8.2 / 5 / zl[1]])
    # min-k (k = 20%): ceil(0.2 * 5) = 1 lowest log-prob per record
    np.testing.assert_allclose(ATTACKS.get("min_k")().scores(view()), [-3.0, -4.0])
    s = ATTACKS.get("loss")().scores(view(sensitive=True))
    assert s[0] == pytest.approx(-0.75) and np.isnan(s[1])  # record b has no sensitive token
    zs = ATTACKS.get("zlib")().scores(view(sensitive=True))
    assert zs[0] == pytest.approx(-0.75 / len(zlib.compress(b"Ada Lovelace", 9)))


def test_metrics_drop_records_without_tokens():
    r = attack_metrics(np.array([2.0, np.nan, 3.0]), np.array([1.0, 0.0]))
    assert r.auc == 1.0 and r.n_members == 2 and r.n_nonmembers == 2 and r.tpr_at_1pct_fpr == 1.0
    assert r.advantage == 1.0
    assert r.to_dict()["fpr_resolution"] == 0.5


def test_memorised_model_is_detected_and_untouched_model_is_not(toy):
    enc_tr = encode(toy.tokenizer, toy.train, max_length=512)
    enc_te = encode(toy.tokenizer, toy.test, max_length=512)
    s = {(n, sp): score_records(m, toy.tokenizer, r, encoded=e)
         for n, m in (("ft", toy.ft), ("base", toy.base))
         for sp, r, e in (("tr", toy.train, enc_tr), ("te", toy.test, enc_te))}
    res = membership_inference(members=toy.train, nonmembers=toy.test, members_ft=s["ft", "tr"],
                               nonmembers_ft=s["ft", "te"], members_base=s["base", "tr"],
                               nonmembers_base=s["base", "te"]).to_dict()
    for key in ("loss", "loss_sensitive", "reference", "reference_sensitive", "min_k", "zlib"):
        assert res[key]["auc"] > 0.9, key
        assert res[key]["n_members"] == 24 and res[key]["n_nonmembers"] == 24
    assert res["reference"]["tpr_at_1pct_fpr"] > 0.5
    # the base model as the "fine-tuned" model: the reference attack has nothing to go on
    none = membership_inference(members=toy.train, nonmembers=toy.test, members_ft=s["base", "tr"],
                                nonmembers_ft=s["base", "te"], members_base=s["base", "tr"],
                                nonmembers_base=s["base", "te"], attacks=["reference"]).to_dict()
    assert none["reference"]["auc"] == 0.5 and none["reference"]["tpr_at_1pct_fpr"] == 0.0
    assert set(none) == {"definition", "reference", "reference_sensitive"}
