import math

import numpy as np
import pytest

from privtune.errors import ConfigError
from privtune.evaluation.memorization import privacy_measures, utility_measures
from privtune.evaluation.tokens import TokenScores, encode, score_records


def scores(nll, sensitive, label, labels=("PERSON", "PHONE"), offsets=None, correct=None):
    nll = np.asarray(nll, float)
    return TokenScores(record_ids=[f"r{i}" for i in range(len(offsets) - 1)] if offsets else ["r0"],
                       offsets=np.asarray(offsets or [0, nll.size]), nll=nll,
                       correct=np.asarray(correct if correct is not None else nll < 0.5, bool),
                       sensitive=np.asarray(sensitive, bool), label=np.asarray(label), labels=labels)


def test_privacy_and_utility_by_hand():
    sens = [1, 1, 0, 1, 0, 0]
    lab = [0, 0, -1, 1, -1, -1]
    train = scores([0.1, 0.3, 2.0, 1.1, 3.0, 1.0], sens, lab, offsets=[0, 3, 6])
    train_b = scores([2.0, 2.0, 2.0, 4.0, 3.0, 1.0], sens, lab, offsets=[0, 3, 6])
    test = scores([1.5, 2.5, 1.0, 3.0, 2.0, 4.0], sens, lab, offsets=[0, 3, 6])
    test_b = scores([2.0, 3.0, 2.0, 3.5, 2.0, 4.0], sens, lab, offsets=[0, 3, 6])
    p = privacy_measures(train=train, train_base=train_b, test=test, test_base=test_b).to_dict()
    assert p["sensitive_train_nll"] == pytest.approx(0.5)          # (0.1 + 0.3 + 1.1) / 3
    assert p["sensitive_train_nll_base"] == pytest.approx(8 / 3)
    assert p["sensitive_train_nll_diff"] == pytest.approx(0.5 - 8 / 3)
    assert p["sensitive_train_quantiles"] == pytest.approx({"min": 0.1, "q10": 0.14, "median": 0.3})
    assert p["sensitive_train_top1"] == pytest.approx(2 / 3)       # nll < 0.5 marks correct here
    assert p["sensitive_test_nll"] == pytest.approx(7 / 3)
    assert p["sensitive_test_nll_diff"] == pytest.approx(7 / 3 - 8.5 / 3)
    assert p["memorization_nats"] == pytest.approx((7 / 3 - 8.5 / 3) - (0.5 - 8 / 3))
    assert p["per_label"]["PERSON"]["train_nll"] == pytest.approx(0.2)
    assert p["per_label"]["PHONE"]["train_nll_base"] == pytest.approx(4.0)
    assert p["sensitive_train_tokens"] == 3 and p["n_train_records"] == 2
    assert set(p["definition"]) >= {"sensitive_train_nll", "sensitive_test_nll", "memorization_nats"}
    u = utility_measures(test=test, test_base=test_b).to_dict()
    assert u["nonsensitive_test_nll"] == pytest.approx(7 / 3)       # (1.0 + 2.0 + 4.0) / 3
    assert u["nonsensitive_test_nll_base"] == pytest.approx(8 / 3)
    assert u["nonsensitive_test_ppl"] == pytest.approx(math.exp(7 / 3))
    assert "definition" in u


def test_mismatched_token_sets_are_refused():
    a = scores([1.0, 2.0], [1, 0], [0, -1])
    b = scores([1.0], [1], [0])
    with pytest.raises(ConfigError, match="same tokens"):
        privacy_measures(train=a, train_base=b, test=a, test_base=a)


def test_memorised_model_shows_the_train_test_gap_and_base_shows_none(toy):
    enc_tr = encode(toy.tokenizer, toy.train, max_length=512)
    enc_te = encode(toy.tokenizer, toy.test, max_length=512)
    s = {(name, split): score_records(m, toy.tokenizer, recs, encoded=enc)
         for name, m in (("ft", toy.ft), ("base", toy.base))
         for split, recs, enc in (("train", toy.train, enc_tr), ("test", toy.test, enc_te))}
    p = privacy_measures(train=s["ft", "train"], train_base=s["base", "train"], test=s["ft", "test"],
                         test_base=s["base", "test"]).to_dict()
    assert p["sensitive_train_nll"] < 1.0 < p["sensitive_train_nll_base"]
    assert p["sensitive_test_nll"] > p["sensitive_train_nll"] + 2.0
    assert p["memorization_nats"] > 2.0
    assert p["sensitive_train_top1"] > 0.8
    # the untouched model against itself: nothing memorised
    same = privacy_measures(train=s["base", "train"], train_base=s["base", "train"], test=s["base", "test"],
                            test_base=s["base", "test"]).to_dict()
    assert same["sensitive_train_nll_diff"] == 0 and same["memorization_nats"] == 0


def test_every_mean_has_a_bootstrap_interval():
    rng = np.random.default_rng(0)
    n_rec, per = 30, 6
    offsets = list(range(0, n_rec * per + 1, per))
    sens = np.tile([1, 1, 0, 1, 0, 0], n_rec)
    lab = np.tile([0, 0, -1, 1, -1, -1], n_rec)
    base = rng.uniform(1, 3, n_rec * per)
    ft_train = base - np.where(sens == 1, 1.0, 0.1) * rng.uniform(0.5, 1.5, base.size)   # memorised
    ft_test = base - np.where(sens == 1, 0.1, 0.1) * rng.uniform(0.5, 1.5, base.size)
    mk = lambda v: scores(v, sens, lab, offsets=offsets)  # noqa: E731
    p = privacy_measures(train=mk(ft_train), train_base=mk(base), test=mk(ft_test), test_base=mk(base)).to_dict()
    for key in ("sensitive_train_nll", "sensitive_train_nll_base", "sensitive_train_nll_diff", "sensitive_test_nll",
                "sensitive_train_gain", "sensitive_test_gain", "memorization_nats", "sensitive_train_top1"):
        lo, hi = p[f"{key}_ci"]
        assert lo <= p[key] <= hi, key
    assert p["sensitive_train_gain_ci"] == pytest.approx([-p["sensitive_train_nll_diff_ci"][1],
                                                         -p["sensitive_train_nll_diff_ci"][0]])
    assert p["memorization_nats_ci"][0] > 0.5            # clearly memorised: the interval excludes 0
    assert p["sensitive_test_gain_ci"][1] < 0.3
    row = p["per_label"]["PERSON"]
    assert row["train_nll_ci"][0] <= row["train_nll"] <= row["train_nll_ci"][1]
    assert p["interval"]["n_resamples"] == 1000
    u = utility_measures(test=mk(ft_test), test_base=mk(base)).to_dict()
    lo, hi = u["nonsensitive_test_nll_diff_ci"]
    assert lo <= u["nonsensitive_test_nll_diff"] <= hi < 0     # improved beyond its interval
    same = utility_measures(test=mk(base), test_base=mk(base)).to_dict()
    assert same["nonsensitive_test_nll_diff_ci"] == [0.0, 0.0]


def _people_data(n_people=10, per_person=5, seed=1):
    """Train scores where each person's records share one gain (their secrets repeat in every record)."""
    rng = np.random.default_rng(seed)
    n_rec, per = n_people * per_person, 4
    offsets = list(range(0, n_rec * per + 1, per))
    sens = np.tile([1, 0, 1, 0], n_rec)
    lab = np.tile([0, -1, 0, -1], n_rec)
    base = np.full(n_rec * per, 3.0)
    person_gain = rng.uniform(0.0, 2.0, n_people)              # differs a lot between people ...
    rec_gain = np.repeat(person_gain, per_person) + rng.normal(0, 0.05, n_rec)   # ... little within one
    ft = base - np.repeat(rec_gain, per)
    owners = [f"u{i // per_person}" for i in range(n_rec)]
    return (lambda v: scores(v, sens, lab, offsets=offsets)), ft, base, owners


def _width(ci):
    return ci[1] - ci[0]


def test_intervals_resample_people_when_owners_are_named():
    mk, ft, base, owners = _people_data()
    kw = dict(train=mk(ft), train_base=mk(base), test=mk(ft), test_base=mk(base))
    rec = privacy_measures(**kw).to_dict()
    ppl = privacy_measures(**kw, owners={"train": owners, "test": owners}).to_dict()
    assert "over records" in rec["interval"]["method"] and "over people" in ppl["interval"]["method"]
    # the figures themselves do not change, only their uncertainty
    assert ppl["sensitive_train_gain"] == pytest.approx(rec["sensitive_train_gain"])
    # 10 people, not 50 independent records: about sqrt(5) times wider
    assert _width(ppl["sensitive_train_gain_ci"]) > 1.6 * _width(rec["sensitive_train_gain_ci"])
    assert ppl["sensitive_train_gain_ci"][0] <= ppl["sensitive_train_gain"] <= ppl["sensitive_train_gain_ci"][1]
    u_rec = utility_measures(test=mk(ft), test_base=mk(base)).to_dict()
    u_ppl = utility_measures(test=mk(ft), test_base=mk(base), owners={"train": owners, "test": owners}).to_dict()
    assert "over people" in u_ppl["interval"]["method"]
    assert _width(u_ppl["nonsensitive_test_nll_ci"]) > 1.6 * _width(u_rec["nonsensitive_test_nll_ci"])
    assert _width(ppl["sensitive_test_nll_ci"]) > 1.6 * _width(rec["sensitive_test_nll_ci"])
    assert u_rec["nonsensitive_test_nll"] == u_ppl["nonsensitive_test_nll"]


def test_one_record_per_person_gives_the_record_level_intervals():
    mk, ft, base, owners = _people_data(n_people=30, per_person=1)
    kw = dict(train=mk(ft), train_base=mk(base), test=mk(ft), test_base=mk(base))
    rec = privacy_measures(**kw).to_dict()
    ppl = privacy_measures(**kw, owners={"train": owners, "test": owners}).to_dict()
    for key in ("sensitive_train_gain_ci", "sensitive_test_nll_ci", "memorization_nats_ci"):
        assert ppl[key] == rec[key], key


def test_owners_must_match_the_records():
    mk, ft, base, owners = _people_data()
    with pytest.raises(ValueError, match="owners for"):
        privacy_measures(train=mk(ft), train_base=mk(base), test=mk(ft), test_base=mk(base),
                         owners={"train": owners[:-1], "test": owners})
