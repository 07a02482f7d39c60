"""Resume never shrinks the ledger, reports what failed runs spent, and survives (or names) damaged files."""

import json
import shutil
from pathlib import Path

import pytest

from _train_helpers import lm_dataset
from privtune.cli import main
from privtune.errors import ResumeError
from privtune.training.run import resume, train
from privtune.training.trainer import Trainer

pytest.importorskip("privtune.accounting")
from privtune.accounting import Ledger, get_accountant  # noqa: E402

PLANNED, EVERY, STOP = 20, 5, 10   # checkpoints at steps 5 and 10, stopped after 10 DP steps


def _eps(steps: int, rec: dict) -> float:
    ledger = Ledger.of(noise_multiplier=rec["noise_multiplier"], sample_rate=rec["sample_rate"], steps=steps)
    return get_accountant("pld").epsilon(ledger, delta=rec["delta"]).epsilon


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return lm_dataset(tmp_path_factory.mktemp("d") / "cs", n_train=24)


@pytest.fixture(scope="module")
def stopped(data, tmp_path_factory):
    """A DP run interrupted after exactly STOP steps (before step STOP + 1 began)."""
    run = tmp_path_factory.mktemp("stopped") / "run"
    step = Trainer.step

    def stop(self, t):
        if t == STOP + 1:
            raise KeyboardInterrupt
        return step(self, t)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "step", stop)
        with pytest.raises(KeyboardInterrupt):
            train(data=str(data), method="dp-lora", model="tiny:gpt_neox", noise_multiplier=1.0, batch_size=4,
                  max_length=24, steps=PLANNED, lora_r=2, checkpoint_every=EVERY, eval_test=False, out=run)
    return run


@pytest.fixture
def run(stopped, tmp_path):
    dest = tmp_path / "run"
    shutil.copytree(stopped, dest)
    return dest


def _record(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def _cli(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code, capsys.readouterr().err


def test_a_stopped_dp_run_reports_the_epsilon_its_ledger_spent(stopped):
    rec = _record(stopped)
    assert rec["status"] == "interrupted" and rec["ledger_steps"] == STOP and rec["epsilon_certified"] is True
    assert rec["epsilon"] == pytest.approx(_eps(STOP, rec), rel=1e-6) and rec["run_id"]
    ledger = json.loads((stopped / "ledger.json").read_text())
    assert ledger["run_id"] == rec["run_id"] and ledger["ledger"]["steps"] == STOP
    for ck in ("step-0000005", "step-0000010"):
        assert json.loads((stopped / "checkpoints" / ck / "state.json").read_text())["run_id"] == rec["run_id"]


def test_deleted_ledger_is_refused_and_the_restored_one_counts_every_step(run, capsys):
    """The issue's case: before, the resumed run completed with ledger_steps 10 for the 20 steps it took."""
    ledger = (run / "ledger.json").read_bytes()
    (run / "ledger.json").unlink()
    before = (run / "run.json").read_bytes()
    code, err = _cli(["train", "--resume", str(run)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "ledger.json" in err and "step-0000010" in err and "under-count" in err
    assert (run / "run.json").read_bytes() == before and not (run / "ledger.json").exists()
    (run / "ledger.json").write_bytes(ledger)
    rec = resume(run).record
    assert rec["status"] == "completed" and rec["steps"] == PLANNED and rec["ledger_steps"] == PLANNED
    assert rec["epsilon"] == pytest.approx(_eps(PLANNED, rec), rel=1e-6)


def test_a_ledger_shorter_than_the_checkpoint_or_from_another_run_is_refused(run):
    path = run / "ledger.json"
    good = json.loads(path.read_text())
    short = Ledger.of(noise_multiplier=1.0, sample_rate=4 / 24, steps=STOP - 3).to_dict()
    path.write_text(json.dumps({**good, "ledger": short}))
    with pytest.raises(ResumeError, match=r"at least as long as the 10 steps .*step-0000010"):
        resume(run)
    path.write_text(json.dumps({**good, "run_id": "0" * 32}))
    with pytest.raises(ResumeError, match="belongs to another run"):
        resume(run)
    path.write_text(json.dumps(good)[:40])  # truncated
    with pytest.raises(ResumeError, match="ledger.json.*truncated or corrupt"):
        resume(run)
    path.write_text(json.dumps(good))
    state = run / "checkpoints" / "step-0000010" / "state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "run_id": "f" * 32}))
    with pytest.raises(ResumeError, match="step-0000010 run_id.*another run"):
        resume(run)
    assert _record(run)["status"] == "interrupted"   # refusals change nothing


def test_a_longer_ledger_is_kept(run):
    """Steps taken after the newest checkpoint stay counted: the resumed run re-executes them as new steps."""
    path = run / "ledger.json"
    longer = json.loads(path.read_text())
    longer["ledger"] = Ledger.of(noise_multiplier=1.0, sample_rate=4 / 24, steps=STOP + 3).to_dict()
    path.write_text(json.dumps(longer))
    rec = resume(run).record
    assert rec["status"] == "completed" and rec["ledger_steps"] == PLANNED + 3


@pytest.mark.parametrize("damaged", ["trainable.safetensors", "training_state.pt", "state.json"])
def test_truncated_newest_checkpoint_falls_back_to_the_older_one(run, damaged):
    f = run / "checkpoints" / "step-0000010" / damaged
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    rec = resume(run).record
    assert rec["status"] == "completed" and rec["steps"] == PLANNED
    # steps 6-10 ran twice: the ledger counts both executions and never falls back with the checkpoint
    assert rec["ledger_steps"] == STOP + (PLANNED - EVERY)
    (note,) = rec["recovered"]
    assert note["resumed_from"] == "checkpoints/step-0000005"
    assert note["skipped"][0]["file"] == f"checkpoints/step-0000010/{damaged}"


def test_no_whole_checkpoint_is_one_line_naming_the_file(run, capsys):
    for ck in ("step-0000005", "step-0000010"):
        f = run / "checkpoints" / ck / "trainable.safetensors"
        f.write_bytes(f.read_bytes()[:100])
    code, err = _cli(["train", "--resume", str(run)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "step-0000010/trainable.safetensors" in err and "truncated or corrupt" in err


def test_truncated_run_json_is_one_line_naming_the_file(run, capsys):
    f = run / "run.json"
    f.write_text(f.read_text()[:200])
    code, err = _cli(["train", "--resume", str(run)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "run.json" in err and "truncated or corrupt" in err


def test_failed_dp_run_reports_spent_epsilon_and_resumes_with_another_lr(data, tmp_path, capsys):
    """--lr 1e30 gives a NaN at step 2: before, run.json said epsilon null, ledger_steps 0."""
    run = tmp_path / "r"
    code, err = _cli(["train", "--data", str(data), "--method", "dp-lora", "--model", "tiny:gpt_neox", "--steps", "6",
                      "--batch-size", "4", "--max-length", "24", "--noise-multiplier", "1", "--lr", "1e30",
                      "--checkpoint-every", "3", "--out", str(run)], capsys)
    rec = _record(run)
    taken = json.loads((run / "ledger.json").read_text())["ledger"]["steps"]
    assert code == 2 and "--resume RUN --lr" in err and rec["status"] == "failed" and taken >= 1
    assert rec["ledger_steps"] == taken and rec["epsilon"] == pytest.approx(_eps(taken, rec), rel=1e-6)
    plan = rec["privacy_plan"]
    code, err = _cli(["train", "--resume", str(run), "--lr", "0.002", "--noise-multiplier", "3"], capsys)
    assert code == 2 and "--noise-multiplier" in err and "used alone or with --lr" in err
    try:
        main(["train", "--resume", str(run), "--lr", "0.002"])
    except SystemExit as e:
        assert e.code in (0, None)
    rec = _record(run)
    assert rec["status"] == "completed" and rec["learning_rate"] == rec["config"]["lr"] == 0.002
    assert rec["changes"] == [{"option": "lr", "value": 0.002, "previous": 1e30, "from_step": 1, "resume": 1}]
    assert rec["privacy_plan"] == plan and rec["ledger_steps"] == taken + 6
    code, err = _cli(["train", "--resume", str(run), "--lr", "0.001"], capsys)
    assert code == 2 and "unfinished run" in err


def test_truncated_resume_state_is_one_line_naming_the_file(run, capsys):
    f = run / "checkpoints" / "resume.json"
    f.write_text(f.read_text()[:10])
    code, err = _cli(["train", "--resume", str(run)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "resume.json" in err and "truncated or corrupt" in err
