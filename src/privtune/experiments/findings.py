"""Findings: short sentences computed from the results, claiming only what the numbers show.

Each sentence states the figures it rests on. Comparisons use, for each method (and each ε of a DP method), the
configuration with the lowest non-sensitive test NLL when a method ran in several; the text says so. With one seed
there is no estimate of run-to-run variation, and the text says that too.

Uncertainty: figures carry their 95% bootstrap interval (over records, or people) where eval.json has one; a
difference between two runs is called only when their intervals do not overlap, otherwise the text says "not
distinguishable at this size". A run that did not learn (:attr:`~privtune.experiments.analysis.RunView.learned`) is
named as such, and its small gain is never presented as privacy.
"""

from __future__ import annotations

from typing import Sequence

from privtune.evaluation.stats import separated
from privtune.experiments.analysis import (DID_NOT_LEARN, Group, Matched, RunView, Variant, group_levels,
                                          matched_at, trajectory_variants)
from privtune.experiments.tables import privacy_warnings, secs
from privtune.experiments.users import privacy_unit, unit_suffix

#: Smallest train-minus-test gain (nats/token) called "memorisation" in words; below it, only the numbers are given.
MEMORISATION_CLAIM = 0.05
DISPLAY = {"fft": "FFT", "lora": "LoRA", "dp-fft": "DP-FFT", "dp-lora": "DP-LoRA"}


def display(method: str) -> str:
    name, sep, rest = method.partition(" (")   # "dp-lora (user-level)": a method with a qualifier
    return DISPLAY.get(name, name) + sep + rest


def _name(v: Variant) -> str:
    est = ", an Edgeworth estimate" if v.first.estimate_calibrated else ""
    eps = f" (ε = {v.epsilon:g}{unit_suffix(v.first)}{est})" if v.epsilon is not None else ""
    return f"{display(v.method)}{eps}"


def ci_text(ci: Sequence[float] | None) -> str:
    """`` [0.102, 0.141]`` (a leading space), or nothing without an interval."""
    return "" if ci is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]"


def not_learned_text(v: Variant) -> str:
    """Why ``v`` is flagged: its utility did not improve on the base model beyond the interval."""
    r = v.first
    u, b, imp = r.utility, r.get("utility.nonsensitive_test_nll_base"), r.ci("improvement")
    seeds = f" (in {v.not_learned} of {len(v.runs)} seeds)" if len(v.runs) > 1 else ""
    s = f"{_name(v)} {DID_NOT_LEARN}{seeds}: its non-sensitive test NLL"
    if u is not None and b is not None:
        s += f" ({u:.3f} vs the base model's {b:.3f}; improvement {b - u:.3f}"
        s += f", 95% interval{ci_text(imp)})" if imp is not None else ")"
    s += (" did not improve on the base model beyond its interval, so its low memorisation is not a privacy result "
          "— a model that learns nothing memorises nothing.")
    return s


def _best(vs: Sequence[Variant]) -> Variant:
    return min(vs, key=lambda v: (v.mean("utility") is None, v.mean("utility") or 0.0))


def representatives(g: Group) -> tuple[dict[str, Variant], dict[tuple[str, float], Variant], bool]:
    """Non-DP ``{method: variant}``, DP ``{(method, ε): variant}``, and whether any choice was among several."""
    by: dict[tuple[str, float | None], list[Variant]] = {}
    for v in g.variants:
        method = f"{v.method} (user-level)" if privacy_unit(v.first) == "user" else v.method  # never merged
        by.setdefault((method, v.epsilon if v.first.private else None), []).append(v)
    plain = {m: _best(vs) for (m, e), vs in by.items() if e is None}
    dp = {(m, e): _best(vs) for (m, e), vs in by.items() if e is not None}
    return plain, dp, any(len(vs) > 1 for vs in by.values())


def times(r: float) -> str:
    """A ratio as ``2.1×`` (two significant digits below 1, none above 10)."""
    return f"{r:.0f}×" if r >= 10 else (f"{r:.1f}×" if r >= 1 else f"{r:.2g}×")


def _ratio_text(a: float, b: float, what: str) -> str:
    """'2.1× less wall time' / '1.3× more wall time' for a relative to b."""
    if a <= 0 or b <= 0:
        return ""
    r = b / a
    if 1 / 1.1 <= r <= 1.1:
        return f"about the same {what}"
    return f"{times(r)} less {what}" if r >= 1 else f"{times(1 / r)} more {what}"


def group_findings(g: Group) -> list[str]:
    out: list[str] = []
    plain, dp, chose = representatives(g)
    full = next((v for v in plain.values() if not v.first.adapter), None)
    adapter = next((v for v in plain.values() if v.first.adapter), None)

    for v in g.variants:
        if v.did_not_learn:
            out.append(not_learned_text(v))

    for v in plain.values():      # memorisation by non-private fine-tuning
        gt, gs = v.mean("gain_train"), v.mean("gain_test")
        b, t = v.mean("privacy.sensitive_train_nll_base"), v.mean("privacy.sensitive_train_nll")
        if gt is None or b is None or t is None or v.did_not_learn:
            continue
        s = (f"{_name(v)} lowered the NLL of sensitive tokens in its training records by {gt:.3f} nats/token"
             f"{ci_text(v.ci('gain_train'))} ({b:.3f} → {t:.3f})")
        if gs is not None:
            s += f"; on held-out records the drop was {gs:.3f}{ci_text(v.ci('gain_test'))}"
            if gt > 2 * max(gs, 0.0) and gt - gs >= MEMORISATION_CLAIM:
                s += ", so most of the gain is specific to the training records (memorisation), not general format"
        out.append(s + ".")

    if full is not None and adapter is not None:
        gf, ga = full.mean("gain_train"), adapter.mean("gain_train")
        tf, ta = full.mean("run.wall_time_s"), adapter.mean("run.wall_time_s")
        cf, ca = full.ci("gain_train"), adapter.ci("gain_train")
        if full.did_not_learn or adapter.did_not_learn:
            pass  # no memorisation comparison with a run that learned nothing (stated above)
        elif gf is not None and ga is not None and cf is not None and ca is not None and not separated(cf, ca):
            out.append(f"{_name(adapter)}'s and {_name(full)}'s sensitive-token gains on training data ({ga:.3f}"
                       f"{ci_text(ca)} vs {gf:.3f}{ci_text(cf)} nats/token) are not distinguishable at this size.")
        elif gf is not None and ga is not None and gf > 0:
            s = (f"{_name(adapter)} memorised {100 * ga / gf:.0f}% as much as {_name(full)}: its sensitive-token gain "
                 f"on training data is {ga:.3f} vs {gf:.3f} nats/token")
            if tf and ta:
                s += f", in {_ratio_text(ta, tf, 'wall time')} ({secs(ta)} s vs {secs(tf)} s)"
            pa, pf = adapter.mean("run.trainable_params"), full.mean("run.trainable_params")
            if pa and pf:
                s += f", training {100 * pa / pf:.1f}% as many parameters"
            out.append(s + ".")

    for (m, eps), v in sorted(dp.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        ref = next((p for p in plain.values() if p.first.adapter == v.first.adapter), None)
        gd, ud = v.mean("gain_train"), v.mean("utility")
        if gd is None or ud is None:
            continue
        cert = _certification(v)
        s = (f"At ε = {eps:g} ({cert}), {display(m)}'s sensitive-token gain on training data is {gd:.3f} nats/token"
             f"{ci_text(v.ci('gain_train'))}")
        gr = ref.mean("gain_train") if ref is not None else None
        if v.did_not_learn:
            s += f" — it {DID_NOT_LEARN}, so this is no privacy result"
        elif gd <= 0:
            s += ", no gain over the base model"
        if ref is not None and gr is not None:
            cd, cr = v.ci("gain_train"), ref.ci("gain_train")
            if v.did_not_learn or ref.did_not_learn or (cd is not None and cr is not None and not separated(cd, cr)):
                s += f" ({_name(ref)}: {gr:.3f}{ci_text(cr)}"
                s += "; not distinguishable at this size)" if cd is not None and cr is not None and \
                    not separated(cd, cr) else ")"
            else:
                s += f", {100 * gd / gr:.0f}% of {_name(ref)}'s {gr:.3f}" if gr > 0 and gd > 0 else \
                    f" ({_name(ref)}: {gr:.3f})"
        s += f"; its non-sensitive test NLL is {ud:.3f}{ci_text(v.ci('utility'))}"
        extra = []
        if ref is not None and ref.mean("utility") is not None:
            extra.append(f"{_name(ref)} {ref.mean('utility'):.3f}")
        if g.base_utility is not None:
            extra.append(f"base model {g.base_utility:.3f}")
        out.append(s + (f" ({', '.join(extra)})." if extra else "."))
        if ref is not None:
            tr, td = ref.mean("run.wall_time_s"), v.mean("run.wall_time_s")
            mr, md = ref.mean("run.peak_memory_mb"), v.mean("run.peak_memory_mb")
            if tr and td and mr and md:
                out.append(f"{_name(v)} took {times(td / tr)} the wall time and {md / mr:.2f}× the peak memory "
                           f"of {_name(ref)}.")

    exp = [(v, v.mean("exposure.exposure_bits")) for v in g.variants]
    exp = [(v, e) for v, e in exp if e is not None]
    if exp:
        mx = max((v.mean("exposure.max_exposure_bits") or 0.0) for v, _ in exp)
        est = any(r.row.get("exposure.estimate") in (1, True) for v, _ in exp for r in v.runs)
        items = ", ".join(f"{_name(v)} {e:.1f}" for v, e in sorted(exp, key=lambda t: -t[1]))
        base = [b for v, _ in exp for b in v.values("exposure.exposure_bits_base")]
        if base:
            items += f", base model {sum(base) / len(base):.1f}"
        out.append(f"Canary exposure in bits{' (estimates: extrapolated)' if est else ''} (maximum {mx:.1f}, "
                   f"reached when the canary ranks first among all candidates): {items}.")

    mia = [(v, v.first.best_mia()) for v in g.variants]
    mia = [(v, m, v.mean(f"mia.{m[0]}.auc")) for v, m in mia if m is not None]
    if mia:
        items = ", ".join(f"{_name(v)} {auc:.3f} ({a})" for v, (a, _), auc in sorted(mia, key=lambda t: -t[2]))
        nm, nn = mia[0][0].mean(f"mia.{mia[0][1][0]}.n_members"), mia[0][0].mean(f"mia.{mia[0][1][0]}.n_nonmembers")
        sizes = f" on {nm:.0f} members and {nn:.0f} non-members" if nm and nn else ""
        out.append(f"Strongest membership-inference attack, AUC{sizes} (0.5 is chance): {items}.")

    out += matched_findings(g)

    front = g.front()
    if len(g.points()) > 1:
        dropped = [v.label for v in g.variants if v.did_not_learn]
        out.append(f"On the privacy–utility Pareto front (no other run has both a lower sensitive-token gain and a "
                   f"lower non-sensitive test NLL): {', '.join(front)}"
                   + (f"; runs that did not learn are left out ({', '.join(dropped)})." if dropped else "."))
    if chose:
        out.append("Where a method ran in several configurations, these comparisons use its configuration with the "
                   "lowest non-sensitive test NLL.")
    return out


def _matched_text(m: Matched) -> str:
    if m.value is None:
        return "–"
    if m.sd is not None:
        return f"{m.value:.3f} ± {m.sd:.3f} ({len(m.variant.runs)} seeds)"
    return f"{m.value:.3f}{ci_text(m.ci)}"


def _band(m: Matched) -> list[float] | None:
    """What separation is judged on: the interpolated interval (one seed) or mean ± sd (several)."""
    if m.sd is not None and m.value is not None:
        return [m.value - m.sd, m.value + m.sd]
    return m.ci


def matched_findings(g: Group, n_levels: int = 3) -> list[str]:
    """Memorisation of each method at utility levels several of them reached, along their trajectories, and which
    is on the privacy–utility front there (the lowest memorisation; others whose interval overlaps it are not
    distinguishable at this size)."""
    vars_ = trajectory_variants(g.variants)
    base, levels = group_levels(vars_, n_levels)
    if base is None or len(vars_) < 2:
        return []
    learned = [v for v in vars_ if not v.did_not_learn]
    if not levels:
        return [f"No utility level below the base model's ({base:.3f}) was reached by two methods that learned, so "
                "there is no comparison at matched utility."]
    n_tr = next((r.trajectory[0].get("n_train_records") for v in vars_ for r in v.runs if r.trajectory), None)
    n_te = next((r.trajectory[0].get("n_test_records") for v in vars_ for r in v.runs if r.trajectory), None)
    size = f" on {n_tr} training and {n_te} test records" if n_tr and n_te else ""
    out = [f"Comparisons at matched utility follow each run's in-training evaluations{size} (memorisation = "
           "sensitive-token gain on training records − gain on held-out records, nats/token, interpolated linearly "
           f"between evaluation points; base model's non-sensitive test NLL there {base:.3f})."]
    for level in levels:
        ms = matched_at(learned, level)
        got = [m for m in ms if m.reached]
        missed = [_name(m.variant) for m in ms if not m.reached]
        missed += [_name(v)[:-1] + f"; {DID_NOT_LEARN})" if _name(v).endswith(")") else
                   f"{_name(v)} ({DID_NOT_LEARN})" for v in vars_ if v.did_not_learn]
        s = f"At non-sensitive test NLL {level:.3f}: "
        s += ", ".join(f"{_name(m.variant)} memorisation {_matched_text(m)}" for m in got) if got else \
            "no method reached it"
        if missed:
            s += f"; {', '.join(missed)} never reached it"
        if got:
            best = min(got, key=lambda m: m.value)  # type: ignore[arg-type, return-value]
            tied = [m for m in got if m is not best and not separated(_band(best), _band(m))
                    and _band(best) is not None and _band(m) is not None]
            s += f". On the privacy–utility front at this level: {_name(best.variant)}"
            if tied:
                s += f", not distinguishable at this size from {', '.join(_name(m.variant) for m in tied)}"
        out.append(s + ".")
    return out


def _certification(v: Variant) -> str:
    """How the ε of ``v`` is known: the accountant that *certified* it (not the estimate that may have chosen its
    noise), the ε spent when it differs from the target, and, for a target that was an estimate, that."""
    certified = v.first.row.get("run.epsilon_certified") in (None, 1, True)
    acc = v.first.certified_by if certified else (v.first.row.get("run.accountant") or "unknown")
    eps = v.mean("run.epsilon")
    got = f"spent ε = {eps:.2f}, " if eps is not None and v.epsilon is not None and abs(eps - v.epsilon) > 0.005 \
        else ""
    target = "the target is an Edgeworth estimate; " if v.first.estimate_calibrated else ""
    kind = "certified" if certified else "estimate"
    unit = f"{unit_suffix(v.first).strip()}, " if unit_suffix(v.first) else ""   # "per user, "
    return f"{unit}{target}{got}{kind}, {acc} accountant, δ = {v.first.row.get('run.delta') or 0:g}"


def findings(gs: Sequence[Group], vs: Sequence[RunView]) -> list[str]:
    """All findings: per dataset/model group (prefixed when there are several), then study-wide notes."""
    out: list[str] = []
    if not any(v.ok for v in vs):
        out.append("No completed runs yet.")
    for text, labels in privacy_warnings(vs):  # first: they qualify every ε below
        out.append(f"Privacy warning for {', '.join(labels)}: {text}")
    for g in gs:
        prefix = f"[{g.title}] " if len(gs) > 1 else ""
        out += [prefix + s for s in group_findings(g)]
    seeds = {v.seed for v in vs if v.ok}
    if seeds:
        if len(seeds) == 1:
            out.append("Each configuration ran with one seed, so there is no estimate of run-to-run variation: "
                       "treat small differences with caution.")
        else:
            out.append(f"Each configuration ran with up to {len(seeds)} seeds; figures are means (± standard "
                       "deviation in the tables).")
    failed = [v for v in vs if v.status == "failed"]
    if failed:
        out.append(f"{len(failed)} of {len(vs)} runs failed; they are listed under Runs and left out of the figures.")
    pending = [v for v in vs if v.status not in ("completed", "failed")]
    if pending:
        out.append(f"{len(pending)} runs have not finished (status pending or running); resume the sweep to "
                   "complete them.")
    return out
