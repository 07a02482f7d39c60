"""The checks of ``scripts/gpu_check.sh``: the CUDA path of privtune, one check per call, one summary line each.

Every call prints exactly one line ``gpu-check NAME: PASS|FAIL|SKIP detail`` last and exits 0 (PASS, SKIP) or 1
(FAIL); the shell script runs each under a time limit and collects the lines. ``--device cpu`` is the dry run the
test suite uses (tiny model, a few steps; bf16 autocast forced on the CPU where the check compares precisions).

Checks:

- ``env``: torch, CUDA, the GPU, bf16 support, NCCL.
- ``model``: the first loadable model of ``--candidates`` (``smollm2-135m``, else the embedded model), written to
  ``OUT/model.txt`` for the others; the line says why a candidate was passed over.
- ``train``: ``privtune train`` of one method for a few steps on the device (bf16 autocast where supported), from
  the run record: finished, on the device, under autocast, finite loss; DP: ledger and ε within the budget.
- ``clip``: the DP engine's clipped per-example sum on the device equals the brute-force CPU reference (per-example
  gradients one by one in float32, clipped, summed) on the same batch and weights: in float32 and under bf16
  autocast (looser tolerance, the relative error reported).
- ``noise``: the device noise added to that clipped sum: mean 0, standard deviation ``sigma * C`` (within five
  standard errors, at least 0.5%),
  the same draws for the same ledger index and fresh ones for the next, and the same distribution as the CPU
  generator's (two-sample Kolmogorov-Smirnov).
- ``bench``: ``privtune bench`` on the device: the four ratios, finite and positive.
- ``torchrun``: ``privtune train --nproc 2`` (data parallel, noise once) on one device: NCCL first (CUDA), gloo when
  NCCL refuses two ranks on one GPU; the run finishes with one ledger.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

CHECKS: dict[str, Callable[[argparse.Namespace], tuple[str, str]]] = {}


def check(fn: Callable[[argparse.Namespace], tuple[str, str]]) -> Callable[[argparse.Namespace], tuple[str, str]]:
    CHECKS[fn.__name__.rstrip("_")] = fn
    return fn


def _device(a: argparse.Namespace) -> Any:
    import torch

    return torch.device(a.device)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


def _model(a: argparse.Namespace) -> str:
    if a.model:
        return a.model
    f = Path(a.out) / "model.txt"
    return f.read_text().strip() if f.is_file() else "tiny:gpt_neox"


# -- env ----------------------------------------------------------------------------------------------------------
@check
def env(a: argparse.Namespace) -> tuple[str, str]:
    import torch
    import torch.distributed as dist

    info = f"torch {torch.__version__}"
    if a.device == "cpu":
        return "PASS", f"{info}, CPU dry run ({torch.get_num_threads()} threads)"
    if not torch.cuda.is_available():
        return "FAIL", f"{info}: CUDA not available (a CPU build of torch, or no driver)"
    name = torch.cuda.get_device_name(0)
    bf16 = torch.cuda.is_bf16_supported()
    nccl = dist.is_available() and dist.is_nccl_available()
    detail = (f"{info}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} x {name}, bf16 "
              f"{'yes' if bf16 else 'no'}, NCCL {'yes' if nccl else 'no'}")
    return ("PASS" if bf16 else "FAIL"), detail + ("" if bf16 else " (bf16 autocast is the path under test)")


# -- model --------------------------------------------------------------------------------------------------------
def pick_model(candidates: list[str], device: str) -> tuple[str | None, list[str]]:
    """The first spec of ``candidates`` that loads on ``device``, and why each one before it did not."""
    from privtune.models.loading import load_model

    passed: list[str] = []
    for spec in candidates:
        try:
            lm = load_model(spec, device=device)
        except Exception as e:  # an unknown spec, a missing package, a failed conversion: try the next one
            passed.append(f"{spec} unavailable ({_first_line(e)})")
            continue
        n = sum(p.numel() for p in lm.model.parameters())
        del lm
        return spec, passed + [f"{n / 1e6:.1f}M parameters" if n >= 1e6 else f"{n:,} parameters"]
    return None, passed


@check
def model(a: argparse.Namespace) -> tuple[str, str]:
    spec, notes = pick_model(a.candidates.split(), a.device)
    if spec is None:
        return "FAIL", "no candidate loads: " + "; ".join(notes)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "model.txt").write_text(spec + "\n")
    fallback = " (fallback)" if notes[:-1] else ""
    return "PASS", f"{spec}{fallback} on {a.device}: " + "; ".join(notes)


# -- train --------------------------------------------------------------------------------------------------------
def _train_kwargs(a: argparse.Namespace, method: str) -> dict[str, Any]:
    kw = {"data": a.data, "method": method, "model": _model(a), "steps": a.steps, "batch_size": a.batch,
          "max_length": a.seq, "device": a.device, "checkpoint_every": a.steps, "seed": 0, "lora_r": 4}
    if method.startswith("dp-"):   # the loss of a DP run is recorded only as a labelled diagnostic
        kw.update(epsilon=8.0, dp_diagnostics=True)
    return kw


def _loss(rec: dict[str, Any]) -> Any:
    """The final training loss: top level without DP, under ``dp_diagnostics`` (labelled) for a DP run."""
    diag = rec.get("dp_diagnostics") or {}
    return diag.get("final_train_loss") if rec.get("private") else rec.get("final_train_loss")


def _check_record(rec: dict[str, Any], a: argparse.Namespace, *, dp: bool, processes: int = 1) -> list[str]:
    """What is wrong with a finished run's record (empty: nothing)."""
    from privtune.models.loading import autocast_dtype

    import torch

    problems = []
    if rec.get("status") != "completed":
        problems.append(f"status {rec.get('status')} ({rec.get('error')})")
    if rec.get("steps") != a.steps:
        problems.append(f"{rec.get('steps')} steps, not {a.steps}")
    if not str(rec.get("device", "")).startswith(a.device):
        problems.append(f"ran on {rec.get('device')}")
    want = autocast_dtype(torch.device(a.device))
    want_name = None if want is None else str(want).removeprefix("torch.")
    if rec.get("autocast") != want_name:
        problems.append(f"autocast {rec.get('autocast')}, expected {want_name}")
    loss = _loss(rec)
    if not isinstance(loss, (int, float)) or not math.isfinite(loss):
        problems.append(f"final loss {loss}")
    if dp and not (rec.get("epsilon") is not None and rec["epsilon"] <= 8.0 + 1e-9
                   and (rec.get("ledger_steps") or 0) >= a.steps):
        problems.append(f"ε {rec.get('epsilon')} / ledger steps {rec.get('ledger_steps')}")
    if rec.get("processes", 1) != processes:
        problems.append(f"{rec.get('processes')} processes, not {processes}")
    return problems


@check
def train(a: argparse.Namespace) -> tuple[str, str]:
    from privtune.training.run import train as run_train

    out = Path(a.out) / "runs" / a.method
    t0 = time.perf_counter()
    rec = run_train(out=out, **_train_kwargs(a, a.method)).record
    problems = _check_record(rec, a, dp=a.method.startswith("dp-"))
    detail = (f"{a.method} on {rec.get('model')}: {rec.get('steps')} steps, {rec.get('device')}, autocast "
              f"{rec.get('autocast')}, loss {_loss(rec)}{' (DP diagnostic)' if rec.get('private') else ''}, "
              f"peak {rec.get('peak_memory_mb')} MiB"
              + (f", ε {rec.get('epsilon'):.3f}" if rec.get("epsilon") is not None else "")
              + f", {time.perf_counter() - t0:.0f} s")
    return ("FAIL", detail + ": " + "; ".join(problems)) if problems else ("PASS", detail)


# -- clip and noise -----------------------------------------------------------------------------------------------
def _same_batch(a: argparse.Namespace, method: str) -> tuple[Any, Any, Any, dict[str, Any]]:
    """The model (``method`` applied, LoRA B made non-zero) on the CPU and a copy on the device, and one batch."""
    import copy

    import torch

    from privtune.data.schema import load_dataset
    from privtune.models.loading import load_model
    from privtune.training.config import TrainConfig
    from privtune.training.methods import get_method

    torch.manual_seed(0)
    lm = load_model(_model(a), device="cpu")
    cpu = get_method(method).prepare(lm.model, cfg=TrainConfig(lora_r=4), task="lm")
    with torch.no_grad():
        for n, p in cpu.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    cpu.train()
    dev = copy.deepcopy(cpu).to(_device(a))
    dev.train()
    texts = [r.text for r in load_dataset(a.data).train[:a.batch]]
    enc = lm.tokenizer(texts, truncation=True, max_length=a.seq, padding=True, return_tensors="pt")
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    return cpu, dev, lm.tokenizer, batch


def _per_example(model: Any, batch: dict[str, Any]) -> tuple[list[list[Any]], Any]:
    """Brute force on the CPU, float32: each example's gradient alone, and its norm."""
    import torch

    from privtune.training.dp.engine import unique_trainable
    from privtune.training.losses import per_example_loss

    params = unique_trainable(model)
    grads, norms = [], []
    for i in range(batch["input_ids"].shape[0]):
        one = {k: v[i:i + 1] for k, v in batch.items()}
        g = torch.autograd.grad(per_example_loss(model, one, task="lm").sum(), params, allow_unused=True)
        g = [torch.zeros_like(p) if x is None else x for x, p in zip(g, params)]
        grads.append(g)
        norms.append(float(torch.sqrt(sum((x.double() ** 2).sum() for x in g))))
    return grads, torch.tensor(norms, dtype=torch.float64)


def _clipped_sum(grads: list[list[Any]], norms: Any, C: float) -> list[Any]:
    """``sum_i g_i min(1, C / (||g_i|| + EPS))``, the reference of every engine (tests/test_dp_engines.py)."""
    from privtune.training.dp.engine import EPS

    total = [x.clone().zero_() for x in grads[0]]
    for g, norm in zip(grads, norms.tolist()):
        for t, x in zip(total, g):
            t.add_(x * min(1.0, C / (norm + EPS)))
    return total


def _engine_sum(model: Any, batch: dict[str, Any], C: float, device: Any, bf16: bool) -> tuple[list[Any], Any]:
    """The default DP engine's clipped sum on ``device`` (bf16: under the autocast the trainer uses there)."""
    import contextlib

    import torch

    from privtune.models.loading import autocast
    from privtune.training.config import TrainConfig
    from privtune.training.dp import get_engine
    from privtune.training.losses import per_example_loss

    eng = get_engine(TrainConfig().dp_engine)(model, max_grad_norm=C)
    if not bf16:
        ctx = contextlib.nullcontext()
    elif device.type == "cuda":
        ctx = autocast(device)                      # privtune's own choice on this GPU (bf16 where supported)
    else:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16)   # dry run: the same arithmetic on the CPU
    try:
        with ctx:
            losses = per_example_loss(eng.module, {k: v.to(device) for k, v in batch.items()}, task="lm")
        eng.accumulate(losses)
        out, stats = eng.take_sum()
    finally:
        eng.close()
    return out, stats


def _rel_error(got: list[Any], ref: list[Any]) -> tuple[float, float]:
    """``||got - ref|| / ||ref||`` and the cosine between them, over all parameters together."""
    import torch

    g = torch.cat([t.detach().float().cpu().reshape(-1) for t in got]).double()
    r = torch.cat([t.detach().float().reshape(-1) for t in ref]).double()
    return float((g - r).norm() / r.norm()), float(g @ r / (g.norm() * r.norm()))


@check
def clip(a: argparse.Namespace) -> tuple[str, str]:
    """One method's clipped sum on the device vs the CPU reference; ``C`` halfway between the two middle
    per-example norms, so that half of the examples are clipped and half are not."""
    cpu, dev, _, batch = _same_batch(a, a.method)
    grads, norms = _per_example(cpu, batch)
    ordered = sorted(norms.tolist())
    k = len(ordered) // 2
    C = (ordered[k - 1] + ordered[k]) / 2 if len(ordered) > 1 else ordered[0] / 2
    ref = _clipped_sum(grads, norms, C)
    want_clipped = int((norms > C).sum())
    near = int(((norms / C - 1).abs() < 0.02).sum())   # bf16 may put these on the other side of C
    device = _device(a)
    parts, ok = [], True
    for bf16, tol in ((False, 1e-3), (True, 0.05)):
        got, stats = _engine_sum(dev, batch, C, device, bf16)
        err, cos = _rel_error(got, ref)
        slack = near if bf16 else 0
        good = (err <= tol and cos >= 0.99 and stats.n == len(ordered)
                and abs(stats.n_clipped - want_clipped) <= slack
                and stats.clipped_norm_max <= C * (1 + (0.02 if bf16 else 1e-3)))
        ok &= good
        parts.append(f"{'bf16' if bf16 else 'fp32'} rel. error {err:.2e} (≤ {tol:g}), cosine {cos:.5f}, "
                     f"{stats.n_clipped}/{stats.n} clipped (reference {want_clipped}), max clipped norm "
                     f"{stats.clipped_norm_max / C:.4f} C")
    return ("PASS" if ok else "FAIL"), f"{a.method} on {_model(a)}, {len(ordered)} examples: " + "; ".join(parts)


@check
def noise(a: argparse.Namespace) -> tuple[str, str]:
    """Noise added on the device to the clipped sum of the same batch (dp-fft: every parameter), against the
    CPU generator's draws (the first million coordinates: they are independent, so any fixed subset is a sample)."""
    import torch
    from scipy.stats import ks_2samp

    from privtune.training.dp.noise import add_noise_, noise_generator

    _, dev, _, batch = _same_batch(a, "dp-fft")
    device = _device(a)
    C, sigma = 1.0, 0.7
    clipped, _ = _engine_sum(dev, batch, C, device, bf16=True)
    std = sigma * C

    def noisy(draw: int, on: Any) -> list[Any]:
        ts = [t.detach().clone().to(on) for t in clipped]
        add_noise_(ts, std, generator=noise_generator(1234, draw))
        return ts

    def residual(ts: list[Any]) -> Any:   # the noise alone, in float64 where it was drawn
        return torch.cat([(t - c.to(t.device)).reshape(-1).double() for t, c in zip(ts, clipped)])

    first, again, other = noisy(1, device), noisy(1, device), noisy(2, device)
    z = residual(first)
    n = z.numel()
    mean, sd = float(z.mean()), float(z.std())
    same = all(torch.equal(x, y) for x, y in zip(first, again))
    fresh = not torch.equal(z, residual(other))
    sample = 1_000_000
    ks = ks_2samp(z[:sample].cpu().numpy(), residual(noisy(1, torch.device("cpu")))[:sample].numpy())
    # device and CPU generators draw different numbers from the same N(0, (sigma C)^2); the sample standard
    # deviation's relative standard error is 1 / sqrt(2n): allow 5 of them, at least 0.5%
    sd_tol = max(0.005, 5 / math.sqrt(2 * n))
    ok = (same and fresh and abs(mean) <= 5 * std / math.sqrt(n) and abs(sd / std - 1) <= sd_tol
          and ks.pvalue > 1e-4 and first[0].device.type == device.type and n >= 10_000)
    detail = (f"{n:,} coordinates on {first[0].device}: mean {mean:+.2e}, std/(σC) {sd / std:.4f}, reproducible "
              f"{'yes' if same else 'NO'}, fresh per draw {'yes' if fresh else 'NO'}, KS vs CPU p={ks.pvalue:.3f}")
    return ("PASS" if ok else "FAIL"), detail


# -- bench and torchrun -------------------------------------------------------------------------------------------
def _privtune(args: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "privtune", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PRIVTUNE_PROGRESS": "0", **(env or {})})


@check
def bench(a: argparse.Namespace) -> tuple[str, str]:
    p = _privtune(["bench", "--model", _model(a), "--device", a.device, "--batch", str(a.batch), "--seq",
                   str(a.seq), "--rounds", str(a.rounds), "--warmup", "1", "--json"], timeout=a.timeout)
    if p.returncode != 0:
        return "FAIL", f"privtune bench exited {p.returncode}: {(p.stderr.strip().splitlines() or [''])[-1]}"
    d = json.loads(p.stdout)
    keys = ["dp_lora_over_lora_time", "dp_fft_over_fft_time", "dp_fft_over_fft_memory", "dp_lora_over_lora_memory"]
    vals = {k: d.get(k) for k in keys}
    ok = all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in vals.values())
    ok &= str(d["environment"]["device"]).startswith(a.device)
    steps = ", ".join(f"{m} {d[m.replace('-', '_') + '_step_s'] * 1e3:.1f} ms"
                      for m in ("fft", "dp-fft", "lora", "dp-lora"))
    detail = (f"{_model(a)} on {d['environment']['device']}, batch {a.batch} x {a.seq}: "
              + ", ".join(f"{k} {v}" for k, v in vals.items()) + f"; step {steps}")
    return ("PASS" if ok else "FAIL"), detail


@check
def torchrun(a: argparse.Namespace) -> tuple[str, str]:
    """Two processes on one device: NCCL (with gloo for CPU tensors) first on CUDA, gloo alone if NCCL refuses."""
    kw = _train_kwargs(a, "dp-lora")
    args = ["train", "--nproc", "2", "--json"]
    for k, v in kw.items():
        flag = f"--{k.replace('_', '-')}"
        args += [flag] if v is True else [flag, str(v)]
    attempts = ["nccl", "gloo"] if a.device == "cuda" else ["gloo"]
    notes = []
    for backend in attempts:
        out = Path(a.out) / "runs" / f"torchrun-{backend}"
        env = {"PRIVTUNE_DIST_BACKEND": "gloo"} if backend == "gloo" else {}
        try:
            p = _privtune([*args, "--out", str(out)], timeout=a.timeout / len(attempts), env=env)
        except subprocess.TimeoutExpired:
            notes.append(f"{backend}: timed out")
            continue
        if p.returncode != 0:
            notes.append(f"{backend} refused: {(p.stderr.strip().splitlines() or [''])[-1][:200]}")
            continue
        rec = json.loads((out / "run.json").read_text())
        problems = _check_record(rec, a, dp=True, processes=2)
        detail = (f"2 processes on one {a.device} device, backend {backend}: {rec['steps']} steps, ε "
                  f"{rec['epsilon']:.3f}, ledger steps {rec['ledger_steps']}" + (f" ({'; '.join(notes)})" if notes
                                                                                  else ""))
        return ("FAIL", detail + ": " + "; ".join(problems)) if problems else ("PASS", detail)
    return "FAIL", "; ".join(notes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("check", choices=sorted(CHECKS))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default=None)
    ap.add_argument("--model", default=None, help="model spec (default: the one the model check chose)")
    ap.add_argument("--candidates", default="smollm2-135m embedded")
    ap.add_argument("--method", default="dp-lora")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=240.0)
    a = ap.parse_args(argv)
    name = a.check if a.check not in ("train", "clip") else f"{a.check} {a.method}"
    try:
        status, detail = CHECKS[a.check](a)
    except Exception as e:
        traceback.print_exc()
        status, detail = "FAIL", _first_line(e)
    print(f"gpu-check {name}: {status} {detail}", flush=True)
    return 0 if status in ("PASS", "SKIP") else 1


if __name__ == "__main__":
    sys.exit(main())
