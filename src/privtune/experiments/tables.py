"""The report's tables as ``(header, rows)`` of display strings, built from run views.

Only numbers, configuration values and privtune's own labels go in: string fields of eval.json (redacted examples,
notes) are never copied, so no record text can reach a table. Exposure computed by extrapolation and empirical audit
bounds are labelled *estimate*; an audit bound is only shown beside the certified ε.
"""

from __future__ import annotations

from typing import Sequence

from privtune.experiments.analysis import DID_NOT_LEARN, OUTSIDE_DP, Group, RunView, Variant

Table = tuple[list[str], list[list[str]]]


def f(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def secs(x: float | None) -> str:
    return "–" if x is None else (f"{x:.1f}" if x < 10 else f"{x:,.0f}")


def epsilon_text(v: RunView) -> str:
    """``8.00 (certified, pld, δ = 1e-05)``; an estimate is never shown without saying so. With its privacy unit when
    the run states one (``8.00 per user (...)``), and a record-level run's group bound for a user when recorded."""
    from privtune.experiments.users import group_text, unit_suffix

    if not v.private:
        return "no DP (ε = ∞)"
    eps, acc, delta = v.get("run.epsilon"), v.row.get("run.accountant") or "?", v.get("run.delta")
    d = f", δ = {delta:g}" if delta is not None else ""
    if eps is None:
        t = v.epsilon_target
        return f"target {t:g} (run unfinished)" if t is not None else "–"
    warn = "; see its privacy warning" if v.privacy_warnings else ""
    unit, group = unit_suffix(v), group_text(v)
    if v.row.get("run.epsilon_certified") in (0, False):
        return f"{eps:.2f}{unit} (estimate, {acc}{d}; no certified value recorded{warn}){group}"
    return f"{eps:.2f}{unit} (certified, {v.certified_by}{d}{warn}){group}"


def epsilon_short(v: RunView) -> str:
    """Compact ε for wide tables: ``8.00 (certified, pld)``, ``∞ (no DP)``; ``8.00 per user (certified, pld)`` when the
    run states its privacy unit."""
    from privtune.experiments.users import unit_suffix

    if not v.private:
        return "∞ (no DP)"
    eps = v.get("run.epsilon")
    if eps is None:
        return "–"
    warn = "; privacy warning" if v.privacy_warnings else ""
    unit = unit_suffix(v)
    if v.row.get("run.epsilon_certified") in (0, False):
        return f"{eps:.2f}{unit} (estimate, {v.row.get('run.accountant') or '?'}{warn})"
    return f"{eps:.2f}{unit} (certified, {v.certified_by}{warn})"


def privacy_warnings(vs: Sequence[RunView]) -> list[tuple[str, list[str]]]:
    """Each distinct privacy warning (run.json ``privacy_warnings``) with the labels of the runs that carry it."""
    found: dict[str, list[str]] = {}
    for v in vs:
        for w in v.privacy_warnings:
            found.setdefault(w, []).append(v.label)
    return list(found.items())


def with_ci(x: float | None, ci: Sequence[float] | None, digits: int = 3) -> str:
    """``0.123 [0.101, 0.140]``: a figure and its 95% interval (the figure alone without one)."""
    return f(x, digits) if ci is None or x is None else f"{f(x, digits)} [{f(ci[0], digits)}, {f(ci[1], digits)}]"


def learned_text(v: RunView) -> str:
    """``yes`` / ``did not learn`` (utility not improved beyond its interval) / ``–``."""
    if not v.ok or v.learned is None:
        return "–"
    return "yes" if v.learned else DID_NOT_LEARN


def runs(vs: Sequence[RunView]) -> Table:
    """One row per run; gains, memorisation and test NLL with their 95% bootstrap intervals ``[lo, hi]``."""
    head = ["run", "status", "learned", "ε", "sens. train NLL (base)", "gain train [95% CI]", "gain test [95% CI]",
            "memorisation [95% CI]", "non-sens. test NLL [95% CI] (base)", "wall time (s)"]
    rows = []
    for v in vs:
        status = v.status if v.status != "failed" else f"failed at {v.row.get('stage')}"
        base_u = v.get("utility.nonsensitive_test_nll_base")
        util = with_ci(v.utility, v.ci("utility")) + (f" ({f(base_u)})" if base_u is not None else "")
        rows.append([v.label, status, learned_text(v), epsilon_short(v),
                     _pair(v.get("privacy.sensitive_train_nll"), v.get("privacy.sensitive_train_nll_base")),
                     with_ci(v.gain_train, v.ci("gain_train")), with_ci(v.gain_test, v.ci("gain_test")),
                     with_ci(v.memorisation, v.ci("memorisation")), util, secs(v.get("run.wall_time_s"))])
    return head, rows


SEED_FIGURES = (("gain_train", "gain train"), ("gain_test", "gain test"), ("memorisation", "memorisation"),
                ("utility", "non-sens. test NLL"))


def seeds(vars_: Sequence[Variant]) -> Table:
    """Configurations that ran with several seeds: ``mean ± sd (seed values)`` of each figure."""
    head = ["configuration", "seeds", *[name for _, name in SEED_FIGURES]]
    rows = []
    for var in vars_:
        if len(var.runs) < 2:
            continue
        cells = []
        for attr, _ in SEED_FIGURES:
            vals = var.values(attr)
            m, sd = var.mean(attr), var.std(attr)
            cells.append("–" if m is None else f"{f(m)} ± {f(sd)} ({', '.join(f(x) for x in vals)})")
        rows.append([var.label, ", ".join(str(r.seed) for r in var.runs), *cells])
    return head, rows


def _pair(a: float | None, b: float | None) -> str:
    return f"{f(a)} ({f(b)})" if b is not None else f(a)


def accounting(vs: Sequence[RunView]) -> Table:
    head = ["run", "target ε", "ε spent", "σ", "q", "steps", "sampling", "empirical audit (estimate)"]
    rows = []
    for v in vs:
        if not v.private:
            continue
        lb, conf = v.get("audit.epsilon_lower_bound"), v.get("audit.confidence")
        audit = f"ε ≥ {lb:.2f} at {conf:.0%} confidence (lower bound)" if lb is not None and conf is not None \
            else ("skipped" if v.row.get("audit.skipped") else "–")
        from privtune.experiments.users import unit_suffix

        target = f(v.epsilon_target, 2) + (unit_suffix(v) if v.epsilon_target is not None else "")
        if v.estimate_calibrated and v.epsilon_target is not None:
            target += " (estimate: σ calibrated on an Edgeworth estimate)"
        rows.append([v.label, target, epsilon_text(v), f(v.get("run.noise_multiplier"), 3),
                     f(v.get("run.sample_rate"), 4), f(v.get("run.steps"), 0), str(v.row.get("run.sampling") or "–"),
                     audit])
    return head, rows


def cost(vs: Sequence[RunView]) -> Table:
    """Examples/s for every run (DP: the expected count, fixed by the plan); tokens/s only where released — a DP
    run's token count is private, shown only as a labelled diagnostic."""
    head = ["run", "wall time (s)", "peak memory (MB)", "memory measure", "examples/s", "tokens/s",
            "trainable params", "total params"]
    rows = [[v.label, secs(v.get("run.wall_time_s")), f(v.get("run.peak_memory_mb"), 0),
             str(v.row.get("run.peak_memory_kind") or "–"), f(v.get("run.examples_per_s"), 1),
             training_stat_text(v, "tokens_per_s", 0), f(v.get("run.trainable_params"), 0),
             f(v.get("run.total_params"), 0)] for v in vs if v.ok]
    return head, rows


def training_stat_text(v: RunView, key: str, digits: int = 3) -> str:
    """A training statistic as released: plain without DP; a DP run's labelled, or ``withheld (DP)``."""
    x = v.training_stat(key)
    if not v.private:
        return f(x, digits)
    return "withheld (DP)" if x is None else f"{f(x, digits)} ({OUTSIDE_DP})"


def exposure(vs: Sequence[RunView], gs: Sequence[Group]) -> Table:
    head = ["run", "exposure (bits)", "base model (bits)", "max (bits)", "rank", "candidates", "computed",
            "canary copies"]
    rows = []
    for v in vs:
        if not v.ok or v.get("exposure.exposure_bits") is None:
            continue
        est = v.row.get("exposure.estimate") in (1, True)
        how = f"{v.row.get('exposure.method') or '–'}{' (estimate)' if est else ''}"
        rows.append([v.label, f(v.get("exposure.exposure_bits"), 2), f(v.get("exposure.exposure_bits_base"), 2),
                     f(v.get("exposure.max_exposure_bits"), 2), f(v.get("exposure.rank"), 0),
                     f(v.get("exposure.n_candidates"), 0), how, f(v.get("exposure.repeats"), 0)])
    return head, rows


def mia(vs: Sequence[RunView], *, sensitive: bool = False) -> Table:
    """One column per attack, ``AUC / TPR at 1% FPR``: on all tokens, or (``sensitive``) on sensitive tokens only."""
    ok = [v for v in vs if v.ok]
    attacks = sorted({a for v in ok for a in v.mia_attacks if a.endswith("_sensitive") == sensitive})
    head = ["run", "members / non-members", *[a.removesuffix("_sensitive") for a in attacks]]
    rows = []
    for v in ok:
        mine = [a for a in v.mia_attacks if a in attacks]
        if not mine:
            continue
        n = (v.get(f"mia.{mine[0]}.n_members"), v.get(f"mia.{mine[0]}.n_nonmembers"))
        cells = [f"{f(v.get(f'mia.{a}.auc'))} / {f(v.get(f'mia.{a}.tpr_at_1pct_fpr'))}" for a in attacks]
        rows.append([v.label, f"{f(n[0], 0)} / {f(n[1], 0)}", *cells])
    return head, rows


EXTRACTION = (("sampling.recall", "sampling recall"), ("sampling.recall_base", "base"),
              ("sampling.excess_recall", "excess"), ("sampling.precision", "precision"),
              ("reconstruction.top1_accuracy", "reconstruction top-1"), ("reconstruction.top1_accuracy_base", "base"),
              ("reconstruction.chance", "chance"), ("reconstruction.mean_rank", "mean rank"))


def extraction(vs: Sequence[RunView]) -> Table:
    ok = [v for v in vs if v.ok]
    keys = [(k, name) for k, name in EXTRACTION if any(v.get(f"extraction.{k}") is not None for v in ok)]
    if not keys:  # another extraction layout: its top-level numbers
        found = sorted({k.split(".", 1)[1] for v in ok for k, x in v.row.items() if k.startswith("extraction.")
                        and isinstance(x, (int, float)) and "per_label" not in k and "definition" not in k})
        keys = [(k, k) for k in found[:10]]
    rows = [[v.label, *[f(v.get(f"extraction.{k}")) for k, _ in keys]] for v in ok
            if any(v.get(f"extraction.{k}") is not None for k, _ in keys)]
    return ["run", *[n for _, n in keys]], rows
