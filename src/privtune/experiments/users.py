"""The privacy unit in the report: what each ε protects, and record-level against user-level DP at the same ε.

A DP run's ε is *per record* (neighbouring datasets differ by one record) or *per user* (they differ by all records of
one person); run.json says which in ``privacy_unit`` (absent: record, the only unit of older runs). A record-level
run on data whose people own several records also records ``user_group_epsilon``, the group-privacy bound for a
person with ``k`` records (a bound, shown as such). Per-person measures come from eval.json's ``users`` section
(:mod:`privtune.evaluation.users`).

Only numbers, configuration values and privtune's own labels reach the tables: no owner id, no record text.
"""

from __future__ import annotations

import json
from typing import Callable, Sequence

from privtune.experiments.analysis import RunView, Variant, num, variants

Table = tuple[list[str], list[list[str]]]
UNITS = ("record", "user")


def _f(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def stated_unit(v: RunView) -> str | None:
    """The unit the row states (run.json ``privacy_unit``, else the study grid's), or None when it states none."""
    u = v.row.get("run.privacy_unit") or v.row.get("grid.privacy_unit")
    return str(u) if u else None


def privacy_unit(v: RunView) -> str | None:
    """What the run's ε protects: ``"record"`` or ``"user"`` for a DP run (record when run.json predates units),
    None without DP."""
    return (stated_unit(v) or "record") if v.private else None


def group_bound(v: RunView) -> tuple[float, int | None] | None:
    """``(ε_k, k)``: run.json's ``user_group_epsilon`` (a number, or an object with ``epsilon`` and ``group_size``)
    with the number of records ``k`` of the user it is for, when the run records one."""
    r = v.row
    eps = num(r, "run.user_group_epsilon")
    if eps is None:
        eps = num(r, "run.user_group_epsilon.epsilon")
    if eps is None:
        return None
    k = num(r, "run.user_group_epsilon.group_size")
    for key in ("run.user_group_size", "run.max_records_per_user", "users.records_per_user.max"):
        k = k if k is not None else num(r, key)
    return eps, (int(k) if k is not None else None)


def unit_suffix(v: RunView) -> str:
    """``" per record"`` / ``" per user"`` to put after a DP run's ε; empty when the row states no unit and has no
    group bound (an older run: the report then reads as before, every ε per record)."""
    if not v.private or (stated_unit(v) is None and group_bound(v) is None):
        return ""
    return f" per {privacy_unit(v)}"


def group_text(v: RunView) -> str:
    """``"; group bound for a user with 4 records: ε ≤ 21.30"`` for a record-level run that recorded one, else
    ``""``."""
    g = group_bound(v)
    if g is None or privacy_unit(v) != "record":
        return ""
    eps, k = g
    who = f"a user with {k} records" if k is not None else "a user with all their records"
    return f"; group bound for {who}: ε ≤ {eps:.2f}"


def user_mia(v: RunView) -> tuple[str, float] | None:
    """The strongest user-level attack (``users.mia_user.<attack>.auc``) and its AUC."""
    found = [(k.split(".")[2], num(v.row, k)) for k in v.row
             if k.startswith("users.mia_user.") and k.endswith(".auc") and k.count(".") == 3]
    found = [(a, x) for a, x in found if x is not None]
    return max(found, key=lambda t: t[1]) if found else None


def ci(v: RunView, key: str) -> list[float] | None:
    """An interval column (``[lo, hi]``, stored as JSON text) of one run, or None."""
    raw = v.row.get(key)
    try:
        got = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        return None
    ok = isinstance(got, list) and len(got) == 2 and all(isinstance(x, (int, float)) for x in got)
    return [float(got[0]), float(got[1])] if ok else None


def has_people(vs: Sequence[RunView]) -> bool:
    return any(v.ok and v.row.get("users.available") in (1, True) for v in vs)


# -- tables ---------------------------------------------------------------------------------------------------------
def per_person(vs: Sequence[RunView]) -> Table:
    """Per-person measures of every completed run whose data names owners."""
    head = ["run", "ε", "people train / test", "records per person (min–max)", "gain per person train (max)",
            "gain per person test", "memorisation per person", "user-level MIA AUC (attack)", "canary exposure, "
            "copies per owner"]
    rows = []
    for v in vs:
        if not v.ok or v.row.get("users.available") not in (1, True):
            continue
        mia = user_mia(v)
        copies = v.get("users.exposure_per_user.copies_per_owner.max")
        exp = v.get("users.exposure_per_user.exposure_bits")
        rows.append([v.label, _eps(v), f"{_f(v.get('users.n_train_users'), 0)} / {_f(v.get('users.n_test_users'), 0)}",
                     f"{_f(v.get('users.records_per_user.min'), 0)}–{_f(v.get('users.records_per_user.max'), 0)}",
                     f"{_f(v.get('users.sensitive_gain_per_user.train'))} "
                     f"({_f(v.get('users.sensitive_gain_per_user.train_max'))})",
                     _f(v.get("users.sensitive_gain_per_user.test")),
                     _with_ci(v.get("users.sensitive_gain_per_user.memorization_nats"),
                              ci(v, "users.sensitive_gain_per_user.memorization_nats_ci")),
                     f"{_f(mia[1])} ({mia[0]})" if mia else "–",
                     f"{_f(exp, 2)} bits, {_f(copies, 0)} copies" if exp is not None else "–"])
    return head, rows


def _with_ci(x: float | None, iv: list[float] | None) -> str:
    return _f(x) if iv is None or x is None else f"{_f(x)} [{_f(iv[0])}, {_f(iv[1])}]"


def _eps(v: RunView) -> str:
    if not v.private:
        return "∞ (no DP)"
    eps = v.get("run.epsilon")
    return "–" if eps is None else f"{eps:.2f} per {privacy_unit(v)}{group_text(v)}"


def pairs(vs: Sequence[RunView]) -> list[tuple[Variant, Variant]]:
    """``(record-level, user-level)`` variants of the same configuration (dataset, model, method, ε, rank, lr,
    epochs), completed runs only, in study order."""
    by: dict[tuple, dict[str, Variant]] = {}
    for var in variants(vs):
        if not var.first.private:
            continue
        key = tuple(var.first.row.get(f"grid.{k}") for k in ("dataset", "model", "method", "epsilon", "lora_r",
                                                              "lr", "epochs"))
        by.setdefault(key, {})[privacy_unit(var.first) or "record"] = var
    return [(d["record"], d["user"]) for d in by.values() if "record" in d and "user" in d]


def _mean_mia(var: Variant) -> tuple[str, float] | None:
    best = user_mia(var.first)
    if best is None:
        return None
    m = _mean(var, f"users.mia_user.{best[0]}.auc")
    return (best[0], m) if m is not None else None


def _mean(var: Variant, key: str) -> float | None:
    vals = [r.get(key) for r in var.runs]
    vals = [x for x in vals if x is not None]
    return sum(vals) / len(vals) if vals else None


def _per_step(var: Variant) -> float | None:
    vals = [r.get("run.wall_time_s") / r.get("run.steps") for r in var.runs
            if r.get("run.wall_time_s") is not None and r.get("run.steps")]
    return sum(vals) / len(vals) if vals else None


def comparison(vs: Sequence[RunView]) -> Table:
    """Record-level against user-level DP at the same ε: memorisation per person, utility and cost (means over
    seeds)."""
    head = ["configuration", "unit", "ε (certified)", "protects a user with k records at", "gain per person train",
            "memorisation per person", "user-level MIA AUC", "canary exposure (bits)", "non-sensitive test NLL",
            "wall time (s)", "s per step", "peak memory (MB)"]
    rows = []
    for rec, usr in pairs(vs):
        for var in (rec, usr):
            v = var.first
            eps = _mean(var, "run.epsilon")
            g = group_bound(v)
            if privacy_unit(v) == "user":
                k = v.get("run.max_records_per_user")
                protects = f"ε = {_f(eps, 2)} (the unit{f'; ≤ {k:.0f} records used per user' if k else ''})"
            elif g is not None:
                protects = f"ε ≤ {g[0]:.2f} for k = {g[1] if g[1] is not None else '?'} (group bound)"
            else:
                protects = "– (no group bound recorded)"
            mia = _mean_mia(var)
            rows.append([_config(var), str(privacy_unit(v)), _f(eps, 2), protects,
                         _f(_mean(var, "users.sensitive_gain_per_user.train")),
                         _with_ci(_mean(var, "users.sensitive_gain_per_user.memorization_nats"),
                                  ci(v, "users.sensitive_gain_per_user.memorization_nats_ci")
                                  if len(var.runs) == 1 else None),
                         f"{_f(mia[1])} ({mia[0]})" if mia else "–", _f(_mean(var, "exposure.exposure_bits"), 2),
                         _f(var.mean("utility")), _f(_mean(var, "run.wall_time_s"), 1), _f(_per_step(var), 3),
                         _f(_mean(var, "run.peak_memory_mb"), 0)])
    return head, rows


def _config(var: Variant) -> str:
    """The variant's label without its unit (the next column states it)."""
    return var.label.replace(f" per {privacy_unit(var.first)}", "")


# -- findings ---------------------------------------------------------------------------------------------------------
def findings(vs: Sequence[RunView]) -> list[str]:
    """One sentence per record/user pair, stating the numbers it compares; and the group bound of record-level runs
    that recorded one."""
    out = []
    for rec, usr in pairs(vs):
        eps = rec.epsilon
        parts = []
        for what, key, d in (("per-person memorisation", "users.sensitive_gain_per_user.memorization_nats", 3),
                             ("per-person sensitive-token gain on training people",
                              "users.sensitive_gain_per_user.train", 3),
                             ("non-sensitive test NLL", "utility.nonsensitive_test_nll", 3),
                             ("canary exposure (bits)", "exposure.exposure_bits", 1)):
            a, b = _mean(usr, key), _mean(rec, key)
            if a is not None and b is not None:
                parts.append(f"{what} {a:.{d}f} vs {b:.{d}f}")
        ma, mb = _mean_mia(usr), _mean_mia(rec)
        if ma and mb:
            parts.append(f"strongest user-level MIA AUC {ma[1]:.3f} ({ma[0]}) vs {mb[1]:.3f} ({mb[0]})")
        sa, sb = _per_step(usr), _per_step(rec)
        if sa and sb:
            parts.append(f"{sa / sb:.2f}× the wall time per step ({sa:.3f} s vs {sb:.3f} s)")
        if not parts:
            continue
        key = "users.sensitive_gain_per_user.memorization_nats_ci"
        ia, ib = (ci(var.first, key) if len(var.runs) == 1 else None for var in (usr, rec))
        if ia and ib and parts[0].startswith("per-person memorisation"):
            apart = ia[1] < ib[0] or ib[1] < ia[0]
            parts[0] += (f" (95% intervals over people [{ia[0]:.3f}, {ia[1]:.3f}] vs [{ib[0]:.3f}, {ib[1]:.3f}]"
                         f"{'' if apart else ': they overlap, so no difference is claimed'})")
        s = f"{_config(usr)}: user-level against record-level DP at ε = {eps:g}: " + "; ".join(parts)
        g = group_bound(rec.first)
        if g is not None:
            who = f"with {g[1]} records" if g[1] is not None else "with all their records"
            s += (f". The record-level run's ε = {eps:g} is per record: a user {who} is protected only at "
                  f"ε ≤ {g[0]:.2f} (group bound)")
        out.append(s + ".")
    paired = {id(r) for p in pairs(vs) for var in p for r in var.runs}
    for v in vs:
        if v.ok and id(v) not in paired and privacy_unit(v) == "record" and group_bound(v) is not None:
            out.append(f"{v.label}: ε = {_f(v.get('run.epsilon'), 2)} per record{group_text(v)} (a bound).")
    return out


# -- report pieces ----------------------------------------------------------------------------------------------------
def html_section(vs: Sequence[RunView], table: Callable[..., str]) -> str:
    """``Per person`` and ``Record-level vs user-level DP`` sections, or ``""`` when the study has neither."""
    parts = []
    if has_people(vs):
        parts += ["<h2>Per person</h2>",
                  "<p>The data names each record's owner. Gain per person = base − fine-tuned NLL over all sensitive "
                  "tokens of one person's records, averaged over people (each counts once; the worst person in "
                  "brackets); memorisation per person = train − test, with its 95% bootstrap interval over people. "
                  "User-level membership inference: a person is "
                  "a member when any of their records trained, scored by the mean of their records' scores; the AUC "
                  "shown is the strongest attack's, a maximum over attacks that reads high when there are few "
                  "people.</p>",
                  table(per_person(vs), num_from=1)]
    if pairs(vs):
        parts += ["<h2>Record-level vs user-level DP</h2>",
                  "<p>The same configuration at the same ε, with the privacy unit a record or a user (all records "
                  "of one person). A record-level ε protects a person with k records only at the group bound shown "
                  "(a bound, computed by the accountant); a user-level ε protects every person. Means over seeds; "
                  "s per step = wall time / steps.</p>",
                  table(comparison(vs), num_from=2)]
    return "\n".join(parts)


def markdown(vs: Sequence[RunView]) -> list[str]:
    """The comparison table as Markdown lines (none when the study has no record/user pair)."""
    head, rows = comparison(vs)
    if not rows:
        return []
    lines = ["", "## Record-level vs user-level DP", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return lines

