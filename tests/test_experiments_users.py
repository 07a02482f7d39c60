"""The privacy unit in studies and reports: `privacy_unit` as a grid dimension of DP methods, `records_per_user` as a
generator option, the unit beside every ε, the group bound of record-level runs, per-person tables and the
record-level vs user-level comparison (hand-built result rows)."""

import pytest

from privtune.errors import ConfigError
from privtune.experiments import tables
from privtune.experiments import users as U
from privtune.experiments.analysis import views
from privtune.experiments.config import parse_study
from privtune.experiments.findings import findings
from privtune.experiments.analysis import groups
from privtune.experiments.report import build_report
from privtune.experiments.store import make_row

from _exp_helpers import eval_json, grid, row, run_json

BASE = {"name": "u", "methods": ["lora", "dp-lora", "dp-fft"], "budgets": [8], "epochs": [1],
        "datasets": {"cs": {"generator": "customersim", "train": 40, "test": 20, "records_per_user": 4}}}


def test_privacy_unit_is_a_grid_dimension_of_dp_methods():
    plain = parse_study(dict(BASE)).expand()
    both = parse_study({**BASE, "privacy_unit": ["record", "user"]})
    runs = both.expand()
    # lora once; dp-lora and dp-fft once per unit
    assert len(plain) == 3 and len(runs) == 5
    assert [r.privacy_unit for r in runs] == [None, "record", "user", "record", "user"]
    assert both.datasets["cs"].options["records_per_user"] == 4
    assert both.to_dict()["privacy_unit"] == ["record", "user"]
    user = runs[2]
    assert user.grid()["privacy_unit"] == "user" and user.train_config("/d")["privacy_unit"] == "user"
    assert "-eps8-user-" in user.run_id and "privacy_unit" not in runs[0].train_config("/d")
    assert "privacy_unit" not in runs[0].grid() and "privacy_unit" not in plain[1].grid()
    # a study without `privacy_unit` keeps its run ids; the unit names distinct runs
    assert {r.run_id for r in plain} & {r.run_id for r in runs} == {plain[0].run_id}
    assert len({r.run_id for r in runs}) == 5
    one = parse_study({**BASE, "privacy_unit": "user"}).expand()
    assert [r.privacy_unit for r in one] == [None, "user", "user"]


@pytest.mark.parametrize("bad", ["person", [], ["user", "user"], 1])
def test_bad_privacy_unit_is_a_one_line_error(bad):
    with pytest.raises(ConfigError, match="privacy_unit") as e:
        parse_study({**BASE, "privacy_unit": bad})
    assert "\n" not in str(e.value)


def test_privacy_unit_belongs_to_the_grid_not_to_train():
    with pytest.raises(ConfigError, match="set by the study grid"):
        parse_study({**BASE, "train": {"privacy_unit": "user"}})


def users_eval(*, gain_train, gain_test, auc, exposure=None, copies=4):
    return {"definition": {"mia_user": "people"}, "user_key": "user", "available": True, "reason": None,
            "n_train_users": 10, "n_test_users": 5, "n_users_in_both": 0,
            "records_per_user": {"min": 4, "median": 4.0, "max": 4},
            "sensitive_gain_per_user": {"train": gain_train, "test": gain_test, "train_max": gain_train * 2,
                                        "memorization_nats": gain_train - gain_test},
            "mia_user": {"loss": {"auc": auc, "tpr_at_1pct_fpr": 0.1}, "zlib": {"auc": auc - 0.05}},
            "exposure_per_user": ({"exposure_bits": exposure, "copies_per_owner": {"max": copies}}
                                  if exposure is not None else None)}


def unit_row(method, unit, *, eps=8.0, gain, util, wall, steps=30, group=None, user_gain, user_test=0.01, auc,
             seed=0, state_unit=True):
    rj = run_json(method, eps=eps, wall=wall, steps=steps)
    if state_unit:
        rj["privacy_unit"] = unit
    if unit == "user":
        rj.update(n_users=10, max_records_per_user=4)
    if group is not None:
        rj["user_group_epsilon"] = group
    ev = eval_json(nll_train=3.0 - gain, util=util, exposure=5.0 if unit == "record" else 2.0)
    ev["users"] = users_eval(gain_train=user_gain, gain_test=user_test, auc=auc, exposure=ev["exposure"]
                             ["exposure_bits"])
    return make_row(run_id=f"{method}-{unit}-{seed}", status="completed",
                    grid={**grid(method, eps, seed), "privacy_unit": unit}, run_dir=f"runs/{method}-{unit}",
                    run_json=rj, eval_json=ev)


def pair_rows():
    """dp-lora at ε = 8 per record (group bound 21.5 for 4 records) and per user; a plain LoRA run."""
    lora = row("lora", gain=0.3, util=2.2, wall=50.0)
    return [lora,
            unit_row("dp-lora", "record", gain=0.08, util=2.30, wall=60.0,
                     group={"epsilon": 21.5, "delta": 1e-5, "group_size": 4, "kind": "bound"},
                     user_gain=0.09, auc=0.62),
            unit_row("dp-lora", "user", gain=0.02, util=2.40, wall=90.0, user_gain=0.015, auc=0.52)]


def test_unit_beside_every_epsilon_and_the_group_bound():
    lora, rec, usr = views(pair_rows())
    assert U.privacy_unit(lora) is None and U.privacy_unit(rec) == "record" and U.privacy_unit(usr) == "user"
    assert U.group_bound(rec) == (21.5, 4) and U.group_bound(usr) is None
    assert tables.epsilon_text(rec) == ("8.00 per record (certified, pld, δ = 1e-05); group bound for a user with 4 "
                                        "records: ε ≤ 21.50")
    assert tables.epsilon_text(usr) == "8.00 per user (certified, pld, δ = 1e-05)"
    assert tables.epsilon_short(usr) == "8.00 per user (certified, pld)"
    assert tables.epsilon_short(lora) == "∞ (no DP)"
    assert rec.label == "dp-lora ε=8 per record" and usr.label == "dp-lora ε=8 per user"
    # a number as user_group_epsilon, with k from max_records_per_user; a row that states no unit reads as before
    old = views([row("dp-fft", eps=8.0, gain=0.05, util=2.3)])[0]
    assert U.privacy_unit(old) == "record" and tables.epsilon_short(old) == "8.00 (certified, pld)"
    old.row.update({"run.user_group_epsilon": 30.0, "run.max_records_per_user": 6})
    assert tables.epsilon_text(old).endswith("per record (certified, pld, δ = 1e-05); group bound for a user with 6 "
                                             "records: ε ≤ 30.00")


def test_comparison_table_by_hand():
    vs = views(pair_rows())
    (rec, usr), = U.pairs(vs)
    assert rec.first.row["grid.privacy_unit"] == "record" and usr.first.row["grid.privacy_unit"] == "user"
    head, rows = U.comparison(vs)
    col = {h: i for i, h in enumerate(head)}
    r, u = rows
    assert r[0] == u[0] == "dp-lora ε=8" and (r[1], u[1]) == ("record", "user")
    assert r[col["protects a user with k records at"]] == "ε ≤ 21.50 for k = 4 (group bound)"
    assert u[col["protects a user with k records at"]] == "ε = 8.00 (the unit; ≤ 4 records used per user)"
    assert (r[col["gain per person train"]], u[col["gain per person train"]]) == ("0.090", "0.015")
    assert (r[col["memorisation per person"]], u[col["memorisation per person"]]) == ("0.080", "0.005")
    assert (r[col["user-level MIA AUC"]], u[col["user-level MIA AUC"]]) == ("0.620 (loss)", "0.520 (loss)")
    assert (r[col["non-sensitive test NLL"]], u[col["non-sensitive test NLL"]]) == ("2.300", "2.400")
    assert (r[col["s per step"]], u[col["s per step"]]) == ("2.000", "3.000")     # 60 / 30, 90 / 30
    assert (r[col["canary exposure (bits)"]], u[col["canary exposure (bits)"]]) == ("5.00", "2.00")
    rows_ci = pair_rows()
    rows_ci[2]["users.sensitive_gain_per_user.memorization_nats_ci"] = "[-0.03, 0.04]"
    assert U.comparison(views(rows_ci))[1][1][col["memorisation per person"]] == "0.005 [-0.030, 0.040]"


def test_no_pair_without_both_units():
    vs = views(pair_rows()[:2])
    assert U.pairs(vs) == [] and U.comparison(vs)[1] == []
    # the unpaired record-level run still states its group bound in the findings
    assert any("group bound for a user with 4 records: ε ≤ 21.50 (a bound)" in s for s in U.findings(vs))


def test_findings_compare_record_and_user_level():
    vs = views(pair_rows())
    text = "\n".join(findings(groups(vs), vs) + U.findings(vs))
    assert ("dp-lora ε=8: user-level against record-level DP at ε = 8: per-person memorisation 0.005 vs 0.080; "
            "per-person sensitive-token gain on training people 0.015 vs 0.090; non-sensitive test NLL 2.400 vs "
            "2.300; canary exposure (bits) 2.0 vs 5.0; strongest user-level MIA AUC 0.520 (loss) vs 0.620 (loss); "
            "1.50× the wall time per step (3.000 s vs 2.000 s). The record-level run's ε = 8 is per record: a user "
            "with 4 records is protected only at ε ≤ 21.50 (group bound).") in text
    # intervals over people (one seed): overlapping ones are said to overlap
    rows = pair_rows()
    rows[1]["users.sensitive_gain_per_user.memorization_nats_ci"] = "[0.02, 0.14]"
    rows[2]["users.sensitive_gain_per_user.memorization_nats_ci"] = "[-0.03, 0.04]"
    vs2 = views(rows)
    assert ("per-person memorisation 0.005 vs 0.080 (95% intervals over people [-0.030, 0.040] vs [0.020, 0.140]: "
            "they overlap, so no difference is claimed);") in " ".join(U.findings(vs2))
    rows[1]["users.sensitive_gain_per_user.memorization_nats_ci"] = "[0.05, 0.14]"
    assert "[-0.030, 0.040] vs [0.050, 0.140]);" in " ".join(U.findings(views(rows)))
    # both units keep their own sentence in the main findings, each ε with its unit
    assert "At ε = 8 (per record, certified, pld accountant" in text and "At ε = 8 (per user, certified" in text
    assert "DP-LoRA (user-level)'s sensitive-token gain on training data is 0.020" in text


def test_report_sections():
    rep = build_report(pair_rows(), study={"name": "u"})
    page, md = rep.html, rep.markdown
    assert "<h2>Per person</h2>" in page and "<h2>Record-level vs user-level DP</h2>" in page
    assert "8.00 per user (certified, pld, δ = 1e-05)" in page and "<td class=\"num\">8.00 per user</td>" in page
    assert "ε ≤ 21.50 for k = 4 (group bound)" in page
    assert "## Record-level vs user-level DP" in md and "| dp-lora ε=8 | user | 8.00 |" in md
    assert "| dp-lora ε=8 per user | completed | 8.00 per user (certified, pld) |" in md
    # a study without people or units has neither section
    plain = build_report([row("lora", gain=0.3, util=2.2), row("dp-lora", eps=8.0, gain=0.05, util=2.3)]).html
    assert "Per person" not in plain and "Record-level vs user-level" not in plain


def test_per_person_table_by_hand():
    head, rows = U.per_person(views(pair_rows()))
    assert len(rows) == 2 and head[0] == "run"
    r = rows[0]
    assert r[1] == "8.00 per record; group bound for a user with 4 records: ε ≤ 21.50"
    assert r[2:] == ["10 / 5", "4–4", "0.090 (0.180)", "0.010", "0.080", "0.620 (loss)", "5.00 bits, 4 copies"]


def test_unit_options_apply_to_one_unit_and_name_distinct_runs():
    study = parse_study({**BASE, "privacy_unit": ["record", "user"], "unit_options": {"user": {"batch_size": 4}}})
    runs = {(r.method, r.privacy_unit): r for r in study.expand()}
    assert runs["dp-lora", "user"].train_config("/d")["batch_size"] == 4
    assert runs["dp-lora", "record"].train_config("/d")["batch_size"] == 16
    assert runs["lora", None].train_config("/d")["batch_size"] == 16
    plain = {(r.method, r.privacy_unit): r.run_id for r in parse_study({**BASE, "privacy_unit": ["record", "user"]})
             .expand()}
    assert plain["dp-lora", "user"] != runs["dp-lora", "user"].run_id
    assert plain["dp-lora", "record"] == runs["dp-lora", "record"].run_id
    with pytest.raises(ConfigError, match="unit_options.user"):
        parse_study({**BASE, "privacy_unit": "record", "unit_options": {"user": {"batch_size": 4}}})
    with pytest.raises(ConfigError, match="unit_options.user.batch_sise"):
        parse_study({**BASE, "privacy_unit": "user", "unit_options": {"user": {"batch_sise": 4}}})
