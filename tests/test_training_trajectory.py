"""In-training evaluation: RUN/trajectory.jsonl (issue 14)."""

import json

import pytest

from _train_helpers import lm_dataset
from privtune.errors import ConfigError
from privtune.training.run import resume, train
from privtune.training.trajectory import TRAJECTORY_FILE, eval_steps, read_points

KEYS = ("step", "epoch", "epsilon", "sensitive_train_gain", "sensitive_test_gain", "nonsensitive_test_nll",
        "nonsensitive_test_nll_base")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return lm_dataset(tmp_path_factory.mktemp("d") / "cs", n_train=32, n_test=12)


def test_eval_steps_by_hand():
    # 10 steps, 5 points -> 2, 4, 6, 8, 10; 32 records at batch 8 -> epochs end at 4 and 8; plus step 0
    assert eval_steps(planned=10, eval_points=5, n_train=32, batch_size=8) == [0, 2, 4, 6, 8, 10]
    # 7 steps, 3 points -> 3, 5, 7; 20 records at batch 6 -> epochs end at ceil(3.33) = 4, ceil(6.67) = 7
    assert eval_steps(planned=7, eval_points=3, n_train=20, batch_size=6) == [0, 3, 4, 5, 7]
    assert eval_steps(planned=1, eval_points=5, n_train=100, batch_size=8) == [0, 1]


def test_trajectory_of_a_run_and_its_contract(data, tmp_path):
    out = tmp_path / "run"
    res = train(data=str(data), method="fft", model="tiny:llama", steps=6, batch_size=8, max_length=128,
                eval_points=3, trajectory_records=10, out=out)
    pts = read_points(out / TRAJECTORY_FILE)
    assert [p["step"] for p in pts] == [0, 2, 4, 6]
    for p in pts:
        for k in KEYS:
            assert k in p
        for k in KEYS[3:]:
            lo, hi = p[f"{k}_ci"]
            assert lo <= p[k] <= hi
        assert p["epsilon"] is None and p["n_train_records"] == 10 and p["interval_unit"] == "records"
    assert pts[0]["sensitive_train_gain"] == 0
    assert pts[0]["nonsensitive_test_nll"] == pts[0]["nonsensitive_test_nll_base"]
    assert pts[-1]["epoch"] == pytest.approx(6 * 8 / 32)
    assert len({p["nonsensitive_test_nll_base"] for p in pts}) == 1      # base scored once
    assert pts[-1]["nonsensitive_test_nll"] != pts[0]["nonsensitive_test_nll"]
    rec = res.record
    assert rec["trajectory_points"] == 4 and 0 < rec["trajectory_eval_s"] < rec["wall_time_s"]


def test_dp_trajectory_spends_epsilon_and_resume_adds_no_duplicates(data, tmp_path):
    out = tmp_path / "dp"
    train(data=str(data), method="dp-lora", model="tiny:llama", epsilon=8.0, steps=4, batch_size=8, max_length=128,
          eval_points=2, trajectory_records=8, noise_seed=1, out=out)
    pts = read_points(out / TRAJECTORY_FILE)
    eps = [p["epsilon"] for p in pts]
    assert eps[0] == 0.0 and all(b > a for a, b in zip(eps, eps[1:]))
    res = resume(out)          # finished: a no-op that leaves the file alone
    assert res.status == "completed" and len(read_points(out / TRAJECTORY_FILE)) == len(pts)


def test_a_resumed_recorder_keeps_written_points_and_adds_no_duplicate(data, tmp_path):
    from privtune.training.config import TrainConfig
    from privtune.training.session import build_session, make_plan
    from privtune.training.trainer import TrainState
    from privtune.training.trajectory import TrajectoryRecorder

    out = tmp_path / "run"
    train(data=str(data), method="fft", model="tiny:llama", steps=6, batch_size=8, max_length=128, eval_points=3,
          trajectory_records=8, out=out)
    lines = (out / TRAJECTORY_FILE).read_text().splitlines()
    (out / TRAJECTORY_FILE).write_text("\n".join(lines[:2]) + "\n")   # as if it stopped after step 2
    plan = make_plan(TrainConfig(data=str(data), method="fft", model="tiny:llama", steps=6, batch_size=8,
                                 max_length=128, eval_points=3, trajectory_records=8))
    s = build_session(plan)
    loaded = []
    rec = TrajectoryRecorder(out, plan, s.model, s.loaded.tokenizer, step=2, load_base=lambda: loaded.append(1))
    assert loaded == []                       # the base scores come from the run directory, not a new pass
    for step in (1, 2, 3, 4, 4, 5, 6):
        rec(TrainState(step=step))
    assert [p["step"] for p in read_points(out / TRAJECTORY_FILE)] == [0, 2, 4, 6]
    assert json.loads(lines[1]) == read_points(out / TRAJECTORY_FILE)[1]


def test_no_trajectory_and_bad_options(data, tmp_path):
    res = train(data=str(data), method="lora", model="tiny:llama", steps=2, batch_size=8, max_length=32,
                trajectory=False, out=tmp_path / "off")
    assert not (tmp_path / "off" / TRAJECTORY_FILE).exists()
    assert res.record["trajectory_skipped"].startswith("off")
    with pytest.raises(ConfigError, match="--eval-points"):
        train(data=str(data), method="lora", model="tiny:llama", steps=2, eval_points=0, out=tmp_path / "bad")


def test_cli_options(data, tmp_path, capsys):
    from privtune.cli import main

    base = ["train", "--data", str(data), "--method", "lora", "--model", "tiny:llama", "--steps", "3",
            "--batch-size", "8", "--max-length", "128"]
    with pytest.raises(SystemExit) as e:
        main([*base, "--eval-points", "0", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--eval-points" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()
    for extra, name in ((["--eval-points", "1"], "one"), (["--no-trajectory"], "off")):
        try:
            main([*base, *extra, "--out", str(tmp_path / name)])
        except SystemExit as ex:
            assert ex.code in (0, None)
    assert [p["step"] for p in read_points(tmp_path / "one" / TRAJECTORY_FILE)] == [0, 3]
    assert not (tmp_path / "off" / TRAJECTORY_FILE).exists()


def test_trajectory_intervals_resample_people_only_when_every_record_names_one():
    from privtune.data.schema import Record
    from privtune.training.trajectory import _owners

    def rec(rid, user=None):
        return Record(rid, "Ada called", [], {"user": user} if user is not None else {})
    assert _owners({"train": [rec("a", "u1"), rec("b", "u1")], "test": [rec("c", "u2")]}, "user") == \
        {"train": ["u1", "u1"], "test": ["u2"]}
    assert _owners({"train": [rec("a"), rec("b")], "test": [rec("c")]}, "user") is None
    assert _owners({"train": [rec("a", "u1"), rec("b")], "test": [rec("c", "u2")]}, "user") is None   # partial
