"""Issue 14: intervals, runs that did not learn, trajectories and comparisons at matched utility in the report."""

import json

import pytest

from privtune.experiments import tables
from privtune.experiments.analysis import groups, views
from privtune.experiments.findings import findings
from privtune.experiments.report import build_report
from privtune.experiments.store import ResultStore

from _exp_helpers import row


def _with_ci(r, *, gain_ci, util_diff_ci, util_ci=None):
    r["privacy.sensitive_train_gain_ci"] = json.dumps(gain_ci)
    r["utility.nonsensitive_test_nll_diff_ci"] = json.dumps(util_diff_ci)
    if util_ci:
        r["utility.nonsensitive_test_nll_ci"] = json.dumps(util_ci)
    return r


def learned_and_not(tmp_path):
    """FFT learned (test NLL 2.1 vs base 2.5, improvement interval [0.3, 0.5]); DP-FFT did not (2.49, interval of
    the NLL difference [-0.03, 0.02] contains 0), through a stored results file."""
    rows = [_with_ci(row("fft", gain=0.5, util=2.1), gain_ci=[0.4, 0.6], util_diff_ci=[-0.5, -0.3]),
            _with_ci(row("lora", gain=0.3, util=2.2), gain_ci=[0.25, 0.35], util_diff_ci=[-0.4, -0.2]),
            _with_ci(row("dp-fft", eps=8.0, gain=0.01, util=2.49), gain_ci=[-0.01, 0.03],
                     util_diff_ci=[-0.03, 0.02])]
    with ResultStore(tmp_path) as store:
        for r in rows:
            store.upsert(r)
        return store.rows()


def test_a_run_that_did_not_learn_is_flagged_everywhere(tmp_path):
    rows = learned_and_not(tmp_path)
    vs = views(rows)
    fft, lora, dp = vs
    assert fft.learned is True and dp.learned is False and not fft.did_not_learn and dp.did_not_learn
    assert fft.ci("gain_train") == [0.4, 0.6] and fft.ci("improvement") == [0.3, 0.5]
    assert dp.label.endswith("(did not learn)") and "did not learn" not in fft.label
    head, trs = tables.runs(vs)
    assert [r[head.index("learned")] for r in trs] == ["yes", "yes", "did not learn"]
    assert trs[0][head.index("gain train [95% CI]")] == "0.500 [0.400, 0.600]"
    for t in (tables.accounting(vs), tables.cost(vs), tables.exposure(vs, groups(vs))):
        assert all("did not learn" in r[0] for r in t[1] if r[0].startswith("dp-fft"))
    text = "\n".join(findings(groups(vs), vs))
    assert "DP-FFT (ε = 8) did not learn: its non-sensitive test NLL (2.490 vs the base model's 2.500; " \
           "improvement 0.010, 95% interval [-0.020, 0.030]) did not improve" in text
    assert "not a privacy result" in text
    assert "% of FFT's" not in text                       # no privacy ratio for a run that learned nothing
    front = next(s for s in text.splitlines() if "Pareto front" in s)
    assert "left out (dp-fft ε=8 (did not learn))" in front and "dp-fft ε=8 (did not learn)," not in front
    rep = build_report(rows)
    assert "did not learn" in rep.markdown and "did not learn" in rep.html


def test_without_intervals_the_point_estimate_decides():
    vs = views([row("fft", gain=0.5, util=2.1), row("dp-lora", eps=8.0, gain=0.0, util=2.6)])
    assert vs[0].learned is True and vs[1].learned is False and vs[0].ci("gain_train") is None


def test_overlapping_intervals_are_not_distinguishable():
    rows = [_with_ci(row("fft", gain=0.5, util=2.1), gain_ci=[0.3, 0.7], util_diff_ci=[-0.5, -0.3]),
            _with_ci(row("lora", gain=0.45, util=2.2), gain_ci=[0.35, 0.55], util_diff_ci=[-0.4, -0.2])]
    vs = views(rows)
    text = "\n".join(findings(groups(vs), vs))
    assert "sensitive-token gains on training data (0.450 [0.350, 0.550] vs 0.500 [0.300, 0.700] nats/token) " \
           "are not distinguishable at this size" in text
    assert "memorised 90% as much" not in text


def test_seed_table_gives_mean_sd_and_each_seed():
    rows = [row("fft", gain=g, util=2.1, seed=s) for s, g in ((0, 0.4), (1, 0.6))]
    from privtune.experiments.analysis import variants

    head, trs = tables.seeds(variants(views(rows)))
    assert trs[0][1] == "0, 1"
    assert trs[0][head.index("gain train")] == f"0.500 ± {0.1414:.3f} (0.400, 0.600)"
    assert tables.seeds(variants(views(rows[:1])))[1] == []
    assert pytest.approx(0.5) == variants(views(rows))[0].mean("gain_train")


def _points(scale=1.0):
    return [{"step": s, "epoch": s / 4, "epsilon": None, "sensitive_train_gain": scale * s / 10,
             "sensitive_train_gain_ci": [scale * s / 10 - 0.01, scale * s / 10 + 0.01],
             "nonsensitive_test_nll": 2.5 - s / 20, "nonsensitive_test_nll_base": 2.5} for s in (0, 2, 4)]


def test_store_keeps_trajectories_and_replaces_them_per_run(tmp_path):
    from privtune.experiments.store import make_row

    with ResultStore(tmp_path) as store:
        store.upsert(make_row(run_id="a", status="completed", grid={}, trajectory=_points()))
        store.upsert(make_row(run_id="b", status="completed", grid={}, trajectory=_points(2.0)))
        store.upsert(make_row(run_id="a", status="completed", grid={}, trajectory=_points()[:2]))
        store.upsert(make_row(run_id="b", status="completed", grid={}))   # no trajectory given: kept
        t = store.trajectories()
        assert "_trajectory" not in store.columns()
        store.delete_missing({"b"})
        assert set(store.trajectories()) == {"b"}
    assert [p["step"] for p in t["a"]] == [0, 2] and [p["step"] for p in t["b"]] == [0, 2, 4]
    assert t["b"][1]["sensitive_train_gain_ci"] == pytest.approx([0.39, 0.41]) and t["b"][1]["epsilon"] is None


def test_rebuild_restores_the_trajectory_table(tmp_path, capsys):
    import test_experiments_store_safety as safety
    from privtune.training.trajectory import TRAJECTORY_FILE

    d = safety.study_dir.__wrapped__(tmp_path)
    run_dirs = sorted(p for p in (d / "runs").iterdir() if (p / "eval.json").is_file())
    for rd in run_dirs:
        (rd / TRAJECTORY_FILE).write_text("".join(json.dumps(p) + "\n" for p in _points()))
    code, _, err = safety.run(["results", str(d), "--rebuild"], capsys)
    assert code == 0, err
    with ResultStore(d, create=False) as s:
        t = s.trajectories()
    assert set(t) == {rd.name for rd in run_dirs} and all(len(v) == 3 for v in t.values())


def test_interpolation_at_a_utility_level_by_hand():
    from privtune.experiments.analysis import interpolate_at, matched_levels

    pts = [{"step": 0, "nonsensitive_test_nll": 1.0, "memorization_nats": 0.0, "memorization_nats_ci": [0.0, 0.0]},
           {"step": 4, "nonsensitive_test_nll": 0.8, "memorization_nats": 0.1, "memorization_nats_ci": [0.05, 0.15]},
           {"step": 8, "nonsensitive_test_nll": 0.6, "memorization_nats": 0.5, "memorization_nats_ci": [0.3, 0.7]}]
    # 0.7 lies half-way between steps 4 and 8: 0.1 + 0.5 * (0.5 - 0.1) = 0.3; interval ends [0.175, 0.425]
    value, ci = interpolate_at(pts, 0.7)
    assert value == pytest.approx(0.3) and ci == pytest.approx([0.175, 0.425])
    # a quarter of the way from step 0 to 4: 0.025, interval [0.0125, 0.0375]
    value, ci = interpolate_at(list(reversed(pts)), 0.95)     # order by step, not by list position
    assert value == pytest.approx(0.025) and ci == pytest.approx([0.0125, 0.0375])
    assert interpolate_at(pts, 0.8) == (0.1, [0.05, 0.15])     # exactly at a point
    assert interpolate_at(pts, 0.5) is None                     # never reached
    assert matched_levels(1.0, [0.6, 0.7, 0.99], n_levels=3) == pytest.approx([0.9, 0.8, 0.7])
    assert matched_levels(1.0, [0.6, 1.0]) == []                # one method improved: nothing to compare


def _traj_rows():
    """FFT learns fast and memorises; LoRA reaches less utility and memorises less; DP-LoRA did not learn."""
    def traj(run_id, nlls, mems, half):
        return run_id, [{"step": 2 * i, "epoch": i / 2, "epsilon": None, "nonsensitive_test_nll": x,
                         "nonsensitive_test_nll_base": 1.0, "memorization_nats": m,
                         "memorization_nats_ci": [m - half, m + half], "sensitive_train_gain": 2 * m,
                         "sensitive_train_gain_ci": [2 * m - half, 2 * m + half], "n_train_records": 50,
                         "n_test_records": 50} for i, (x, m) in enumerate(zip(nlls, mems))]
    rows = [_with_ci(row("fft", gain=0.5, util=2.1), gain_ci=[0.4, 0.6], util_diff_ci=[-0.5, -0.3]),
            _with_ci(row("lora", gain=0.3, util=2.2), gain_ci=[0.25, 0.35], util_diff_ci=[-0.4, -0.2]),
            _with_ci(row("dp-lora", eps=8.0, gain=0.01, util=2.49), gain_ci=[-0.01, 0.03],
                     util_diff_ci=[-0.03, 0.02])]
    trajs = dict([traj(rows[0]["run_id"], [1.0, 0.8, 0.6], [0.0, 0.2, 0.6], 0.02),
                  traj(rows[1]["run_id"], [1.0, 0.9, 0.7], [0.0, 0.02, 0.1], 0.01),
                  traj(rows[2]["run_id"], [1.0, 1.0, 0.99], [0.0, 0.0, 0.0], 0.01)])
    return rows, trajs


def test_matched_utility_findings():
    rows, trajs = _traj_rows()
    vs = views(rows, trajs)
    text = "\n".join(findings(groups(vs), vs))
    # levels between the base 1.0 and 0.7 (the second-best reached): 0.9, 0.8, 0.7
    # at 0.8: FFT at its point 0.2; LoRA half-way between 0.9 and 0.7: 0.06, interval [0.05, 0.07]
    assert "At non-sensitive test NLL 0.800: FFT memorisation 0.200 [0.180, 0.220], LoRA memorisation 0.060 " \
           "[0.050, 0.070]; DP-LoRA (ε = 8; did not learn) never reached it. On the privacy–utility front at this " \
           "level: LoRA." in text
    assert "At non-sensitive test NLL 0.900: FFT memorisation 0.100 [0.080, 0.120], LoRA memorisation 0.020" in text
    rep = build_report(rows, trajectories=trajs)
    assert "trajectories" in rep.figures


def test_matched_levels_are_reached_by_every_seed():
    """With several seeds a method's deepest level is the one all its seeds reached: FFT's seeds got to 0.6 and
    0.85, LoRA's to 0.7 and 0.8, so the deepest common level is 0.85 (not 0.7, which FFT's seed 1 never reached)."""
    from privtune.experiments.analysis import group_levels, matched_at

    def traj(nlls):
        return [{"step": 2 * i, "nonsensitive_test_nll": x, "nonsensitive_test_nll_base": 1.0,
                 "memorization_nats": 1.0 - x, "memorization_nats_ci": [0.9 - x, 1.1 - x]}
                for i, x in enumerate(nlls)]
    rows, trajs = [], {}
    for method, seeds in (("fft", ([1.0, 0.8, 0.6], [1.0, 0.9, 0.85])), ("lora", ([1.0, 0.9, 0.7], [1.0, 0.8]))):
        for seed, nlls in enumerate(seeds):
            r = _with_ci(row(method, gain=0.3, util=2.2, seed=seed), gain_ci=[0.2, 0.4], util_diff_ci=[-0.4, -0.2])
            rows.append(r)
            trajs[r["run_id"]] = traj(nlls)
    vs = views(rows, trajs)
    (g,) = groups(vs)
    base, levels = group_levels(g.variants)
    assert base == 1.0 and levels == pytest.approx([0.95, 0.9, 0.85])
    for level in levels:
        got = matched_at(g.variants, level)
        assert [m.reached for m in got] == [True, True], level
        assert all(m.sd is not None for m in got)         # both seeds of each method contribute


def test_report_reads_trajectories_from_the_store(tmp_path):
    from privtune.experiments.report import write_report

    rows, trajs = _traj_rows()
    with ResultStore(tmp_path) as store:
        for r in rows:
            store.upsert({**r, "_trajectory": trajs[r["run_id"]]})
    written = write_report(tmp_path)
    assert "At non-sensitive test NLL 0.800" in written.markdown
    assert (tmp_path / "plots" / "trajectories.png").is_file()
