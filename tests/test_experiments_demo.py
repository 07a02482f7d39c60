import json

import pytest

from privtune.experiments.demo import SCALES, run_demo, study_text


def test_demo_study_is_valid_and_runs_the_four_methods(tmp_path):
    from privtune.experiments.config import parse_study
    from privtune.experiments.demo import tomllib

    study = parse_study(tomllib.loads(study_text(SCALES["default"])), base_dir=tmp_path, where="demo")
    runs = study.expand()
    assert [(r.method, r.epsilon) for r in runs] == [("fft", None), ("lora", None), ("dp-fft", 8.0),
                                                     ("dp-lora", 8.0)]
    assert study.datasets["customersim"].options["canary_digits"] == SCALES["default"].canary_digits


@pytest.mark.parametrize("clips", [(), (("dp-lora", 0.1),), (("dp-fft", 0.5), ("dp-lora", 0.1))])
def test_demo_dp_runs_get_their_clipping_norm_and_rates(tmp_path, clips):
    from dataclasses import replace

    from privtune.experiments.config import parse_study
    from privtune.experiments.demo import tomllib

    sc = replace(SCALES["default"], max_grad_norms=clips)
    runs = parse_study(tomllib.loads(study_text(sc)), base_dir=tmp_path, where="demo").expand()
    for r in runs:
        opts = r.train_options
        if r.private:
            assert opts["batch_size"] == sc.dp_batch_size
            assert opts.get("max_grad_norm") == dict(clips).get(r.method)   # absent: privtune train's default
        else:
            assert opts["batch_size"] == sc.batch_size and "max_grad_norm" not in opts
        assert r.lr == dict(sc.learning_rates).get(r.method)


def test_default_demo_dp_runs_take_enough_large_batches():
    # DP-SGD at ε = 8 on a few hundred records learns only with large expected batches and clipped gradients
    # no larger than they are (docs/experiments.md, "Demo sizing")
    sc = SCALES["default"]
    n = sc.n_train + sc.canary_repeats
    assert sc.dp_batch_size >= 4 * sc.batch_size and sc.dp_batch_size <= n
    assert dict(sc.max_grad_norms).get("dp-lora", 1.0) < 1
    assert {m for m, _ in sc.learning_rates} == {"fft", "lora", "dp-fft", "dp-lora"}


@pytest.mark.slow
def test_tiny_demo_end_to_end_and_rerun_reuses_it(tmp_path):
    out = tmp_path / "demo"
    res = run_demo(out=out, scale="tiny")
    assert [o.status for o in res.sweep.outcomes] == ["completed"] * 4
    assert res.report.is_file() and (out / "report.md").is_file() and (out / "results.csv").is_file()
    md = res.markdown
    for label in ("| fft", "| lora", "| dp-fft ε=8", "| dp-lora ε=8"):   # flagged when it did not learn
        assert f"{label} |" in md or f"{label} (did not learn) |" in md
    assert "| base model |" in md
    # every run evaluated itself during training (issue 14), and the store holds those points
    from privtune.experiments.store import ResultStore

    with ResultStore(out, create=False) as store:
        t = store.trajectories()
    assert len(t) == 4 and all(len(pts) >= 2 and pts[0]["step"] == 0 for pts in t.values())
    assert all(r["run.trajectory_eval_s"] is not None for r in ResultStore(out, create=False).rows())
    # the canary secret never reaches the report
    secret = json.loads((out / "data" / "customersim" / "dataset.json").read_text())["canary"]["secret"]
    assert len(secret) == SCALES["tiny"].canary_digits
    page = res.report.read_text()
    assert f"My ID is {secret}" not in page
    # non-DP runs keep their training curves; the DP runs' (computed without noise) are withheld and named
    assert "curves.png" in {p.name for p in (out / "plots").iterdir()}
    import re

    assert re.search(r"Not shown: the training losses of DP runs \(dp-fft ε=8( \(did not learn\))?, "
                     r"dp-lora ε=8( \(did not learn\))?\)", page)
    again = run_demo(out=out, scale="tiny")
    assert [o.status for o in again.sweep.outcomes] == ["skipped"] * 4
    assert json.loads((out / "demo.json").read_text())["timings_s"]["base_model_built"] is False
