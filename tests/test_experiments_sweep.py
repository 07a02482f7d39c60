import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from privtune.experiments import load_study, run_sweep
from privtune.experiments.store import ResultStore

SRC = Path(__file__).resolve().parents[1] / "src"

TINY = """
name = "tiny"
models = ["tiny:gpt_neox"]
methods = {methods}
budgets = [8]
epochs = [{epochs}]
batch_size = 8
max_length = 48

[datasets.cs]
generator = "customersim"
train = 24
test = 8

[train]
checkpoint_every = 1

[eval]
only = ["privacy", "utility"]
max_records = 16
"""


def study(tmp_path, methods=("fft", "lora"), epochs=1, name="study.toml"):
    p = tmp_path / name
    p.write_text(TINY.format(methods=json.dumps(list(methods)), epochs=epochs))
    return p


def rows(out):
    with ResultStore(out, create=False) as s:
        return {r["grid.method"]: r for r in s.rows()}


def test_failed_run_is_recorded_and_the_others_go_on(tmp_path, monkeypatch):
    import privtune.training.run as run_mod

    real = run_mod.train

    def flaky(cfg, *, out):
        if cfg.method == "fft":
            raise RuntimeError("injected failure")
        return real(cfg, out=out)

    monkeypatch.setattr(run_mod, "train", flaky)
    out = tmp_path / "out"
    res = run_sweep(study(tmp_path), out=out, workers=0)     # in this process, where the patch applies
    assert [o.status for o in res.outcomes] == ["failed", "completed"]
    r = rows(out)
    assert r["fft"]["status"] == "failed" and r["fft"]["stage"] == "train"
    assert r["fft"]["error"].startswith("RuntimeError: injected failure")
    assert r["lora"]["status"] == "completed" and r["lora"]["run.status"] == "completed"
    assert r["lora"]["privacy.sensitive_train_nll"] > 0 and r["lora"]["utility.nonsensitive_test_nll_base"] > 0
    assert (out / "results.csv").read_text().count("\n") == 3
    lora_eval = next((out / "runs").glob("*-lora-*")) / "eval.json"
    stamp = lora_eval.stat().st_mtime_ns

    # kept as failed on request; retried by default, without touching the finished run
    res = run_sweep(study(tmp_path), out=out, retry_failed=False, workers=0)
    assert sorted(o.status for o in res.outcomes) == ["kept-failed", "skipped"]
    calls = []
    monkeypatch.setattr(run_mod, "train", lambda cfg, *, out: calls.append(cfg.method) or flaky(cfg, out=out))
    res = run_sweep(study(tmp_path), out=out, workers=0)
    assert sorted(o.status for o in res.outcomes) == ["failed", "skipped"] and calls == ["fft"]
    assert lora_eval.stat().st_mtime_ns == stamp


def test_changed_eval_options_reevaluate_without_retraining(tmp_path):
    out = tmp_path / "out"
    run_sweep(study(tmp_path, methods=["lora"]), out=out)
    run_dir = next((out / "runs").iterdir())
    model_stamp = (run_dir / "run.json").stat().st_mtime_ns
    text = study(tmp_path, methods=["lora"]).read_text().replace("max_records = 16", "max_records = 12")
    (tmp_path / "s2.toml").write_text(text)
    res = run_sweep(load_study(tmp_path / "s2.toml"), out=out)
    assert [o.status for o in res.outcomes] == ["completed"]
    assert (run_dir / "run.json").stat().st_mtime_ns == model_stamp      # not trained again
    assert json.loads((run_dir / "eval.json").read_text())["records"]["train"] == 12


def test_bad_model_fails_fast_with_one_line_error(tmp_path):
    p = study(tmp_path, methods=["lora"])
    p.write_text(p.read_text().replace('"tiny:gpt_neox"', '"tiny:nope"'))
    res = run_sweep(p, out=tmp_path / "out")
    (o,) = res.failed
    assert o.stage == "train" and "nope" in o.error and "\n" not in o.error


@pytest.mark.slow
def test_sweep_killed_with_sigkill_resumes_without_repeating_finished_runs(tmp_path):
    p = study(tmp_path, methods=["lora", "fft", "dp-lora"], epochs=4)
    out = tmp_path / "out"
    ids = [rc.run_id for rc in load_study(p).expand()]
    env = {**os.environ, "PYTHONPATH": str(SRC), "PRIVTUNE_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "privtune", "sweep", str(p), "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    first = out / "runs" / ids[0]
    deadline = time.time() + 300
    while not (first / "sweep.json").is_file():   # the first configuration is done: kill mid-sweep
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.time() < deadline
        time.sleep(0.2)
    time.sleep(2.0)                                # let the second one start training
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {i: (out / "runs" / i / "eval.json").stat().st_mtime_ns for i in ids
                if (out / "runs" / i / "sweep.json").is_file()}
    started = [i for i in ids if i not in finished and (out / "runs" / i / "run.json").is_file()]
    assert 1 <= len(finished) < len(ids)

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"{len(finished)} already done" in " ".join(done.stderr.split())
    for i, stamp in finished.items():                # not repeated
        assert (out / "runs" / i / "eval.json").stat().st_mtime_ns == stamp
    for i in started:                                # interrupted training was resumed, not restarted
        assert json.loads((out / "runs" / i / "run.json").read_text())["resumes"] >= 1
    assert {r["status"] for r in rows(out).values()} == {"completed"}


@pytest.mark.slow
def test_parallel_workers(tmp_path):
    out = tmp_path / "out"
    res = run_sweep(study(tmp_path, methods=["fft", "lora"]), out=out, workers=2)
    assert sorted(o.status for o in res.outcomes) == ["completed", "completed"]
    assert {r["status"] for r in rows(out).values()} == {"completed"}


def test_one_sweep_per_directory(tmp_path):
    import fcntl

    from privtune.errors import ConfigError

    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".sweep.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="no other sweep is using"):
            run_sweep(study(tmp_path), out=out)


def _children() -> list[int]:
    """Spawned worker processes of this process (not multiprocessing's resource tracker)."""
    pids = []
    for task in Path("/proc/self/task").iterdir():
        for p in (task / "children").read_text().split():
            try:
                if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes():
                    pids.append(int(p))
            except FileNotFoundError:
                pass
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_a_worker_killed_fails_its_run_and_the_others_go_on(tmp_path):
    import threading

    out = tmp_path / "out"
    result = {}
    t = threading.Thread(target=lambda: result.update(r=run_sweep(study(tmp_path), out=out, workers=1)))
    t.start()
    deadline = time.time() + 120
    while not _children():
        assert time.time() < deadline and t.is_alive()
        time.sleep(0.05)
    os.kill(_children()[0], signal.SIGKILL)
    t.join(600)
    outcomes = result["r"].outcomes
    assert [o.status for o in outcomes] == ["failed", "completed"]
    assert "worker process died" in outcomes[0].error and "-9" in outcomes[0].error
    assert rows(out)["fft"]["status"] == "failed"
