"""The report's figures (matplotlib, Agg backend), returned as base64 PNG for embedding in one HTML file.

Readability rules: every axis labelled with its unit, legends outside the axes (they never cover data), no text
annotations placed on data (variants are told apart by colour = method and marker = ε), one colour per method
across all figures.
"""

from __future__ import annotations

import base64
import io
from typing import Any, Sequence

from privtune.experiments.analysis import OUTSIDE_DP, Group, RunView, Variant
from privtune.experiments.findings import display

NLL = "nats/token"
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h"]
BASE_STYLE = {"marker": "*", "color": "black", "s": 220, "zorder": 5}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.grid": True, "grid.alpha": 0.3,
                         "figure.dpi": 100, "savefig.dpi": 110})
    return plt


def colours(methods: Sequence[str]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(dict.fromkeys(methods))}


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    _plt().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _eps_markers(gs: Sequence[Group]) -> dict[float | None, str]:
    eps = sorted({v.epsilon for g in gs for v in g.variants if v.epsilon is not None})
    return {None: "o", **{e: MARKERS[(i + 1) % len(MARKERS)] for i, e in enumerate(eps)}}


def _legend_outside(ax: Any, **kw: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                  fontsize=9, frameon=False, **kw)


def privacy_utility(gs: Sequence[Group], col: dict[str, Any]) -> str | None:
    """One panel per dataset/model: gain (x) vs non-sensitive test NLL (y), base star, Pareto front line."""
    gs = [g for g in gs if len(g.points()) > 0]
    if not gs:
        return None
    plt = _plt()
    markers = _eps_markers(gs)
    fig, axes = plt.subplots(len(gs), 1, figsize=(8.5, 4.6 * len(gs)), squeeze=False)
    for ax, g in zip(axes[:, 0], gs):
        pts = g.points()
        front = set(g.front())
        fx = sorted((gx, u) for lab, gx, u, _ in pts if lab in front)
        if len(fx) > 1:
            ax.plot([p[0] for p in fx], [p[1] for p in fx], "--", color="0.45", lw=1.2, zorder=1,
                    label="Pareto front")
        for lab, gx, u, var in pts:
            if var is None:
                ax.scatter([gx], [u], label="base model", **BASE_STYLE)
                continue
            gxs, us = var.std("gain_train"), var.std("utility")
            ax.errorbar([gx], [u], xerr=gxs, yerr=us, fmt=markers.get(var.epsilon, "o"), ms=9,
                        color=col[var.method], mec="black" if lab in front else col[var.method], mew=1.4,
                        label=lab, zorder=3, capsize=3)
        ax.axvline(0.0, color="0.7", lw=0.8, zorder=0)
        ax.set_xlabel(f"Sensitive-token NLL gain on training data ({NLL}; base − fine-tuned, higher = more "
                      "memorised)")
        ax.set_ylabel(f"Non-sensitive test NLL ({NLL}; lower = better)")
        ax.set_title(f"Privacy vs utility — {g.title}" if len(gs) > 1 else "Privacy vs utility")
        ax.margins(x=0.12, y=0.15)
        _legend_outside(ax, title="black edge: on the front")
    fig.tight_layout()
    return _png(fig)


def versus_epsilon(gs: Sequence[Group], col: dict[str, Any]) -> str | None:
    """Gain and utility against ε for DP methods; non-DP methods as dashed lines, the base model dotted."""
    gs = [g for g in gs if any(v.epsilon is not None and v.first.private for v in g.variants)]
    if not gs:
        return None
    plt = _plt()
    fig, axes = plt.subplots(len(gs), 2, figsize=(11, 4.2 * len(gs)), squeeze=False)
    for row, g in zip(axes, gs):
        placed = [(v, _certified_x(v)) for v in g.variants if v.first.private]
        placed = [(v, x) for v, x in placed if x is not None]
        all_eps = sorted({x for _, x in placed})
        for ax, attr, base, ylabel in (
                (row[0], "gain_train", 0.0, f"Sensitive-token NLL gain, train ({NLL})"),
                (row[1], "utility", g.base_utility, f"Non-sensitive test NLL ({NLL})")):
            dp: dict[str, list[tuple[float, Variant]]] = {}
            for v, x in placed:
                est = " — σ from an Edgeworth estimate, at its certified ε" if v.first.estimate_calibrated else ""
                dp.setdefault(v.label.split(" ε=")[0] + est, []).append((x, v))
            for name, pts in dp.items():
                pts = sorted(pts, key=lambda p: p[0])
                xs = [x for x, _ in pts]
                vs = [v for _, v in pts]
                ys = [v.mean(attr) for v in vs]
                err = [v.std(attr) or 0.0 for v in vs]
                ok = [(x, y, e) for x, y, e in zip(xs, ys, err) if y is not None]
                if ok:
                    ax.errorbar([o[0] for o in ok], [o[1] for o in ok], yerr=[o[2] for o in ok], marker="o",
                                color=col[vs[0].method], label=f"{name} (DP)", capsize=3)
            for v in g.variants:
                if not v.first.private and v.mean(attr) is not None:
                    ax.axhline(v.mean(attr), ls="--", color=col[v.method], lw=1.3, label=f"{v.label} (no DP)")
            if base is not None:
                ax.axhline(base, ls=":", color="black", lw=1.3, label="base model")
            ax.set_xscale("log")
            ax.set_xticks(all_eps)
            ax.set_xticklabels([f"{e:.3g}" for e in all_eps])
            ax.minorticks_off()
            ax.set_xlabel("ε (certified, at the run's δ)")
            ax.set_ylabel(ylabel)
            ax.margins(x=0.15)
        row[0].set_title("Memorisation against ε" + (f" — {g.title}" if len(gs) > 1 else ""))
        row[1].set_title("Utility against ε" + (f" — {g.title}" if len(gs) > 1 else ""))
        _legend_outside(row[1])
    fig.tight_layout()
    return _png(fig)


def _certified_x(v: Variant) -> float | None:
    """Where a DP variant goes on a certified-ε axis: its target, which its certified calibration meets — or, when
    σ was calibrated on an estimate (whose target is not certified), the certified ε its runs spent."""
    return v.mean("run.epsilon") if v.first.estimate_calibrated else v.epsilon


#: Throughput in examples/s: defined for every run (a DP run's realised token and example counts are private, its
#: expected example count is fixed by the plan), so DP and non-DP runs compare on one axis.
COST = (("run.wall_time_s", "Wall time (s)"), ("run.peak_memory_mb", "Peak memory (MB)"),
        ("run.examples_per_s", "Throughput (examples/s)"), ("run.trainable_params", "Trainable parameters"))


def cost(gs: Sequence[Group], col: dict[str, Any]) -> str | None:
    """Mean cost per variant: wall time, peak memory, throughput and trainable parameters (log scale)."""
    vs = [v for g in gs for v in g.variants]
    if not vs:
        return None
    plt = _plt()
    labels = [(f"{v.label}" if len(gs) == 1 else f"{v.label} · {v.first.dataset}") for v in vs]
    fig, axes = plt.subplots(1, 4, figsize=(13, 0.45 * len(vs) + 1.8), sharey=True)
    for ax, (key, title) in zip(axes, COST):
        vals = [v.mean(key) or 0.0 for v in vs]
        bars = ax.barh(range(len(vs)), vals, color=[col[v.method] for v in vs])
        fmt = "{:,.1f}" if key == "run.examples_per_s" else "{:,.0f}"
        ax.bar_label(bars, labels=[fmt.format(x) if x else "n/a" for x in vals], padding=3, fontsize=8)
        if key == "run.trainable_params" and any(vals):
            ax.set_xscale("log")
            ax.set_xlim(min(x for x in vals if x > 0) / 3, max(vals) * 30)
        else:
            ax.set_xlim(0, (max(vals) or 1) * 1.45)
        ax.set_title(title)
        ax.set_xlabel(title.split("(")[-1].rstrip(")") if "(" in title else "count (log scale)")
        ax.grid(axis="y", visible=False)
    axes[0].set_yticks(range(len(vs)))
    axes[0].set_yticklabels(labels)
    axes[0].invert_yaxis()
    fig.tight_layout()
    return _png(fig)


def _smooth(ys: Sequence[float]) -> list[float]:
    """Trailing mean over about a tenth of the run (at least 3 steps): the trend through per-batch noise."""
    w = max(3, len(ys) // 10)
    out, acc = [], 0.0
    for i, y in enumerate(ys):
        acc += y
        if i >= w:
            acc -= ys[i - w]
        out.append(acc / min(i + 1, w))
    return out


def curves(vs: Sequence[RunView], col: dict[str, Any]) -> str | None:
    """Training loss against step, one panel per method: each step's batch (faint) and a running mean (bold).

    A DP run's curve exists only when it was recorded as a diagnostic; it is computed from the private data without
    noise, so its panel says so in the title and its legend entry carries the label."""
    runs = [v for v in vs if v.ok and v.curve()]
    if not runs:
        return None
    plt = _plt()
    methods = list(dict.fromkeys(v.method for v in runs))
    n = len(methods)
    ncol = min(n, 2)
    nrow = (n + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.2 * ncol, 3.6 * nrow), squeeze=False, sharey=True)
    styles = ["-", "--", "-.", ":"]
    for ax, m in zip(axes.flat, methods):
        mine = [v for v in runs if v.method == m]
        for i, v in enumerate(mine):
            pts = v.curve()
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            ax.plot(xs, ys, "-", color=col[m], alpha=0.25, lw=1.0)   # per step: batch-to-batch noise
            ax.plot(xs, _smooth(ys), styles[i % 4], color=col[m], lw=1.8,
                    label=f"{v.label} (outside the DP guarantee)" if v.private else v.label)
        dp = any(v.private for v in mine)
        if dp:
            ax.set_title(f"{display(m)}\nDP diagnostic: {OUTSIDE_DP}", fontsize=9)
        else:
            ax.set_title(display(m))
        ax.set_xlabel("Optimizer step")
        cls = all(v.row.get("run.task") == "classification" for v in mine)  # cross-entropy per example
        ax.set_ylabel(f"Training loss ({'nats/example' if cls else NLL})")
        ax.yaxis.set_tick_params(labelleft=True)   # shared scale, labels on every panel
        if len(mine) > 1 or dp:
            ax.legend(fontsize=8, frameon=True, framealpha=0.85, loc="upper right")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    return _png(fig)


def trajectories(gs: Sequence[Group], col: dict[str, Any]) -> str | None:
    """Das et al.'s figure from the in-training evaluations: per dataset/model, memorisation (y) against non-sensitive
    test NLL (x), one line per run (seeds of a configuration in one colour, drawn together), marker size growing with
    the epoch, the base model as the star; beside it, for DP runs, memorisation against the ε spent so far."""
    from privtune.experiments.analysis import MEMORISATION_KEY, UTILITY_KEY, group_levels, num

    gs = [g for g in gs if any(r.trajectory for v in g.variants for r in v.runs)]
    if not gs:
        return None
    plt = _plt()
    markers = _eps_markers(gs)
    has_dp = any(r.private and r.trajectory for g in gs for v in g.variants for r in v.runs)
    ncol = 2 if has_dp else 1
    fig, axes = plt.subplots(len(gs), ncol, figsize=(6.5 * ncol + 2.5, 4.8 * len(gs)), squeeze=False)
    for row, g in zip(axes, gs):
        ax = row[0]
        for v in g.variants:
            for i, r in enumerate(v.runs):
                pts = [p for p in r.trajectory if num(p, UTILITY_KEY) is not None
                       and num(p, MEMORISATION_KEY) is not None]
                if not pts:
                    continue
                xs = [num(p, UTILITY_KEY) for p in pts]
                ys = [num(p, MEMORISATION_KEY) for p in pts]
                sizes = [18 + 50 * min(float(p.get("epoch") or 0.0), 4.0) for p in pts]
                c = col[v.method]
                ax.plot(xs, ys, "-", color=c, lw=1.4, alpha=0.85 if len(v.runs) == 1 else 0.6,
                        label=v.label if i == 0 else None, zorder=2)
                ax.scatter(xs, ys, s=sizes, marker=markers.get(v.epsilon, "o"), color=c, edgecolors="black",
                           linewidths=0.5, zorder=3)
                if r.private and len(row) > 1:
                    es = [num(p, "epsilon") for p in pts]
                    ok = [(e, y, s) for e, y, s in zip(es, ys, sizes) if e is not None]
                    if ok:
                        row[1].plot([o[0] for o in ok], [o[1] for o in ok], "-", color=c, lw=1.4,
                                    label=v.label if i == 0 else None)
                        row[1].scatter([o[0] for o in ok], [o[1] for o in ok], s=[o[2] for o in ok],
                                       marker=markers.get(v.epsilon, "o"), color=c, edgecolors="black",
                                       linewidths=0.5)
        base, levels = group_levels(g.variants)
        if base is not None:
            ax.scatter([base], [0.0], label="base model", **BASE_STYLE)
        for i, lv in enumerate(levels):
            ax.axvline(lv, ls=":", color="0.5", lw=1.0, zorder=0,
                       label="matched-utility levels (findings)" if i == 0 else None)
        ax.axhline(0.0, color="0.7", lw=0.8, zorder=0)
        ax.set_xlabel(f"Non-sensitive test NLL ({NLL}; lower = better utility)")
        ax.set_ylabel(f"Memorisation: gain train − gain test ({NLL})")
        ax.set_title("Privacy–utility trajectories" + (f" — {g.title}" if len(gs) > 1 else ""))
        ax.margins(x=0.1, y=0.12)
        if len(row) > 1:
            row[1].axhline(0.0, color="0.7", lw=0.8, zorder=0)
            row[1].set_xlabel("ε spent so far (certified)")
            row[1].set_ylabel(f"Memorisation ({NLL})")
            row[1].set_title("DP runs: memorisation over ε spent")
        handles: dict[str, Any] = {}
        for a in row:
            for h, lab in zip(*a.get_legend_handles_labels()):
                handles.setdefault(lab, h)
        row[-1].legend(list(handles.values()), list(handles), loc="upper left", bbox_to_anchor=(1.02, 1.0),
                       borderaxespad=0.0, fontsize=9, frameon=False, title="marker size grows with epoch")
    fig.tight_layout()
    return _png(fig)
