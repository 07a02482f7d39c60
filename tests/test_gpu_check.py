"""scripts/gpu_check.sh, the prepared check of the CUDA path, in its CPU dry run (--cpu): tiny model, few steps.

The whole dry run takes minutes on two busy cores (every check is a process that imports torch): it is slow; the
smoke variant runs the shell driver with two real checks, the model fallback and the failure path."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _run(tmp_path, *args, timeout=900):
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    p = subprocess.run(["bash", str(SCRIPT), "--cpu", "--out", str(tmp_path / "gc"), *args], env=env,
                       capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("gpu-check ")]
    return p, lines


def test_smoke_model_fallback_and_one_line_per_check(tmp_path):
    p, lines = _run(tmp_path, "--only", "noise", "--model", "smollm2-nope tiny:gpt_neox")
    assert p.returncode == 0, p.stdout + p.stderr
    names = [ln.split(":")[0].removeprefix("gpu-check ") for ln in lines]
    assert names == ["model", "noise", "summary"]
    assert all(": PASS " in ln for ln in lines[:-1])
    model = lines[0]
    assert "tiny:gpt_neox (fallback)" in model and "smollm2-nope unavailable" in model
    assert "std/(σC)" in lines[1] and "reproducible yes" in lines[1]
    assert lines[-1].startswith("gpu-check summary: 2/2 passed")


def test_a_failed_or_unrun_check_fails_the_script(tmp_path):
    p, lines = _run(tmp_path, "--only", "env", "--budget", "0")
    assert p.returncode == 1
    assert lines[0] == "gpu-check env: FAIL not run: the 0 s budget is spent"
    assert lines[-1].startswith("gpu-check summary: 0/2 passed")


@pytest.mark.slow
def test_cpu_dry_run_passes_every_check(tmp_path):
    p, lines = _run(tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    names = [ln.split(":")[0].removeprefix("gpu-check ") for ln in lines[:-1]]
    assert names == ["env", "model", "train fft", "train lora", "train dp-fft", "train dp-lora", "clip dp-lora",
                     "clip dp-fft", "noise", "bench", "torchrun"]
    assert all(": PASS " in ln for ln in lines[:-1]), "\n".join(lines)
    assert lines[-1].startswith("gpu-check summary: 11/11 passed")
