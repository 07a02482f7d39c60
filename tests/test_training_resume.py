"""A run killed with SIGKILL at any moment resumes to its planned steps; the ledger never under-counts."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _train_helpers import lm_dataset
from privtune.training.run import resume, train

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return lm_dataset(tmp_path_factory.mktemp("d") / "cs", n_train=32)


def _cli(args, **kw):
    env = {**os.environ, "PYTHONPATH": SRC, "PRIVTUNE_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "privtune", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _progress(run: Path) -> int:
    """Steps recorded so far: ledger (DP) or newest checkpoint."""
    try:
        led = json.loads((run / "ledger.json").read_text())["ledger"]
        return sum(e["steps"] for e in led["entries"])
    except (OSError, ValueError, KeyError):
        ck = run / "checkpoints"
        steps = [int(p.name.split("-")[1]) for p in ck.iterdir() if p.name.startswith("step-")] if ck.is_dir() else []
        return max(steps, default=0)


def _kill_when(proc, run: Path, at_step: int, timeout: float = 120) -> int:
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        if _progress(run) >= at_step:
            break
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return _progress(run)


def _dp_args(data, run, planned, *extra):
    return ["train", "--data", str(data), "--method", "dp-lora", "--model", "tiny:gpt_neox", "--steps", str(planned),
            "--batch-size", "4", "--max-length", "32", "--epsilon", "8", "--checkpoint-every", "7", *extra,
            "--out", str(run)]


def _finish(run):
    proc = _cli(["train", "--resume", str(run), "--json"])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return json.loads((run / "run.json").read_text())


@pytest.mark.parametrize("at_step", [12, pytest.param(3, marks=pytest.mark.slow)])
def test_sigkill_then_resume_dp_lora(data, tmp_path, at_step):
    """One kill (between checkpoints, or before the first): the default reserve (one checkpoint interval) absorbs
    the re-executed steps."""
    pytest.importorskip("privtune.accounting")
    run, planned = tmp_path / "run", 40
    counted = _kill_when(_cli(_dp_args(data, run, planned)), run, at_step=at_step)
    rec = json.loads((run / "run.json").read_text())
    assert rec["status"] == "running" and not (run / "model").exists()   # resumable, and does not look complete
    rec = _finish(run)
    assert rec["status"] == "completed" and rec["steps"] == planned and rec["resumes"] == 1
    # every executed step is in the ledger: the planned ones plus those re-executed after the kill
    assert rec["ledger_steps"] >= planned and rec["ledger_steps"] >= counted
    assert rec["ledger_steps"] - planned <= rec["reserve_steps"] == 7
    assert rec["epsilon"] <= 8.0 and (run / "model" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_two_kills_with_a_larger_reserve(data, tmp_path):
    pytest.importorskip("privtune.accounting")
    run, planned = tmp_path / "run", 60
    counted = _kill_when(_cli(_dp_args(data, run, planned, "--resume-reserve", "14")), run, at_step=12)
    counted2 = _kill_when(_cli(["train", "--resume", str(run)]), run, at_step=counted + 20)
    assert counted2 >= counted
    rec = _finish(run)
    assert rec["status"] == "completed" and rec["steps"] == planned and rec["resumes"] == 2
    assert rec["ledger_steps"] >= max(planned, counted2) and rec["epsilon"] <= 8.0


@pytest.mark.slow
def test_killed_non_dp_run_resumes_to_the_same_weights(data, tmp_path):
    """Non-DP runs are deterministic: kill + resume gives bit-identical weights to an uninterrupted run."""
    common = ["--data", str(data), "--method", "lora", "--model", "tiny:qwen2", "--steps", "150", "--batch-size", "4",
              "--max-length", "32", "--checkpoint-every", "10"]
    ref = tmp_path / "ref"
    p = _cli(["train", *common, "--out", str(ref)])
    assert p.wait(timeout=300) == 0, p.communicate()
    run = tmp_path / "run"
    _kill_when(_cli(["train", *common, "--out", str(run)]), run, at_step=40)
    p = _cli(["train", "--resume", str(run)])
    assert p.wait(timeout=300) == 0, p.communicate()
    a = load_file(str(ref / "model" / "adapter_model.safetensors"))
    b = load_file(str(run / "model" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    r1, r2 = (json.loads((d / "run.json").read_text()) for d in (ref, run))
    assert r1["train_loss_curve"] == r2["train_loss_curve"]


def test_resume_of_finished_run_is_a_no_op(data, tmp_path):
    res = train(data=str(data), method="lora", model="tiny:llama", steps=2, batch_size=4, max_length=32,
                out=tmp_path / "r")
    again = resume(tmp_path / "r")
    assert again.record == res.record


def test_dp_run_keeps_the_data_hash_out_of_run_json_but_resume_still_checks_it(tmp_path):
    """A content hash identifies the whole training set (a membership test for one record), so a DP run publishes
    none; its internal resume state keeps it, and resuming on changed data is still refused."""
    from privtune.errors import ConfigError

    data = lm_dataset(tmp_path / "cs", n_train=24)
    run = tmp_path / "run"
    train(data=str(data), method="dp-lora", model="tiny:llama", epsilon=8.0, steps=4, batch_size=4, max_length=32,
          checkpoint_every=2, out=run)
    rec = json.loads((run / "run.json").read_text())
    digest = json.loads((data / "dataset.json").read_text())["content_hash"]
    assert rec["dataset_hash"] is None and digest not in (run / "run.json").read_text()
    assert json.loads((run / "checkpoints" / "resume.json").read_text()) == {"dataset_hash": digest}
    rec.update(status="running")                 # as if killed after its last checkpoint
    (run / "run.json").write_text(json.dumps(rec))
    lm_dataset(tmp_path / "other", n_train=24, seed=1)
    for name in ("train.jsonl", "test.jsonl", "dataset.json"):     # the same path now holds different records
        (data / name).write_bytes((tmp_path / "other" / name).read_bytes())
    with pytest.raises(ConfigError, match="restore the original data"):
        resume(run)
    for name in ("train.jsonl", "test.jsonl", "dataset.json"):
        (data / name).unlink()
    lm_dataset(data, n_train=24)
    assert resume(run).record["status"] == "completed"
