"""From result rows to what the report shows: one view per run, seed-averaged variants, Pareto fronts, findings.

Definitions (all NLLs in nats per token, averaged over the tokens of the named kind):

- *sensitive-token gain on training data* (the privacy axis): ``G = NLL_base(sensitive train tokens) −
  NLL_tuned(sensitive train tokens)``; ``G > 0`` means the fine-tuned model finds the secrets of its own training
  records more likely than the base model did. The same on held-out test records, ``G_test``, measures what was
  learnt about sensitive tokens in general (formats); ``G − G_test`` is the part specific to training records.
- *utility*: ``NLL_tuned(non-sensitive test tokens)``, lower is better.
- *did not learn*: a completed run whose non-sensitive test NLL did not drop below its base model's beyond the 95%
  bootstrap interval of the difference (``utility.nonsensitive_test_nll_diff_ci`` reaches 0 or above; without an
  interval, the difference itself is ≥ 0). Such a run also memorises little, and that is no privacy result: the
  report flags it wherever it appears.
- *Pareto front*: runs for which no other run (or the base model) has a lower-or-equal gain and a lower-or-equal
  test NLL with at least one strictly lower (both axes are minimised).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

#: How a DP run's training statistics are labelled wherever they are shown (they are computed without noise).
OUTSIDE_DP = "outside the DP guarantee (computed from private data without noise)"
#: How a run that did not learn is flagged in every table, label and finding.
DID_NOT_LEARN = "did not learn"
#: Grid columns a variant is keyed by (everything but the seed).
VARIANT_KEYS = ("dataset", "model", "method", "epsilon", "lora_r", "lr", "epochs", "privacy_unit")


def num(row: Mapping[str, Any], key: str) -> float | None:
    """``row[key]`` as a finite float, or ``None``."""
    v = row.get(key)
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def interval(row: Mapping[str, Any], key: str) -> list[float] | None:
    """``row[key]`` as ``[lo, hi]`` (the store keeps lists as JSON text), or None."""
    v = row.get(key)
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except json.JSONDecodeError:
            return None
    if not isinstance(v, (list, tuple)) or len(v) != 2 or any(x is None for x in v):
        return None
    try:
        lo, hi = float(v[0]), float(v[1])
    except (TypeError, ValueError):
        return None
    return [lo, hi] if math.isfinite(lo) and math.isfinite(hi) else None


def _neg(ci: list[float] | None) -> list[float] | None:
    return None if ci is None else [-ci[1], -ci[0]]


@dataclass
class RunView:
    """One result row, interpreted (``row`` keeps every raw column for generic tables)."""

    row: dict[str, Any]
    run_id: str
    status: str
    dataset: str
    model: str
    method: str
    epsilon_target: float | None
    private: bool
    adapter: bool
    seed: int | None
    label: str = ""
    trajectory: list[dict[str, Any]] = field(default_factory=list)   # trajectory.jsonl points, by step

    def get(self, key: str) -> float | None:
        return num(self.row, key)

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    @property
    def estimate_calibrated(self) -> bool:
        """σ was chosen so that an Edgeworth *estimate* meets the target ε: the target is not certified."""
        return self.row.get("run.noise_calibration") == "edgeworth-estimate"

    @property
    def certified_by(self) -> str:
        """The accountant whose upper bound the run's ε is: run.json's ``certified_by``, else (older runs) its
        accountant when that one is certified, else PLD, the certifier of the estimate accountant."""
        by = self.row.get("run.certified_by")
        if by:
            return str(by)
        acc = self.row.get("run.accountant")
        if not acc:
            return "?"
        from privtune.accounting import ACCOUNTANTS

        return str(acc) if acc not in ACCOUNTANTS or ACCOUNTANTS.get(str(acc)).certified else "pld"

    @property
    def gain_train(self) -> float | None:
        return _diff(self.get("privacy.sensitive_train_nll_base"), self.get("privacy.sensitive_train_nll"))

    @property
    def gain_test(self) -> float | None:
        return _diff(self.get("privacy.sensitive_test_nll_base"), self.get("privacy.sensitive_test_nll"))

    @property
    def utility(self) -> float | None:
        return self.get("utility.nonsensitive_test_nll")

    def ci(self, key: str) -> list[float] | None:
        """The 95% interval of a figure: ``gain_train``, ``gain_test``, ``memorisation``, ``utility``,
        ``improvement`` (base − fine-tuned non-sensitive test NLL), or any eval column with a ``_ci`` twin."""
        named = {"gain_train": ("privacy.sensitive_train_gain_ci", "privacy.sensitive_train_nll_diff_ci"),
                 "gain_test": ("privacy.sensitive_test_gain_ci", "privacy.sensitive_test_nll_diff_ci"),
                 "memorisation": ("privacy.memorization_nats_ci", None),
                 "utility": ("utility.nonsensitive_test_nll_ci", None),
                 "improvement": (None, "utility.nonsensitive_test_nll_diff_ci")}
        if key in named:
            direct, negated = named[key]
            got = interval(self.row, direct) if direct else None
            return got if got is not None or negated is None else _neg(interval(self.row, negated))
        return interval(self.row, f"{key}_ci")

    @property
    def memorisation(self) -> float | None:
        m = self.get("privacy.memorization_nats")
        return m if m is not None else _diff(self.gain_train, self.gain_test)

    @property
    def learned(self) -> bool | None:
        """Whether the run improved its non-sensitive test NLL on the base model beyond the 95% interval (see the
        module docstring); None without utility figures."""
        ci = self.ci("improvement")
        if ci is not None:
            return ci[0] > 0
        d = self.get("utility.nonsensitive_test_nll_diff")
        if d is None:
            d = _diff(self.utility, self.get("utility.nonsensitive_test_nll_base"))
        return None if d is None else d < 0

    @property
    def did_not_learn(self) -> bool:
        return self.ok and self.learned is False

    @property
    def mia_attacks(self) -> list[str]:
        return sorted({k.split(".")[1] for k in self.row if k.startswith("mia.") and k.endswith(".auc")
                       and k.count(".") == 2 and num(self.row, k) is not None})

    def best_mia(self) -> tuple[str, float] | None:
        """The attack with the highest AUC and that AUC."""
        scored = [(a, self.get(f"mia.{a}.auc")) for a in self.mia_attacks]
        scored = [(a, v) for a, v in scored if v is not None]
        return max(scored, key=lambda t: t[1]) if scored else None

    @property
    def privacy_warnings(self) -> list[str]:
        """run.json's ``privacy_warnings``: what weakens or voids the run's guarantee (older runs: ``privacy_warning``)."""
        raw = self.row.get("run.privacy_warnings")
        try:
            found = json.loads(raw) if isinstance(raw, str) else (raw or [])
        except json.JSONDecodeError:
            found = [raw]
        if not found and self.row.get("run.privacy_warning"):
            found = [self.row["run.privacy_warning"]]
        return [str(w) for w in found if w]

    def training_stat(self, key: str) -> float | None:
        """A training statistic of run.json (``tokens_per_s``, ``final_train_loss``): at the top level, or a DP run's
        diagnostic copy (``dp_diagnostics.<key>``). For a DP run it is computed from the private data without noise:
        show it only labelled :data:`OUTSIDE_DP` (see :attr:`private`)."""
        v = self.get(f"run.{key}")
        return v if v is not None else self.get(f"run.dp_diagnostics.{key}")

    def curve(self) -> list[tuple[float, float]]:
        """``[(step, loss)]``; for a DP run only when recorded as a diagnostic (outside the DP guarantee: label it)."""
        raw = self.row.get("run.train_loss_curve")
        if raw is None:
            raw = self.row.get("run.dp_diagnostics.train_loss_curve")
        try:
            pts = json.loads(raw) if isinstance(raw, str) else (raw or [])
        except json.JSONDecodeError:
            return []
        return [(float(p[0]), float(p[1])) for p in pts if len(p) >= 2 and p[1] is not None]


def views(rows: Iterable[Mapping[str, Any]],
          trajectories: Mapping[str, Sequence[Mapping[str, Any]]] | None = None) -> list[RunView]:
    """Interpret store rows; labels name only what varies (method, ε, and rank/lr/epochs/seed when they vary).
    ``trajectories``: ``{run_id: points}`` (the store's trajectory table)."""
    out = []
    trajectories = trajectories or {}
    for r in rows:
        method = str(r.get("grid.method") or r.get("run.method") or "?")
        eps = num(r, "grid.epsilon")
        private = bool(r.get("run.private")) if r.get("run.private") is not None else eps is not None
        adapter = bool(r.get("run.adapter")) if r.get("run.adapter") is not None else "lora" in method
        seed = r.get("grid.seed")
        out.append(RunView(row=dict(r), run_id=str(r["run_id"]), status=str(r.get("status")),
                           dataset=str(r.get("grid.dataset") or r.get("run.dataset_name") or "data"),
                           model=str(r.get("grid.model") or r.get("run.model") or "model"), method=method,
                           epsilon_target=eps, private=private, adapter=adapter,
                           seed=int(seed) if seed is not None else None,
                           trajectory=[dict(p) for p in trajectories.get(str(r["run_id"]), [])]))
    varying = _varying(out, ("dataset", "model", "lora_r", "lr", "epochs", "seed"))
    for v in out:
        v.label = run_label(v.row, varying) + (f" ({DID_NOT_LEARN})" if v.did_not_learn else "")
    return out


def _varying(vs: Sequence[RunView], keys: Sequence[str]) -> set[str]:
    """Grid keys with more than one value set in the study (``None``, the method's default or n/a, not counted). The
    privacy unit always counts: a label must tell a record-level run from a user-level one."""
    return {k for k in (*keys, "privacy_unit") if len({v.row.get(f"grid.{k}") for v in vs} - {None}) > 1}


def run_label(row: Mapping[str, Any], varying: set[str], *, with_seed: bool = True) -> str:
    parts = []
    if "dataset" in varying:
        parts.append(str(row.get("grid.dataset")))
    if "model" in varying:
        parts.append(str(row.get("grid.model")))
    parts.append(str(row.get("grid.method") or row.get("run.method")))
    if row.get("grid.epsilon") is not None:  # the target; a noise calibrated on an estimate only estimates it
        est = row.get("run.noise_calibration") == "edgeworth-estimate"
        parts.append(f"ε={_g(row['grid.epsilon'])}{' (estimate)' if est else ''}")
        if "privacy_unit" in varying and row.get("grid.privacy_unit"):
            parts.append(f"per {row['grid.privacy_unit']}")
    for k, short in (("lora_r", "r"), ("lr", "lr"), ("epochs", "ep")):
        if k in varying and row.get(f"grid.{k}") is not None:
            parts.append(f"{short}={_g(row[f'grid.{k}'])}")
    if with_seed and "seed" in varying:
        parts.append(f"seed {row.get('grid.seed')}")
    return " ".join(parts)


def _g(x: Any) -> str:
    return f"{float(x):g}" if isinstance(x, (int, float)) else str(x)


@dataclass
class Variant:
    """The runs of one configuration that differ only by seed (completed runs only)."""

    key: tuple
    label: str
    runs: list[RunView] = field(default_factory=list)

    @property
    def first(self) -> RunView:
        return self.runs[0]

    @property
    def method(self) -> str:
        return self.first.method

    @property
    def epsilon(self) -> float | None:
        return self.first.epsilon_target

    def values(self, attr: str) -> list[float]:
        vals = [getattr(r, attr) if not attr.startswith(("run.", "privacy.", "utility.", "exposure.", "mia.",
                                                         "extraction.", "audit."))
                else r.get(attr) for r in self.runs]
        return [float(v) for v in vals if v is not None]

    def mean(self, attr: str) -> float | None:
        vals = self.values(attr)
        return statistics.fmean(vals) if vals else None

    def std(self, attr: str) -> float | None:
        vals = self.values(attr)
        return statistics.stdev(vals) if len(vals) > 1 else None

    @property
    def not_learned(self) -> int:
        """How many of its seeds did not learn (see :attr:`RunView.learned`)."""
        return sum(r.did_not_learn for r in self.runs)

    @property
    def did_not_learn(self) -> bool:
        """Flagged when any seed did not learn: its memorisation figures are then not privacy results."""
        return self.not_learned > 0

    def ci(self, attr: str) -> list[float] | None:
        """The run's 95% bootstrap interval (one seed); across seeds use :meth:`mean` ± :meth:`std`."""
        return self.first.ci(attr) if len(self.runs) == 1 else None


def variants(vs: Sequence[RunView]) -> list[Variant]:
    """Completed runs grouped by everything but the seed, in first-seen order."""
    varying = _varying(vs, ("dataset", "model", "lora_r", "lr", "epochs"))
    groups: dict[tuple, Variant] = {}
    for v in vs:
        if not v.ok:
            continue
        key = tuple(v.row.get(f"grid.{k}") for k in VARIANT_KEYS)
        if key not in groups:
            groups[key] = Variant(key=key, label=run_label(v.row, varying, with_seed=False))
        groups[key].runs.append(v)
    for var in groups.values():
        if var.did_not_learn:
            some = f" in {var.not_learned} of {len(var.runs)} seeds" if var.not_learned < len(var.runs) else ""
            var.label += f" ({DID_NOT_LEARN}{some})"
    return list(groups.values())


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """``True`` for the points no other point dominates (both coordinates minimised).

    ``a`` dominates ``b`` when ``a <= b`` in both coordinates and ``a < b`` in at least one; equal points are all on
    the front.
    """
    flags = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 <= x and y2 <= y) and (x2 < x or y2 < y) for j, (x2, y2) in enumerate(points) if j != i)
        flags.append(not dominated)
    return flags


@dataclass
class Group:
    """Variants sharing a dataset and a base model (only those are comparable), with the base model's point."""

    dataset: str
    model: str
    variants: list[Variant]
    base_train_nll: float | None
    base_utility: float | None

    @property
    def title(self) -> str:
        return f"{self.dataset} · {self.model}"

    def points(self) -> list[tuple[str, float, float, Variant | None]]:
        """``(label, gain, utility, variant)`` for the base model (gain 0) and every variant with both figures."""
        pts: list[tuple[str, float, float, Variant | None]] = []
        if self.base_utility is not None:
            pts.append(("base model", 0.0, self.base_utility, None))
        for v in self.variants:
            g, u = v.mean("gain_train"), v.mean("utility")
            if g is not None and u is not None:
                pts.append((v.label, g, u, v))
        return pts

    def front(self) -> list[str]:
        """Labels on the Pareto front; variants that did not learn are left out (their low gain is no privacy)."""
        pts = [p for p in self.points() if p[3] is None or not p[3].did_not_learn]
        flags = pareto_front([(g, u) for _, g, u, _ in pts])
        return [p[0] for p, f in zip(pts, flags) if f]


def groups(vs: Sequence[RunView]) -> list[Group]:
    out: dict[tuple[str, str], list[Variant]] = {}
    for var in variants(vs):
        out.setdefault((var.first.dataset, var.first.model), []).append(var)
    result = []
    for (ds, model), vars_ in out.items():
        runs = [r for v in vars_ for r in v.runs]
        result.append(Group(ds, model, vars_, _median(r.get("privacy.sensitive_train_nll_base") for r in runs),
                            _median(r.get("utility.nonsensitive_test_nll_base") for r in runs)))
    return result


def _median(vals: Iterable[float | None]) -> float | None:
    xs = [v for v in vals if v is not None]
    return statistics.median(xs) if xs else None


# -- trajectories and comparisons at matched utility ---------------------------------------------------------------

#: Trajectory keys: the utility axis and the memorisation axis of the privacy–utility plane.
UTILITY_KEY = "nonsensitive_test_nll"
MEMORISATION_KEY = "memorization_nats"


def _point_value(p: Mapping[str, Any], key: str) -> float | None:
    return num(p, key)


def interpolate_at(points: Sequence[Mapping[str, Any]], level: float, *, x: str = UTILITY_KEY,
                   y: str = MEMORISATION_KEY) -> tuple[float, list[float] | None] | None:
    """``y`` where the trajectory first reaches ``x = level``, with its interval, or None when it never does.

    Points are taken in step order; on the first segment ``(x_i, y_i) → (x_j, y_j)`` with ``level`` between
    ``x_i`` and ``x_j`` (ends included), ``t = (x_i − level) / (x_i − x_j)`` and ``y = y_i + t (y_j − y_i)``; the
    interval's ends ``lo`` and ``hi`` are interpolated the same way (where both points have one).
    """
    pts = [p for p in sorted(points, key=lambda p: p.get("step") or 0)
           if _point_value(p, x) is not None and _point_value(p, y) is not None]
    for i, a in enumerate(pts):
        xa = _point_value(a, x)
        if xa == level:
            return float(_point_value(a, y)), interval(a, f"{y}_ci")
        if i + 1 == len(pts):
            break
        b = pts[i + 1]
        xb = _point_value(b, x)
        if (xa - level) * (xb - level) < 0:
            t = (xa - level) / (xa - xb)
            ya, yb = _point_value(a, y), _point_value(b, y)
            ca, cb = interval(a, f"{y}_ci"), interval(b, f"{y}_ci")
            ci = None if ca is None or cb is None else [ca[0] + t * (cb[0] - ca[0]), ca[1] + t * (cb[1] - ca[1])]
            return ya + t * (yb - ya), ci
    return None


def best_utility(points: Sequence[Mapping[str, Any]], x: str = UTILITY_KEY) -> float | None:
    """The lowest ``x`` (best utility) a trajectory reached."""
    xs = [v for v in (_point_value(p, x) for p in points) if v is not None]
    return min(xs) if xs else None


def matched_levels(base: float, reached: Sequence[float], *, n_levels: int = 3, min_methods: int = 2) -> list[float]:
    """Utility levels between the base model's ``base`` and the best level at least ``min_methods`` trajectories
    reached (``reached``: each one's best): ``base − (base − L)·k/n`` for ``k = 1..n``, where ``L`` is the
    ``min_methods``-th lowest of ``reached``. Empty when fewer than ``min_methods`` improved on the base."""
    better = sorted(r for r in reached if r < base)
    if len(better) < min_methods:
        return []
    deepest = better[min_methods - 1]
    return [base - (base - deepest) * k / n_levels for k in range(1, n_levels + 1)]


@dataclass
class Matched:
    """One variant's memorisation at a utility level: the mean over its seeds' interpolated values, their standard
    deviation (several seeds) or the interpolated interval (one seed); ``reached`` False when a seed never got
    there."""

    variant: "Variant"
    value: float | None
    sd: float | None
    ci: list[float] | None
    reached: bool


def matched_at(vars_: Sequence["Variant"], level: float, *, y: str = MEMORISATION_KEY) -> list[Matched]:
    """Each variant's ``y`` at utility ``level`` along its runs' trajectories (:func:`interpolate_at`)."""
    out = []
    for v in vars_:
        got = [interpolate_at(r.trajectory, level, y=y) for r in v.runs if r.trajectory]
        if not got or any(g is None for g in got):
            out.append(Matched(v, None, None, None, False))
            continue
        vals = [g[0] for g in got]  # type: ignore[index]
        out.append(Matched(v, statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None,
                           got[0][1] if len(got) == 1 else None, True))  # type: ignore[index]
    return out


def trajectory_variants(vars_: Sequence["Variant"]) -> list["Variant"]:
    """The variants with memorisation values along some trajectory."""
    return [v for v in vars_ if any(p.get(MEMORISATION_KEY) is not None for r in v.runs for p in r.trajectory)]


def group_levels(vars_: Sequence["Variant"], n_levels: int = 3) -> tuple[float | None, list[float]]:
    """The base model's utility on the trajectories' subset and the matched-utility levels (:func:`matched_levels`)
    reached by at least two variants that learned. A variant with several seeds counts as reaching a level only
    when every seed did (the worst seed's best utility), as :func:`matched_at` requires."""
    vars_ = trajectory_variants(vars_)
    base = trajectory_base(vars_)
    if base is None:
        return None, []
    reached = []
    for v in vars_:
        if v.did_not_learn:
            continue
        best = [b for b in (best_utility(r.trajectory) for r in v.runs) if b is not None]
        if best:
            reached.append(max(best))
    return base, matched_levels(base, reached, n_levels=n_levels)


def trajectory_base(vars_: Sequence["Variant"]) -> float | None:
    """The base model's utility on the trajectories' evaluation subset (their median ``nonsensitive_test_nll_base``)."""
    return _median(_point_value(p, "nonsensitive_test_nll_base") for v in vars_ for r in v.runs
                   for p in r.trajectory[:1])
