"""Record owners: repeat users in the generators, user statistics, the checks user-level DP relies on."""

import json

import pytest

from privtune.data.schema import Record
from privtune.data.stats import dataset_stats
from privtune.data.synth import generate, synth_dataset
from privtune.data.users import dominant_user_warning, group_by_user, user_summary
from privtune.errors import ConfigError, DataError
from _cli_helpers import run

LABELS = {"customersim": ("PERSON", "PHONE", "ADDRESS"), "synbio": ("PERSON",)}


def owned(splits, split):
    out = {}
    for r in splits[split]:
        if not r.is_canary:
            out.setdefault(r.meta["user"], []).append(r)
    return out


@pytest.mark.parametrize("name", ["customersim", "synbio"])
def test_repeat_users_keep_identity_and_get_new_orders(name):
    splits, info = generate(name, n_train=40, n_test=9, seed=5, records_per_user=4, canary_repeats=3)
    assert info.params["records_per_user"] == 4
    train, test = owned(splits, "train"), owned(splits, "test")
    assert sorted(len(v) for v in train.values()) == [4] * 10
    assert sorted(len(v) for v in test.values()) == [1, 4, 4]
    assert not set(train) & set(test)  # train and test people are disjoint
    for recs in train.values():
        persons = {r.span_text(s) for r in recs for s in r.spans if s.label == "PERSON" and " " in r.span_text(s)}
        assert len(persons) == 1  # the same person in every record of the user
        for label in LABELS[name][1:]:
            vals = {r.span_text(s) for r in recs for s in r.spans if s.label == label}
            assert len(vals) <= 1, label
        if name == "customersim":  # a new order in every dialog
            orders = [r.span_text(s) for r in recs for s in r.spans if s.label == "ORDER_ID"]
            assert len(orders) == len(set(orders)) == 4
    people = [{r.span_text(s) for r in recs for s in r.spans if s.label == "PERSON" and " " in r.span_text(s)}
              for recs in list(train.values()) + list(test.values())]
    assert len(set().union(*people)) == len(people)  # different users are different people
    canaries = [r for r in splits["train"] if r.is_canary]
    assert {r.meta["user"] for r in canaries} == {f"{'cs' if name == 'customersim' else 'sb'}-canary-user"}


def test_default_output_unchanged_and_has_no_owner():
    a, _ = generate("customersim", n_train=20, n_test=5, seed=1)
    b, _ = generate("customersim", n_train=20, n_test=5, seed=1, records_per_user=1)
    assert all("user" not in r.meta for r in a["train"] + a["test"])
    # K = 1: the same documents, each naming its own user
    assert [r.text for r in a["train"]] == [r.text for r in b["train"]]
    assert len({r.meta["user"] for r in b["train"] if not r.is_canary}) == 20


@pytest.mark.parametrize("k", [0, -2, 1.5, True])
def test_records_per_user_must_be_positive_int(k):
    with pytest.raises(ConfigError, match="records-per-user"):
        generate("customersim", n_train=5, records_per_user=k)


def test_user_summary_and_stats(tmp_path):
    path = synth_dataset("synbio", out=tmp_path / "d", n_train=10, n_test=3, seed=0, records_per_user=3,
                         canary_repeats=0)
    st = dataset_stats(path).to_dict()["users"]
    assert st["train"]["users"] == 4 and st["train"]["min_records_per_user"] == 1
    assert st["train"]["median_records_per_user"] == 3 and st["train"]["max_records_per_user"] == 3
    assert st["test"]["users"] == 1 and st["shared_users"] == 0
    other = dataset_stats(path, user_key="nope").to_dict()["users"]
    assert other["train"]["users"] == 0 and other["train"]["records_without_user"] == 10


def rec(i, user):
    return Record(id=f"r{i}", text="x", meta={} if user is None else {"user": user})


def test_group_by_user_refuses_missing_owners():
    assert group_by_user([rec(0, "a"), rec(1, 7), rec(2, "a")]) == [[0, 2], [1]]
    with pytest.raises(DataError, match="no record naming an owner"):
        group_by_user([rec(0, None), rec(1, None)])
    with pytest.raises(DataError, match=r"1 of 3 records without it \(e.g. record 'r1'\)") as e:
        group_by_user([rec(0, "a"), rec(1, None), rec(2, "b")])
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="string or integer"):
        group_by_user([Record(id="r", text="x", meta={"user": {"a": 1}})])


def test_dominant_user_warning_names_the_figure():
    groups = group_by_user([rec(i, "big" if i < 7 else f"u{i}") for i in range(10)])
    w = dominant_user_warning(groups, 10)
    assert w and "7 of the 10" in w and "70%" in w
    assert dominant_user_warning(group_by_user([rec(i, f"u{i % 5}") for i in range(10)]), 10) is None
    s = user_summary([rec(0, "a"), rec(1, "a"), rec(2, None)])
    assert (s.users, s.records_without_user, s.max_records_per_user) == (1, 1, 2)


def test_cli_stats_reports_users(tmp_path, capsys):
    code, out, err = run(["data", "synth", "customersim", "--out", str(tmp_path / "d"), "--train", "9", "--test",
                          "2", "--records-per-user", "3", "--canary-repeats", "0"], capsys)
    assert code == 0, err
    code, out, _ = run(["data", "stats", str(tmp_path / "d"), "--json"], capsys)
    assert json.loads(out)["users"]["train"]["users"] == 3
    code, _, err = run(["data", "stats", str(tmp_path / "d")], capsys)  # the table goes to the console (stderr)
    assert code == 0 and "records / user" in err and "3 / 3 / 3" in err
    code, _, err = run(["data", "synth", "customersim", "--out", str(tmp_path / "e"), "--records-per-user", "0"],
                       capsys)
    assert code == 2 and "records-per-user" in err and len(err.strip().splitlines()) == 1


def test_records_per_user_range_draws_counts():
    a, info = generate("synbio", n_train=60, n_test=10, seed=2, records_per_user="1-4", canary_repeats=0)
    assert info.params["records_per_user"] == "1-4"
    counts = [len(v) for v in owned(a, "train").values()]
    assert sum(counts) == 60 and set(counts[:-1]) <= {1, 2, 3, 4} and len(set(counts)) >= 3
    assert not set(owned(a, "train")) & set(owned(a, "test"))
    for bad in ("4-2", "0-3", "a-b", "1-2-3"):
        with pytest.raises(ConfigError, match="records-per-user"):
            generate("synbio", n_train=5, records_per_user=bad)
