"""Per-person measures: hand-computed cases (people of one and of several records, members and non-members) and the
``users`` section of a memorising toy model whose records are post-processed into people."""

import numpy as np
import pytest

from privtune.data.schema import Dataset, DatasetInfo, Record, Span
from privtune.errors import DataError
from privtune.evaluation import stats
from privtune.evaluation import users as U
from privtune.evaluation.evaluate import EvalConfig, evaluate_models
from privtune.evaluation.tokens import TokenScores


def ts(nll, sensitive, offsets):
    nll = np.asarray(nll, float)
    sens = np.asarray(sensitive, bool)
    return TokenScores([f"r{i}" for i in range(len(offsets) - 1)], np.asarray(offsets), nll, nll < 1, sens,
                       np.where(sens, 0, -1).astype(np.int32), ("PERSON",))


def rec(rid, user=None, key="user", **meta):
    return Record(rid, "Ada called", [Span(0, 3, "PERSON")], {**({key: user} if user is not None else {}), **meta})


# train: r0 (A) 3 tokens, r1 (A) 1 token, r2 (B) 2 tokens; test: r3 (C) 1 token, r4 (D) 1 non-sensitive token
TRAIN_FT = ts([1, 2, 3, 0.5, 1, 1], [1, 1, 0, 1, 1, 0], [0, 3, 4, 6])
TRAIN_BASE = ts([2, 4, 3, 1.5, 1, 1], [1, 1, 0, 1, 1, 0], [0, 3, 4, 6])
TEST_FT = ts([2, 5], [1, 0], [0, 1, 2])
TEST_BASE = ts([2.5, 1], [1, 0], [0, 1, 2])


def test_gain_per_person_is_token_weighted_within_a_person_and_averaged_over_people():
    g = U.sensitive_gain_per_user(train=TRAIN_FT, train_base=TRAIN_BASE, test=TEST_FT, test_base=TEST_BASE,
                                  train_owners=["A", "A", "B"], test_owners=["C", "D"])
    # A: sensitive ft 1, 2, 0.5 vs base 2, 4, 1.5 -> g_A = (7.5 - 3.5) / 3 = 4/3 (a mean over A's records would be
    # (1.5 + 1) / 2 = 1.25); B: 1 vs 1 -> 0; train = (4/3 + 0) / 2
    assert g["train"] == pytest.approx(2 / 3) and g["train_max"] == pytest.approx(4 / 3)
    assert g["train_median"] == pytest.approx(2 / 3) and g["n_train_users"] == 2
    assert g["train_nll"] == pytest.approx((3.5 / 3 + 1) / 2) and g["train_nll_base"] == pytest.approx((2.5 + 1) / 2)
    # C: 2.5 - 2 = 0.5; D has no sensitive token and is left out
    assert g["test"] == pytest.approx(0.5) and g["n_test_users"] == 1
    assert g["memorization_nats"] == pytest.approx(2 / 3 - 0.5)
    # one person owning every training record: the person's pooled gain, 4 tokens: (7.5 + 1 - 4.5) / 4
    one = U.sensitive_gain_per_user(train=TRAIN_FT, train_base=TRAIN_BASE, test=TEST_FT, test_base=TEST_BASE,
                                    train_owners=["A", "A", "A"], test_owners=["C", "D"])
    assert one["train"] == pytest.approx(1.0) and one["n_train_users"] == 1
    # every record its own person: the mean over records of their gains
    each = U.sensitive_gain_per_user(train=TRAIN_FT, train_base=TRAIN_BASE, test=TEST_FT, test_base=TEST_BASE,
                                     train_owners=["A", "B", "C"], test_owners=["D", "E"])
    assert each["train"] == pytest.approx((1.5 + 1 + 0) / 3)
    # a training person's test record is not an unseen person's: C's record goes, D has no sensitive token
    shared = U.sensitive_gain_per_user(train=TRAIN_FT, train_base=TRAIN_BASE, test=TEST_FT, test_base=TEST_BASE,
                                       train_owners=["A", "A", "C"], test_owners=["C", "D"])
    assert shared["test"] is None and shared["n_test_users"] == 0 and shared["n_train_users"] == 2


def test_gain_without_sensitive_tokens_is_none():
    g = U.sensitive_gain_per_user(train=TEST_FT, train_base=TEST_BASE, test=ts([1], [0], [0, 1]),
                                  test_base=ts([1], [0], [0, 1]), train_owners=["A", "A"], test_owners=["B"])
    assert g["test"] is None and g["n_test_users"] == 0 and g["memorization_nats"] is None
    with pytest.raises(ValueError):
        U.person_nll(TRAIN_FT, ["A"], TRAIN_FT.sensitive)


def test_user_scores_average_records_and_skip_nan():
    users, s = U.user_scores(np.array([1.0, 3.0, np.nan, np.nan, 2.0]), ["A", "A", "A", "B", "C"])
    assert users == ["A", "B", "C"]
    np.testing.assert_allclose(s, [2.0, np.nan, 2.0])


def test_user_level_membership_by_hand():
    m, n = np.array([0.9, 0.1, 0.5]), np.array([0.6, 0.2, 0.3])
    r = U.user_membership(m, n, ["A", "A", "B"], ["C", "D", "D"])
    # people: A = 0.5, B = 0.5 (members), C = 0.6, D = 0.25: A and B beat D, lose to C
    assert r["auc"] == pytest.approx(0.5) and r["n_members"] == 2 and r["n_nonmembers"] == 2
    assert r["tpr_at_1pct_fpr"] == 0.0 and r["fpr_resolution"] == 0.5
    # the record-level AUC of the same scores differs (5/9): grouping matters
    from privtune.evaluation.stats import roc_auc
    assert roc_auc(m, n) == pytest.approx(5 / 9)
    # a person with a test record too is a member, and that record's score joins theirs: A = (0.9 + 0.1 + 0.8) / 3
    r2 = U.user_membership(m, np.array([0.8, 0.2, 0.3]), ["A", "A", "B"], ["A", "D", "D"])
    assert r2["n_members"] == 2 and r2["n_nonmembers"] == 1 and r2["auc"] == 1.0
    # a perfect separation over people of one record each
    r3 = U.user_membership(np.array([3.0, 2.0]), np.array([1.0, 0.0]), ["A", "B"], ["C", "D"])
    assert r3["auc"] == 1.0 and r3["tpr_at_1pct_fpr"] == 1.0


def test_find_owners_none_all_or_an_error():
    assert U.find_owners({"train": [rec("a"), rec("b")], "test": [rec("c")]}, "user") is None
    got = U.find_owners({"train": [rec("a", "u1"), rec("b", 7)], "test": [rec("c", "u2")]}, "user")
    assert got == {"train": ["u1", "7"], "test": ["u2"]}
    assert U.find_owners({"train": [rec("a", "x@y.z", key="email")]}, "email") == {"train": ["x@y.z"]}
    with pytest.raises(DataError, match=r"meta.user.*missing on 1 of 3 records \(first: b\)") as e:
        U.find_owners({"train": [rec("a", "u1"), rec("b")], "test": [rec("c", "u2")]}, "user")
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="string"):
        U.find_owners({"train": [rec("a", {"name": "x"})]}, "user")


def test_subsample_keeps_people_whole():
    owners = ["A", "A", "B", "C", "C", "C", "D"]
    assert U.subsample_by_user(owners, None, 0) == list(range(7))
    assert U.subsample_by_user(owners, 7, 0) == list(range(7))
    for seed in range(10):
        keep = U.subsample_by_user(owners, 4, seed)
        kept = {owners[i] for i in keep}
        assert 0 < len(keep) <= 4 and keep == sorted(keep)
        assert all(owners.count(u) == sum(owners[i] == u for i in keep) for u in kept)


def test_records_per_user():
    assert U.records_per_user(["A", "A", "B", "C", "C", "C"]) == {"min": 1, "median": 2.0, "max": 3}
    assert U.records_per_user([]) == {"min": None, "median": None, "max": None}


def test_exposure_per_user():
    canary = [rec(f"c{i}", "u1", canary=True, canary_kind="main") for i in range(3)]
    canary += [rec("c3", "u2", canary=True, canary_kind="main"), rec("a", "u9", canary=True, canary_kind="audit")]
    exp = {"exposure_bits": 12.5, "max_exposure_bits": 16.6, "exposure_bits_base": 1.2, "estimate": False}
    got, why = U.exposure_per_user(exp, canary + [rec("r", "u1")], "user", {"u1": 5, "u2": 1})
    assert why is None and got["owners"] == 2 and got["exposure_bits"] == 12.5
    assert got["copies_per_owner"] == {"min": 1, "median": 2.0, "max": 3} and got["unowned_copies"] == 0
    assert got["other_records_per_owner"] == {"min": 1, "median": 3.0, "max": 5}
    none, why = U.exposure_per_user(exp, [rec("c", canary=True)], "user")
    assert none is None and "name no owner" in why
    assert "no exposure canary" in U.exposure_per_user(exp, [rec("r", "u1")], "user")[1]
    assert "not run" in U.exposure_per_user({"skipped": "x"}, canary, "user")[1]


# -- the users section on a memorising toy model --------------------------------------------------------------------

#: how many records each person owns, in record order: people of one and of several records
SIZES = [1, 3, 2, 4, 1, 1, 5, 2, 1, 4]     # 24 records, 10 people


def owned(records, prefix, key="user"):
    out, i = [], 0
    for p, k in enumerate(SIZES):
        for r in records[i:i + k]:
            out.append(Record(r.id, r.text, r.spans, {**r.meta, key: f"{prefix}{p}"}))
        i += k
    assert i == len(records)
    return out


def users_dataset(toy, *, train_users=True, test_users=True, canary_owner="tr1", key="user"):
    c = toy.canary
    train = owned(toy.train, "tr", key) if train_users else list(toy.train)
    test = owned(toy.test, "te", key) if test_users else list(toy.test)
    text, span = c.spec.render(c.secret)
    meta = {"canary": True, "canary_kind": "main", **({key: canary_owner} if canary_owner else {})}
    train += [Record(f"canary-{k}", text, [span], dict(meta)) for k in range(4)]
    info = DatasetInfo(name="toy-users", source="test", seed=0)
    info.canary = {**c.spec.to_dict(), "secret": c.secret, "repeats": 4}
    return Dataset(info=info, splits={"train": train, "test": test})


@pytest.fixture(scope="module")
def section(toy):
    return evaluate_models(toy.ft, toy.base, toy.tokenizer, users_dataset(toy), only="exposure,users",
                           config=EvalConfig(max_records=None, exposure_method="exact"))


def test_users_section_of_a_memorising_model(section):
    us = section["users"]
    assert section["stages"] == ["exposure", "users"] and us["definition"] and us["available"]
    assert us["n_train_users"] == 10 and us["n_test_users"] == 10 and us["n_users_in_both"] == 0
    assert us["records_per_user"] == {"min": 1, "median": 2.0, "max": 5}
    g = us["sensitive_gain_per_user"]
    assert g["train"] > g["test"] + 0.5 and g["memorization_nats"] == pytest.approx(g["train"] - g["test"])
    assert g["n_train_users"] == 10 == g["n_test_users"]
    for attack in ("loss", "loss_sensitive", "reference", "min_k", "zlib"):
        assert us["mia_user"][attack]["auc"] > 0.9, attack
        assert us["mia_user"][attack]["n_members"] == 10 and us["mia_user"][attack]["n_nonmembers"] == 10
    e = us["exposure_per_user"]
    assert e["exposure_bits"] == section["exposure"]["exposure_bits"] and e["owners"] == 1
    assert e["copies_per_owner"]["max"] == 4 and e["other_records_per_owner"]["max"] == 3
    assert us["exposure_per_user_reason"] is None
    assert not any("tr1" in str(v) for v in us.values())   # no owner id reaches eval.json


def test_an_untrained_model_shows_no_user_membership(toy):
    res = evaluate_models(toy.base, toy.base, toy.tokenizer, users_dataset(toy), only="users",
                          config=EvalConfig(max_records=None))
    us = res["users"]
    assert us["sensitive_gain_per_user"]["train"] == pytest.approx(0.0, abs=1e-9)
    assert us["mia_user"]["reference"]["auc"] == 0.5        # base vs itself: every score ties
    assert "not run" in us["exposure_per_user_reason"]


def test_without_owners_the_measures_are_null_with_a_reason(toy):
    ds = users_dataset(toy, train_users=False, test_users=False, canary_owner=None)
    us = evaluate_models(toy.ft, toy.base, toy.tokenizer, ds, only="users")["users"]
    assert us["available"] is False and "no record names its owner" in us["reason"]
    assert us["mia_user"] is None and us["sensitive_gain_per_user"] is None and us["n_train_users"] is None
    assert us["exposure_per_user"] is None and us["exposure_per_user_reason"]


def test_an_owner_key_missing_on_some_records_is_an_error_only_for_the_users_stage(toy):
    ds = users_dataset(toy, test_users=False)
    with pytest.raises(DataError, match="missing on 24 of 48 records"):
        evaluate_models(toy.ft, toy.base, toy.tokenizer, ds, only="users")
    assert "privacy" in evaluate_models(toy.ft, toy.base, toy.tokenizer, ds, only="privacy")


def test_record_level_intervals_resample_people_where_the_data_names_them(toy):
    owned_res = evaluate_models(toy.ft, toy.base, toy.tokenizer, users_dataset(toy), only="privacy,utility")
    plain = evaluate_models(toy.ft, toy.base, toy.tokenizer, users_dataset(toy, train_users=False,
                                                                             test_users=False, canary_owner=None),
                            only="privacy,utility")
    for stage in ("privacy", "utility"):
        assert owned_res[stage]["interval"]["method"].endswith("(each person's records together)")
        assert plain[stage]["interval"]["method"].endswith("over records")
    p, q = owned_res["privacy"], plain["privacy"]
    assert p["memorization_nats"] == pytest.approx(q["memorization_nats"])    # same records, same figure
    assert p["memorization_nats_ci"] != q["memorization_nats_ci"]             # other resamples: people


def test_user_key_picks_another_field_and_subsampling_keeps_people_whole(toy):
    ds = users_dataset(toy, key="customer")
    assert evaluate_models(toy.ft, toy.base, toy.tokenizer, ds, only="users")["users"]["available"] is False
    res = evaluate_models(toy.ft, toy.base, toy.tokenizer, ds, only="users",
                          config=EvalConfig(max_records=10, user_key="customer"))
    us = res["users"]
    assert us["available"] and us["user_key"] == "customer"
    assert 0 < res["records"]["train"] <= 10 and 0 < res["records"]["test"] <= 10
    # every kept person brought all their records: the evaluated records are a union of whole people
    assert us["records_per_user"]["max"] <= 5
    run_key = evaluate_models(toy.ft, toy.base, toy.tokenizer, ds, only="users", run_info={"user_key": "customer"})
    assert run_key["users"]["available"]


def test_intervals_over_people():
    assert stats.percentile_interval(np.array([])) is None
    # one person per split: every resample is that person, the interval is the point
    g = U.sensitive_gain_per_user(train=TRAIN_FT, train_base=TRAIN_BASE, test=TEST_FT, test_base=TEST_BASE,
                                  train_owners=["A", "A", "A"], test_owners=["C", "D"])
    assert g["train_ci"] == pytest.approx([1.0, 1.0]) and g["test_ci"] == pytest.approx([0.5, 0.5])
    assert g["memorization_nats_ci"] == pytest.approx([0.5, 0.5]) and g["interval"]["method"].endswith("people")
    # two people (4/3 and 0): resampled means lie in {0, 2/3, 4/3}; the interval covers the mean, inside the range
    two = U.sensitive_gain_per_user(train=TRAIN_FT, train_base=TRAIN_BASE, test=TEST_FT, test_base=TEST_BASE,
                                    train_owners=["A", "A", "B"], test_owners=["C", "D"])
    lo, hi = two["train_ci"]
    assert lo == pytest.approx(0.0) and hi == pytest.approx(4 / 3)
    assert two["memorization_nats_ci"] == pytest.approx([-0.5, 4 / 3 - 0.5])
    boot = U.bootstrap_means(np.array([0.0, 1.0, 2.0, 3.0]))
    assert boot.shape == (stats.N_RESAMPLES,) and abs(boot.mean() - 1.5) < 0.1


def test_an_owner_of_another_type_is_a_one_line_error_naming_the_fix():
    recs = [rec("r0", "ada"), rec("r1", {"id": 3})]
    with pytest.raises(DataError, match=r"meta.user.*a dict in record 'r1'.*--user-key") as e:
        U.find_owners({"train": recs}, "user")
    assert "\n" not in str(e.value)
