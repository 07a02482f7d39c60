"""`privtune sweep --backend ray` on a local Ray instance (2 CPUs, started here and shut down after the module):
the same store as the local backend, a killed Ray worker fails only its run and the next sweep resumes it from its
checkpoint with its ledger, one driver per study directory. Slow (Ray starts in seconds, each run is a process):
`make test-ray`."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from privtune.experiments import load_study, run_sweep
from privtune.experiments.store import ResultStore

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SRC = str(Path(__file__).resolve().parents[1] / "src")

STUDY = """
name = "tiny-ray"
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
checkpoint_every = {every}

[eval]
only = ["privacy", "utility"]
max_records = 16

[resources]
cpus = 1
"""


def study(tmp_path, methods=("fft", "dp-lora"), epochs=1, every=1):
    p = tmp_path / "study.toml"
    p.write_text(STUDY.format(methods=json.dumps(list(methods)), epochs=epochs, every=every))
    return p


def rows(out):
    with ResultStore(out, create=False) as s:
        return {r["run_id"]: r for r in s.rows()}


@pytest.fixture(scope="module")
def ray_instance():
    """A local Ray instance of 2 CPUs whose workers import privtune from this checkout."""
    import ray

    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([SRC, *filter(None, [old])])  # the raylet's, so every job's workers
    try:
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, object_store_memory=100 * 2**20,
                 logging_level="warning")
        yield ray
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def test_ray_backend_fills_the_same_store_as_the_local_one(ray_instance, tmp_path):
    p = study(tmp_path)
    local, remote = tmp_path / "local", tmp_path / "ray"
    res_local = run_sweep(p, out=local, workers=0)
    res_ray = run_sweep(p, out=remote, backend="ray")
    assert [o.status for o in res_ray.outcomes] == [o.status for o in res_local.outcomes] == ["completed"] * 2
    a, b = rows(local), rows(remote)
    assert list(a) == list(b) == [rc.run_id for rc in load_study(p).expand()]
    figures = ["status", "grid.method", "grid.epsilon", "run.status", "run.steps", "run.epsilon",
               "run.noise_multiplier", "run.sample_rate", "run.final_train_loss", "privacy.sensitive_train_nll",
               "privacy.sensitive_train_nll_base", "privacy.sensitive_test_nll", "utility.nonsensitive_test_nll"]
    for run_id in a:
        for key in figures:   # deterministic training: same seed, data and thread count (1) in a fresh process
            want = a[run_id][key]
            assert b[run_id][key] == (pytest.approx(want, rel=1e-5) if isinstance(want, float) else want), key
    assert (remote / "results.csv").read_text().count("\n") == 3
    assert not any((remote / ".running").iterdir())   # start markers are cleared as runs end
    # a second sweep skips both, on either backend
    assert [o.status for o in run_sweep(p, out=remote, backend="ray").outcomes] == ["skipped"] * 2


def test_one_driver_per_study_directory_with_ray(ray_instance, tmp_path):
    import fcntl

    from privtune.errors import ConfigError

    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".sweep.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="no other sweep is using"):
            run_sweep(study(tmp_path), out=out, backend="ray")
    assert not (out / "results.sqlite").exists()


def _ledger_steps(run: Path) -> int:
    try:
        led = json.loads((run / "ledger.json").read_text())["ledger"]
        return sum(e["steps"] for e in led["entries"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux /proc")
def test_killed_ray_worker_fails_its_run_and_the_next_sweep_resumes_it(ray_instance, tmp_path):
    p = study(tmp_path, methods=["dp-lora", "fft"], epochs=40, every=4)
    out = tmp_path / "out"
    dp_id, fft_id = [rc.run_id for rc in load_study(p).expand()]
    dp_run = out / "runs" / dp_id
    result = {}
    driver = threading.Thread(target=lambda: result.update(r=run_sweep(p, out=out, backend="ray")))
    driver.start()
    deadline = time.time() + 300
    while _ledger_steps(dp_run) < 8:          # past two checkpoints: kill the DP run's worker mid-training
        assert driver.is_alive() and time.time() < deadline
        time.sleep(0.05)
    marker = json.loads((out / ".running" / f"{dp_id}.json").read_text())
    assert marker["run_id"] == dp_id and rows(out)[dp_id]["status"] == "running"
    os.kill(marker["pid"], signal.SIGKILL)
    counted = _ledger_steps(dp_run)
    driver.join(600)
    outcomes = {o.run_id: o for o in result["r"].outcomes}
    assert outcomes[dp_id].status == "failed" and "Ray worker" in outcomes[dp_id].error
    assert outcomes[fft_id].status == "completed"            # the other run went on
    r = rows(out)
    assert r[dp_id]["status"] == "failed" and r[fft_id]["status"] == "completed"
    assert json.loads((dp_run / "run.json").read_text())["status"] == "running"   # resumable
    fft_stamp = (out / "runs" / fft_id / "eval.json").stat().st_mtime_ns

    # the next sweep (the CLI, joining the same instance) resumes the killed run and leaves the finished one alone
    env = {**os.environ, "PYTHONPATH": SRC, "PRIVTUNE_PROGRESS": "0"}
    address = ray_instance.get_runtime_context().gcs_address
    done = subprocess.run([sys.executable, "-m", "privtune", "sweep", str(p), "--out", str(out), "--backend", "ray",
                           "--address", address], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "1 run(s) done now, 1 already done, 0 failed" in " ".join(done.stderr.split())
    rec = json.loads((dp_run / "run.json").read_text())
    assert rec["status"] == "completed" and rec["resumes"] == 1 and rec["steps"] == rec["planned_steps"]
    # the ledger kept every step charged before the kill and after it; the budget holds
    assert rec["ledger_steps"] >= rec["steps"] and rec["ledger_steps"] >= counted and rec["epsilon"] <= 8.0
    assert (out / "runs" / fft_id / "eval.json").stat().st_mtime_ns == fft_stamp
    assert {row["status"] for row in rows(out).values()} == {"completed"}
