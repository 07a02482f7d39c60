"""Small statistics shared by the measures: ROC analysis of attack scores and robust summaries.

Attack scores follow one convention: a higher score means "more likely a member".
"""

from __future__ import annotations

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
