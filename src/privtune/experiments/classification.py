"""The report's classification section: accuracy, macro-F1 and the privacy each run certifies — and, for a run whose
noise was calibrated on an estimate (EW-Tune's Edgeworth calibration), how far the claimed ε is from the certified
one.

Definitions: *test accuracy* is the share of test records whose arg-max class is the label; *macro-F1* the
unweighted mean over classes of 2TP/(2TP + FP + FN) (both from run.json). *Certified ε* is the run's own ledger
under a certified accountant (an upper bound). *Claimed ε* is an estimate accountant's value for the same ledger —
for ``--noise-calibration edgeworth-estimate`` the EW-Tune accountant's, i.e. what EW-Tune would report — always
shown beside the certified value and labelled *estimate*. *Gap* = certified − claimed.
"""

from __future__ import annotations

from typing import Sequence

from privtune.experiments.analysis import RunView, Variant, variants
from privtune.experiments.tables import Table, f, secs


def is_classification(v: RunView) -> bool:
    return v.row.get("run.task") == "classification"


def _estimate_calibrated(v: RunView) -> bool:
    return v.estimate_calibrated


def _certified(v: RunView) -> str:
    if not v.private:
        return "∞ (no DP)"
    eps = v.get("run.epsilon")
    if eps is None:
        return "–"
    met = v.row.get("run.target_met")
    flag = " — above target" if met in (0, False) else ""
    flag += " — privacy warning" if v.privacy_warnings else ""
    return f"{eps:.2f} ({v.certified_by}{flag})"


def _target(v: RunView) -> str:
    if not v.private or v.epsilon_target is None:
        return "–"
    return f"{v.epsilon_target:.2f}{' (estimate)' if _estimate_calibrated(v) else ''}"


def _claimed(v: RunView) -> tuple[str, str]:
    """(claimed ε text, gap text): only for runs that carry an estimate."""
    est, eps = v.get("run.epsilon_estimate"), v.get("run.epsilon")
    if est is None or eps is None:
        return "–", "–"
    gap = eps - est
    rel = f" ({100 * gap / est:+.0f}%)" if est > 0 else ""
    return f"{est:.2f} (estimate)", f"{gap:+.2f}{rel}"


def _sigma(v: RunView) -> str:
    s = v.get("run.noise_multiplier")
    if s is None:
        return "–"
    cert = v.get("run.certified_noise_multiplier")
    return f"{s:.3f} (certified calibration {cert:.3f})" if cert is not None and _estimate_calibrated(v) else f"{s:.3f}"


def table(vs: Sequence[RunView]) -> Table:
    head = ["run", "status", "test accuracy", "macro-F1", "test loss", "target ε", "certified ε", "claimed ε",
            "certified − claimed", "σ", "steps", "wall time (s)"]
    rows = []
    for v in vs:
        if not is_classification(v):
            continue
        claimed, gap = _claimed(v)
        rows.append([v.label, v.status if v.status != "failed" else f"failed at {v.row.get('stage')}",
                     f(v.get("run.test_accuracy")), f(v.get("run.macro_f1")), f(v.get("run.test_loss")),
                     _target(v), _certified(v), claimed, gap, _sigma(v),
                     f(v.get("run.steps"), 0), secs(v.get("run.wall_time_s"))])
    return head, rows


def _twin(var: Variant, vars_: Sequence[Variant]) -> Variant | None:
    """The certified-calibration configuration of the same method and budget — same data, model, rank, lr and
    epochs when there is one."""
    first = var.first
    cands = [w for w in vars_ if w is not var and w.first.row.get("run.method") == first.row.get("run.method")
             and not _estimate_calibrated(w.first) and w.epsilon == var.epsilon]
    same = ("grid.dataset", "grid.model", "grid.lora_r", "grid.lr", "grid.epochs")
    return max(cands, key=lambda w: sum(w.first.row.get(k) == first.row.get(k) for k in same), default=None)


def _paired(a: Variant, b: Variant) -> list[float]:
    """Test accuracy of ``a`` minus ``b`` for every seed both ran, in seed order."""
    def by_seed(var: Variant) -> dict:
        return {v.row.get("grid.seed"): v.get("run.test_accuracy") for v in var.runs
                if v.get("run.test_accuracy") is not None}

    x, y = by_seed(a), by_seed(b)
    return [x[k] - y[k] for k in sorted(set(x) & set(y), key=str)]


def _accuracy(var: Variant) -> str:
    """Test accuracy of a configuration: the value, or mean ± sd over its seeds."""
    vals = var.values("run.test_accuracy")
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{var.mean('run.test_accuracy'):.3f} ± {var.std('run.test_accuracy'):.3f} (mean ± sd, {len(vals)} seeds)"


def findings(vs: Sequence[RunView]) -> list[str]:
    """Sentences on what estimate calibration buys and what it costs, each stating its figures (one per
    configuration; accuracies are means over seeds)."""
    vars_ = variants([v for v in vs if is_classification(v)])
    out: list[str] = []
    for var in vars_:
        if not _estimate_calibrated(var.first):
            continue
        eps, est = var.mean("run.epsilon"), var.mean("run.epsilon_estimate")
        s, cert_s = var.mean("run.noise_multiplier"), var.mean("run.certified_noise_multiplier")
        if eps is None or est is None or s is None:
            continue
        text = (f"{var.label} calibrated its noise on an Edgeworth estimate (EW-Tune): it claims ε = {est:.2f} "
                f"(estimate) but its certified ε is {eps:.2f}, {eps - est:+.2f} ({100 * (eps - est) / est:+.0f}%)")
        if cert_s:
            text += (f"; it used σ = {s:.3f} where a certified calibration uses {cert_s:.3f} "
                     f"({100 * (1 - s / cert_s):.0f}% less noise)")
        twin = _twin(var, vars_)
        if twin is not None and var.values("run.test_accuracy") and twin.values("run.test_accuracy"):
            text += (f"; test accuracy {_accuracy(var)} vs {_accuracy(twin)} for {twin.label} at a certified ε of "
                     f"{twin.mean('run.epsilon') or 0:.2f}")
            diffs = _paired(var, twin)
            if len(diffs) > 1:
                text += f" (difference paired by seed: {', '.join(f'{d:+.3f}' for d in diffs)})"
        out.append(text + ".")
    dp = [w for w in vars_ if w.first.private and not _estimate_calibrated(w.first) and w.values("run.test_accuracy")]
    if len(dp) > 1:
        dp.sort(key=lambda w: -(w.mean("run.test_accuracy") or 0))
        out.append("Test accuracy of the runs with a certified calibration: "
                   + ", ".join(f"{w.label} {_accuracy(w)}" for w in dp) + ".")
    plain = [w for w in vars_ if not w.first.private and w.values("run.test_accuracy")]
    if plain:
        out.append("Without DP: " + ", ".join(f"{w.label} {_accuracy(w)}" for w in plain) + ".")
    return out


def html_section(vs: Sequence[RunView], render_table) -> str:
    """The section's HTML; ``render_table`` is the report's table renderer."""
    if not any(is_classification(v) for v in vs):
        return ""
    return ("<h2>Classification</h2>"
            "<p>Test accuracy and macro-F1 from each run's test split. <i>Certified ε</i> is an upper bound for the "
            "run's own privacy ledger. <i>Claimed ε</i> is an estimate accountant's value for the same ledger (for "
            "runs calibrated on the Edgeworth estimate, what EW-Tune reports); it is not a guarantee, and the gap "
            "says how far the claim falls short of what is certified.</p>"
            + render_table(table(vs), num_from=2))


def markdown(vs: Sequence[RunView]) -> list[str]:
    head, rows = table(vs)
    if not rows:
        return []
    lines = ["## Classification", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "certified ε: upper bound for the run's ledger; claimed ε: an estimate (EW-Tune's Edgeworth "
              "accountant for estimate-calibrated runs), never a guarantee.", ""]
    return lines
