"""``privtune demo``: the whole pipeline on the embedded default, offline, in minutes — or on another base model.

1. build (or reuse from the cache) the embedded base model (``--model SPEC``: resolve that spec instead, e.g.
   convert ``smollm2-135m`` into the model cache on first use);
2. generate a CustomerSim dataset with an exposure canary and one-run audit canaries;
3. fine-tune it with ``fft``, ``lora``, ``dp-fft`` and ``dp-lora`` (ε = 8) and evaluate each against the base model
   (a study run by :mod:`privtune.experiments.sweep`, so an interrupted demo resumes where it stopped);
4. write the report and print the summary.

The sizes below were chosen by measurement so that the demo finishes within 10 minutes on 2 CPU cores from a cold
cache while the effect it exists to show stays visible: fine-tuning without DP memorises the training records'
secrets (sensitive-token NLL gain and canary exposure well above the DP runs'), and every method learns — each
improves the non-sensitive test NLL ``G = Σ_i a_i / Σ_i n_i`` (``a_i``: NLL drop, base − fine-tuned, summed over
test record ``i``'s non-sensitive tokens; ``n_i``: their count) beyond its 95% bootstrap interval over records, the
DP runs at ε = 8 included. That takes large Poisson batches for DP-SGD (256 of 461 records: 6 steps, σ = 1.12), a
clipping norm no larger than DP-LoRA's per-example gradients (C = 0.1) and per-method learning rates; with the
defaults (batch 64, C = 1, LoRA 2e-3) DP-LoRA ended worse than the base model. The scan, its table and the
measured gains are in docs/experiments.md, "Demo sizing" (``scripts/demo_sizing.py``). ``scale="tiny"`` runs the same
pipeline on a seconds-sized model for tests. ``scale="real"`` is Das et al.'s comparison on a real pretrained model
(``smollm2-135m``, 134.5M parameters), sized for at most 90 minutes on 2 CPU cores: fewer and shorter runs, smaller
learning rates (a pretrained model is fine-tuned, not trained), a 3-digit canary (exact exposure scores every
candidate with the model) and fewer evaluation records; ``examples/real-model.toml`` is the same study as a file.
``model=`` replaces the scale's model; a model other than the embedded one defaults to the ``real`` sizes.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from privtune.errors import ConfigError, fmt
from privtune.experiments.config import parse_study
from privtune.experiments.report import write_report
from privtune.experiments.sweep import SweepResult, run_sweep
from privtune.utils.fsio import atomic_write_json

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class DemoScale:
    """Every size the demo depends on (see the module docstring for how they were chosen)."""

    model: str
    n_train: int
    n_test: int
    canary_repeats: int
    canary_digits: int          # candidate space 10^digits for exposure (exact ranking)
    audit_canaries: int
    epochs: float
    batch_size: int
    dp_batch_size: int          # DP-SGD: larger logical batches, less noise per example for the same ε
    max_length: int
    epsilon: float
    eval_records: int           # per split, for privacy/utility/MIA
    extraction_prompts: int     # sampling extraction probes
    reconstruction_records: int
    workers: int
    learning_rates: tuple[tuple[str, float], ...] = ()   # per method; absent: the method's default
    max_grad_norms: tuple[tuple[str, float], ...] = ()  # DP clipping norm C per DP method; absent: 1.0 (train's)


SCALES: dict[str, DemoScale] = {
    # Measured so that each method improves the non-sensitive test NLL beyond its 95% interval (docs/experiments.md,
    # "Demo sizing"): DP runs take Poisson batches of 256 (q = 0.56, 6 steps at ε = 8, σ = 1.12); DP-LoRA clips at
    # C = 0.1 (at C = 1 only 14% of its per-example gradients were clipped, so the noise σC swamped them), DP-FFT
    # keeps C = 1; rates: LoRA 1e-2 (2e-3 learnt a fifth as much), DP-LoRA 1e-2 (2e-2 overshoots), DP-FFT 1e-3.
    "default": DemoScale(model="embedded", n_train=400, n_test=200, canary_repeats=10, canary_digits=5,
                         audit_canaries=100, epochs=3, batch_size=16, dp_batch_size=256, max_length=128,
                         epsilon=8.0, eval_records=200, extraction_prompts=50, reconstruction_records=30, workers=2,
                         learning_rates=(("fft", 5e-4), ("lora", 1e-2), ("dp-fft", 1e-3), ("dp-lora", 1e-2)),
                         max_grad_norms=(("dp-lora", 0.1),)),
    "tiny": DemoScale(model="embedded:tiny", n_train=48, n_test=16, canary_repeats=4, canary_digits=3,
                      audit_canaries=10, epochs=1, batch_size=8, dp_batch_size=16, max_length=48, epsilon=8.0,
                      eval_records=16, extraction_prompts=8, reconstruction_records=8, workers=1),
    # About 134.5M parameters, 2 CPU cores. Measured (docs/real-model.md, "Measured"): LoRA trains at ~170 tokens/s,
    # FFT ~125, DP-FFT ~110 (T 128; ~70 before bk's tied-weight cross term); 3 epochs of 200 short dialogs (~79k
    # tokens per run) in one process using both cores: the study took 68 minutes and every method learnt. DP runs
    # take Poisson batches of 64 (q = 0.27, 12 steps at ε = 8, σ = 0.93). Rates for fine-tuning a pretrained model:
    # FFT 1e-4 (its 5e-4 default, set for the embedded model, would wreck it), LoRA 1e-3, DP-FFT 1e-4, DP-LoRA 5e-3
    # with every example clipped at C = 0.1.
    "real": DemoScale(model="smollm2-135m", n_train=200, n_test=100, canary_repeats=10, canary_digits=3,
                      audit_canaries=50, epochs=3, batch_size=8, dp_batch_size=64, max_length=128, epsilon=8.0,
                      eval_records=100, extraction_prompts=20, reconstruction_records=10, workers=1,
                      learning_rates=(("fft", 1e-4), ("lora", 1e-3), ("dp-fft", 1e-4), ("dp-lora", 5e-3)),
                      max_grad_norms=(("dp-lora", 0.1),)),
}

STUDY = """\
name = "demo"
description = "privtune demo: {model} fine-tuned on CustomerSim with fft, lora, dp-fft and dp-lora at ε = {epsilon:g}"
models = ["{model}"]
methods = ["fft", "lora", "dp-fft", "dp-lora"]
budgets = [{epsilon}]
lora_ranks = [8]
epochs = [{epochs}]
seeds = [0]
batch_size = {batch_size}
max_length = {max_length}

[datasets.customersim]
generator = "customersim"
train = {n_train}
test = {n_test}
seed = 0
canary_repeats = {canary_repeats}
canary_digits = {canary_digits}
audit_canaries = {audit_canaries}

{learning_rates_table}[method_options.dp-fft]
batch_size = {dp_batch_size}
{clip_dp_fft}
[method_options.dp-lora]
batch_size = {dp_batch_size}
{clip_dp_lora}
[eval]
max_records = {eval_records}
max_length = {max_length}
exposure_method = "exact"

[eval.extraction]
n_prompts = {extraction_prompts}
n_reconstruction = {reconstruction_records}
"""


@dataclass
class DemoResult:
    out: Path
    report: Path
    markdown: str
    sweep: SweepResult
    timings_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "report": str(self.report), "timings_s": self.timings_s,
                "sweep": self.sweep.to_dict()}


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def study_text(scale: DemoScale) -> str:
    lrs = "".join(f'"{m}" = [{lr:g}]\n' for m, lr in scale.learning_rates)
    clip = {m: f"max_grad_norm = {c:g}\n" for m, c in scale.max_grad_norms}
    return STUDY.format(**asdict(scale), learning_rates_table=f"[learning_rates]\n{lrs}\n" if lrs else "",
                        clip_dp_fft=clip.get("dp-fft", ""), clip_dp_lora=clip.get("dp-lora", ""))


def demo_scale(scale: str | None = None, model: str | None = None) -> tuple[str, DemoScale]:
    """The scale's name and sizes: ``scale`` (default ``default``, or ``real`` for a ``model`` that is not the
    embedded one), with ``model`` in place of the scale's own."""
    if scale is None:
        scale = "default" if model is None or model == "embedded" or model.startswith("embedded:") else "real"
    if scale not in SCALES:
        raise ConfigError(fmt("--scale", f"one of {', '.join(SCALES)}", scale))
    sc = SCALES[scale]
    return scale, (sc if model is None else replace(sc, model=model))


def _base_model(spec: str) -> dict[str, Any]:
    """Build, convert or find the base model before any run starts (so its cost is timed apart)."""
    if spec == "embedded" or spec.startswith("embedded:"):
        from privtune.models.embedded import build_embedded

        return build_embedded(spec.partition(":")[2] or "default").to_dict()
    from privtune.models.loading import resolve_spec

    source = resolve_spec(spec)
    return {"spec": spec, "path": source, "built": None}


def run_demo(*, out: str | Path, scale: str | None = None, workers: int | None = None,
             model: str | None = None) -> DemoResult:
    """Run the demo into the study directory ``out`` (re-running reuses everything already done)."""
    scale, sc = demo_scale(scale, model)
    out = Path(out)
    t0, c0, ch0 = time.perf_counter(), time.process_time(), _children_cpu()
    timings: dict[str, float] = {}

    base = _base_model(sc.model)
    timings["base_model"] = round(time.perf_counter() - t0, 1)
    timings["base_model_built"] = base.get("built")

    text = study_text(sc)
    study = parse_study(tomllib.loads(text), base_dir=out, where="privtune demo")
    study.source = text
    t1 = time.perf_counter()
    res = run_sweep(study, out=out, workers=sc.workers if workers is None else workers)
    timings["sweep"] = round(time.perf_counter() - t1, 1)

    t2 = time.perf_counter()
    rep = write_report(out)
    timings["report"] = round(time.perf_counter() - t2, 1)
    timings["total"] = round(time.perf_counter() - t0, 1)
    # CPU seconds of this process and of its finished worker processes (all threads): a check on wall times taken
    # on a busy machine
    timings["cpu_total"] = round(time.process_time() - c0 + _children_cpu() - ch0, 1)
    atomic_write_json(out / "demo.json", {"scale": scale, "sizes": asdict(sc), "timings_s": timings,
                                          "base_model": base, "sweep": res.to_dict()})
    return DemoResult(out=out, report=rep.html_path, markdown=rep.markdown, sweep=res, timings_s=timings)
