"""End to end on generator output made into repeat customers: CustomerSim records grouped into people after
generation (a person of one record, people of several), a `privtune train` run on them, then `privtune eval
--user-key`. Independent of the generators' own `--records-per-user`."""

import json

import pytest

from privtune.cli import main
from privtune.data.schema import Record, write_dataset
from privtune.data.synth import generate
from privtune.training.run import train

SIZES = (1, 3, 2)   # records per person, cycled


def as_people(records, prefix, key):
    """Assign consecutive records to people of SIZES records each (canary copies to the first person)."""
    out, p, left = [], 0, SIZES[0]
    for r in records:
        if r.is_canary:
            out.append(Record(r.id, r.text, r.spans, {**r.meta, key: f"{prefix}0"}, r.label))
            continue
        out.append(Record(r.id, r.text, r.spans, {**r.meta, key: f"{prefix}{p}"}, r.label))
        left -= 1
        if not left:
            p += 1
            left = SIZES[p % len(SIZES)]
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("users")
    splits, info = generate("customersim", n_train=18, n_test=12, seed=3, canary_repeats=3)
    splits = {s: as_people(recs, f"{s}-", "customer") for s, recs in splits.items()}
    data = write_dataset(root / "cs", splits, info)
    train(data=str(data), method="lora", model="tiny:gpt_neox", out=root / "run", steps=2, batch_size=4,
          max_length=64, checkpoint_every=2)
    return root / "run", data


def test_cli_eval_with_a_user_key(run, capsys):
    run_dir, data = run
    main(["eval", str(run_dir), "--data", str(data), "--only", "exposure,users", "--user-key", "customer",
          "--exposure-method", "extrapolated", "--json"])
    us = json.loads(capsys.readouterr().out)["users"]
    assert us["available"] and us["user_key"] == "customer"
    assert us["n_train_users"] == 9 and us["n_test_users"] == 6            # 18 = 3 x (1 + 3 + 2), 12 = 2 x 6
    assert us["records_per_user"] == {"min": 1, "median": 2.0, "max": 3}
    assert us["mia_user"]["loss"]["n_members"] == 9 and us["mia_user"]["loss"]["n_nonmembers"] == 6
    assert 0.0 <= us["mia_user"]["loss"]["auc"] <= 1.0
    assert us["exposure_per_user"]["copies_per_owner"]["max"] == 3 and us["exposure_per_user"]["owners"] == 1
    assert json.loads((run_dir / "eval.json").read_text())["users"] == us
    # users alone again: the exposure comes from the eval.json it updates
    main(["eval", str(run_dir), "--data", str(data), "--only", "users", "--user-key", "customer", "--json"])
    again = json.loads(capsys.readouterr().out)["users"]
    assert again["exposure_per_user"] == us["exposure_per_user"] and again["mia_user"] == us["mia_user"]
    # the default key names no owner here: the measures are null, with the reason
    main(["eval", str(run_dir), "--data", str(data), "--only", "users", "--json"])
    assert "no record names its owner" in json.loads(capsys.readouterr().out)["users"]["reason"]


def test_cli_owner_key_missing_on_some_records_exits_with_one_line_and_writes_nothing(run, tmp_path, capsys):
    run_dir, data = run
    from privtune.data.schema import load_dataset

    ds = load_dataset(data)
    test = [Record(r.id, r.text, r.spans, {k: v for k, v in r.meta.items() if k != "customer"} if i < 2 else r.meta)
            for i, r in enumerate(ds.split("test"))]
    partial = write_dataset(tmp_path / "partial", {"train": ds.train, "test": test}, ds.info)
    before = sorted(p.name for p in run_dir.rglob("*"))
    with pytest.raises(SystemExit) as e:
        main(["eval", str(run_dir), "--data", str(partial), "--other-data", "--only", "users", "--user-key",
              "customer"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "meta.customer" in err and "missing on 2 of 30 records" in err
    assert sorted(p.name for p in run_dir.rglob("*")) == before      # no eval file written


def test_cli_eval_says_which_unit_its_intervals_resample(run, capsys):
    run_dir, data = run
    main(["eval", str(run_dir), "--data", str(data), "--only", "privacy", "--user-key", "customer"])
    assert "95% intervals over people" in " ".join(capsys.readouterr().err.split())   # the summary goes to stderr
    main(["eval", str(run_dir), "--data", str(data), "--only", "privacy"])     # no owner under the default key
    assert "95% intervals over records" in " ".join(capsys.readouterr().err.split())
