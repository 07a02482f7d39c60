"""``privtune bench --scaling``: how the cost of each method grows with model size, sequence length and batch size.

Each point is one :func:`privtune.training.bench.run_bench` (interleaved rounds in one process, same batches) with one
factor changed from the base point (the benchmark's model, batch and sequence length). Model size varies the width of
the base model's architecture (hidden size ``h`` with the MLP at the same multiple of ``h`` and the attention heads
kept): such models are randomly initialised (cost does not depend on the weights) and saved with the base model's
tokenizer. The figure shows seconds per optimizer step of each method (log-log) and the DP/non-DP ratios of time
(solid) and peak memory (dashed) against each factor.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from privtune.training.bench import BenchConfig, ratio_key, run_bench

AXES = ("model", "seq", "batch")


@dataclass
class ScalingConfig:
    base: BenchConfig = field(default_factory=lambda: BenchConfig(rounds=2, warmup=1))
    widths: tuple[int, ...] = (128, 256, 512)
    seqs: tuple[int, ...] = (32, 64, 128, 256)
    batches: tuple[int, ...] = (4, 8, 16, 32)

    @classmethod
    def quick(cls, base: BenchConfig) -> "ScalingConfig":
        return cls(base=base, widths=(128, 256), seqs=(64, 128), batches=(8, 16))


@dataclass
class ScalingResult:
    points: list[dict[str, Any]]
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"points": self.points, "config": self.config}


def _width_model(source: str, hidden: int, out: Path) -> tuple[str, int]:
    """A random model of ``source``'s architecture at width ``hidden`` (saved with its tokenizer)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from privtune.models.loading import load_tokenizer, quiet_transformers, resolve_spec

    quiet_transformers()
    src = resolve_spec(source)
    cfg = AutoConfig.from_pretrained(src, local_files_only=True)
    mult = cfg.intermediate_size / cfg.hidden_size
    cfg.hidden_size, cfg.intermediate_size = hidden, int(round(mult * hidden))
    if getattr(cfg, "head_dim", None):
        cfg.head_dim = hidden // cfg.num_attention_heads
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    dest = out / f"w{hidden}"
    model.save_pretrained(dest)
    load_tokenizer(src, spec=source).save_pretrained(dest)
    return str(dest), sum(p.numel() for p in model.parameters())


def run_scaling(cfg: ScalingConfig | None = None, *, progress: Callable[[str], None] | None = None) -> ScalingResult:
    cfg = cfg or ScalingConfig()
    base = cfg.base
    points: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="privtune-scaling-") as tmp:
        plan: list[tuple[str, int, BenchConfig, int | None]] = []
        for w in cfg.widths:
            spec, n = _width_model(base.model, w, Path(tmp))
            plan.append(("model", w, replace(base, model=spec), n))
        plan += [("seq", s, replace(base, seq=s), None) for s in cfg.seqs]
        plan += [("batch", b, replace(base, batch=b), None) for b in cfg.batches]
        for k, (axis, value, bc, n_params) in enumerate(plan):
            if progress:
                progress(f"[{k + 1}/{len(plan)}] {axis} = {value}")
            r = run_bench(replace(bc, records_per_user=0))  # the DP/non-DP ratios only
            row: dict[str, Any] = {"axis": axis, "value": value, "params": n_params, **r.ratios}
            for m, c in r.methods.items():
                row[f"{m}_step_s"] = c.step_s
                row[f"{m}_peak_memory_mb"] = c.peak_memory_mb
            points.append(row)
    conf = {"base": {k: v for k, v in base.__dict__.items() if k != "pairs"}, "widths": list(cfg.widths),
            "seqs": list(cfg.seqs), "batches": list(cfg.batches)}
    return ScalingResult(points=points, config=conf)


def plot_scaling(result: ScalingResult, out: str | Path, *, pairs: tuple[tuple[str, str], ...]) -> Path:
    """Write the figure (PNG) described in the module docstring."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"model": "hidden size (model width)", "seq": "sequence length (tokens)", "batch": "batch size"}
    fig, axes = plt.subplots(2, len(AXES), figsize=(4.2 * len(AXES), 7), squeeze=False)
    methods = [m for pair in pairs for m in pair]
    for j, axis in enumerate(AXES):
        pts = [p for p in result.points if p["axis"] == axis]
        xs = [p["value"] for p in pts]
        top, bottom = axes[0][j], axes[1][j]
        for m in methods:
            top.plot(xs, [p[f"{m}_step_s"] for p in pts], marker="o", label=m,
                     linestyle="--" if m.startswith("dp-") else "-")
        top.set_xscale("log", base=2)
        top.set_yscale("log")
        top.set_title(labels[axis])
        top.set_ylabel("seconds per optimizer step")
        for base, dp in pairs:
            line = bottom.plot(xs, [p[ratio_key(base, dp, "time")] for p in pts], marker="o",
                               label=f"{dp} / {base} time")[0]
            mem = [p[ratio_key(base, dp, "memory")] for p in pts]
            if all(v is not None for v in mem):
                bottom.plot(xs, mem, marker="s", linestyle="--", color=line.get_color(),
                            label=f"{dp} / {base} memory")
        bottom.axhline(1.0, color="grey", linewidth=0.8)
        bottom.set_xscale("log", base=2)
        bottom.set_xlabel(labels[axis])
        bottom.set_ylabel("DP / non-DP")
    axes[0][0].legend(fontsize=8)
    axes[1][0].legend(fontsize=8)
    fig.suptitle("privtune bench --scaling (methods interleaved at each point; shared-machine timings)")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
