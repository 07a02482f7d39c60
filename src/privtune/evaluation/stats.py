"""Small statistics shared by the measures: ROC analysis of attack scores and robust summaries.

Attack scores follow one convention: a higher score means "more likely a member".
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.stats import rankdata


def roc_auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """Area under the ROC curve, ``AUC = P(s_m > s_n) + ½ P(s_m = s_n)`` over independent draws of a member
    score ``s_m`` and a non-member score ``s_n`` (the Mann-Whitney U statistic divided by ``n_m·n_n``; ties
    count half).

    0.5 is chance, 1.0 a perfect attack. NaN when either group is empty.
    """
    m, n = np.asarray(members, float), np.asarray(nonmembers, float)
    if m.size == 0 or n.size == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([m, n]))  # average ranks for ties
    u = ranks[: m.size].sum() - m.size * (m.size + 1) / 2
    return float(u / (m.size * n.size))


def roc_curve(members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every threshold τ of the rule "member iff score ≥ τ", from τ = +∞ (0, 0) to (1, 1)."""
    m, n = np.asarray(members, float), np.asarray(nonmembers, float)
    scores = np.concatenate([m, n])
    is_m = np.concatenate([np.ones(m.size), np.zeros(n.size)])
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], is_m[order]
    tp, fp = np.cumsum(y), np.cumsum(1 - y)
    last = np.r_[s[1:] != s[:-1], True]  # ties share one threshold: take the end of each group
    tpr = np.r_[0.0, tp[last] / max(m.size, 1)]
    fpr = np.r_[0.0, fp[last] / max(n.size, 1)]
    return fpr, tpr


def tpr_at_fpr(members: np.ndarray, nonmembers: np.ndarray, fpr: float) -> float:
    """Largest TPR over thresholds whose FPR ≤ ``fpr`` (Carlini et al. 2022, "Membership Inference Attacks
    From First Principles"). With ``n`` non-members the FPR resolution is ``1/n``: below it this is the TPR at
    zero false positives."""
    m, n = np.asarray(members, float), np.asarray(nonmembers, float)
    if m.size == 0 or n.size == 0:
        return float("nan")
    f, t = roc_curve(m, n)
    return float(t[f <= fpr + 1e-12].max())


def quantiles(values: np.ndarray) -> dict[str, float | None]:
    """min, 10 % quantile and median (linear interpolation); None for an empty input.

    For NLLs the low tail is where memorisation shows: a mean alone is easy to move with a few outliers.
    """
    v = np.asarray(values, float)
    if v.size == 0:
        return {"min": None, "q10": None, "median": None}
    return {"min": float(v.min()), "q10": float(np.quantile(v, 0.1)), "median": float(np.median(v))}


def mean_or_none(values: np.ndarray) -> float | None:
    v = np.asarray(values, float)
    return float(v.mean()) if v.size else None


# -- uncertainty: percentile bootstrap over records, or over people ----------------------------------------------------

#: Bootstrap resamples behind every interval (Monte-Carlo error of a 95% percentile bound ≈ 0.7% of its width).
N_RESAMPLES = 1000
#: Coverage of every interval.
CONFIDENCE = 0.95
#: Fixed seed: the same scores always give the same interval.
BOOTSTRAP_SEED = 0
#: How eval.json and trajectory.jsonl describe their ``*_ci`` keys.
INTERVAL = {"method": "percentile bootstrap over records", "n_resamples": N_RESAMPLES, "confidence": CONFIDENCE,
            "seed": BOOTSTRAP_SEED}
#: The same when the data names each record's owner: a person's records are resampled together (a cluster
#: bootstrap), since one person's records share their secrets and are not independent draws.
INTERVAL_BY_PERSON = {**INTERVAL, "method": "percentile bootstrap over people (each person's records together)"}


def group_index(owners: Sequence[str]) -> np.ndarray:
    """Each record's person as an index ``0..P-1``, people numbered in first-seen order."""
    order: dict[str, int] = {}
    return np.array([order.setdefault(o, len(order)) for o in owners], dtype=np.int64)


def bootstrap_indices(n: int, *, n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """``(n_resamples, n)`` record indices drawn with replacement: row ``b`` is bootstrap sample ``b``.

    Share one matrix between statistics of the same records (fine-tuned and base model, several labels) so that
    their intervals come from the same resamples."""
    return np.random.default_rng(seed).integers(0, max(n, 1), size=(n_resamples, n)) if n else \
        np.zeros((n_resamples, 0), np.int64)


def resampled_means(sums: np.ndarray, counts: np.ndarray | None, idx: np.ndarray) -> np.ndarray:
    """The pooled mean ``Σ_{i∈b} s_i / Σ_{i∈b} c_i`` for each bootstrap sample ``b`` (a row of ``idx``).

    ``s_i`` is record ``i``'s sum of a per-token value and ``c_i`` its number of such tokens, so the statistic is
    the same token-weighted mean eval.json reports, resampled by *record* (tokens of one record are not
    independent). ``counts=None``: one value per record, plain means. NaN for a sample without tokens."""
    s = np.asarray(sums, float)
    c = np.ones_like(s) if counts is None else np.asarray(counts, float)
    if idx.shape[1] == 0:
        return np.full(idx.shape[0], np.nan)
    num, den = s[idx].sum(axis=1), c[idx].sum(axis=1)   # axis 1: over the records of one resample
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def percentile_interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> list[float] | None:
    """``[lo, hi]``: the ``(1 − confidence)/2`` and ``(1 + confidence)/2`` quantiles of the finite ``samples``;
    None when there are none."""
    v = np.asarray(samples, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    a = (1 - confidence) / 2
    lo, hi = np.quantile(v, [a, 1 - a])
    return [float(lo), float(hi)]


def bootstrap_ci(sums: np.ndarray, counts: np.ndarray | None = None, *, n_resamples: int = N_RESAMPLES,
                 confidence: float = CONFIDENCE, seed: int = BOOTSTRAP_SEED) -> list[float] | None:
    """95% percentile-bootstrap interval of the pooled mean ``Σ s_i / Σ c_i`` over records ``i`` (see
    :func:`resampled_means`); ``counts=None`` for one value per record. None without records."""
    s = np.asarray(sums, float)
    if s.size == 0:
        return None
    return percentile_interval(resampled_means(s, counts, bootstrap_indices(s.size, n_resamples=n_resamples,
                                                                            seed=seed)), confidence)


def separated(a: Sequence[float] | None, b: Sequence[float] | None) -> bool:
    """Whether two intervals ``[lo, hi]`` do not overlap (only then is a difference called)."""
    return a is not None and b is not None and (a[1] < b[0] or b[1] < a[0])
