"""Membership inference: can an attacker tell training records from fresh records of the same distribution?

Members are the training records (canaries left out), non-members the test records. Every registered attack
(:data:`ATTACKS`) scores each record twice — on all its predicted tokens and on its sensitive tokens only
(``<attack>_sensitive``) — and we report, per attack, the ROC AUC, the TPR at 1 % and 0.1 % FPR (Carlini et
al. 2022: low-FPR operating points are what matters for privacy), the membership advantage ``max_τ (TPR −
FPR)`` (Yeom et al. 2018) and the number of records behind each figure. These are empirical attack results,
not bounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from privtune.data.schema import Record
from privtune.evaluation.mia import loss, min_k, reference, zlib_ratio  # noqa: F401  (register the attacks)
from privtune.evaluation.mia.base import ATTACKS, MIAAttack, MIAView
from privtune.evaluation.stats import roc_auc, roc_curve, tpr_at_fpr
from privtune.evaluation.tokens import TokenScores

__all__ = ["ATTACKS", "MIAAttack", "MIAView", "AttackResult", "MIAResult", "attack_metrics",
           "membership_inference", "record_scores"]


@dataclass
class AttackResult:
    auc: float
    tpr_at_1pct_fpr: float
    tpr_at_0_1pct_fpr: float
    advantage: float
    n_members: int
    n_nonmembers: int

    def to_dict(self) -> dict[str, Any]:
        return {"auc": self.auc, "tpr_at_1pct_fpr": self.tpr_at_1pct_fpr,
                "tpr_at_0_1pct_fpr": self.tpr_at_0_1pct_fpr,
                "advantage": self.advantage, "n_members": self.n_members, "n_nonmembers": self.n_nonmembers,
                "fpr_resolution": 1.0 / self.n_nonmembers if self.n_nonmembers else None}


def attack_metrics(members: np.ndarray, nonmembers: np.ndarray) -> AttackResult:
    """ROC figures of membership scores; NaN scores (records with no usable token) are left out."""
    m = np.asarray(members, float)
    n = np.asarray(nonmembers, float)
    m, n = m[~np.isnan(m)], n[~np.isnan(n)]
    if m.size == 0 or n.size == 0:
        return AttackResult(float("nan"), float("nan"), float("nan"), float("nan"), int(m.size), int(n.size))
    fpr, tpr = roc_curve(m, n)
    return AttackResult(roc_auc(m, n), tpr_at_fpr(m, n, 0.01), tpr_at_fpr(m, n, 0.001),
                        float((tpr - fpr).max()),
                        int(m.size), int(n.size))


@dataclass
class MIAResult:
    attacks: dict[str, AttackResult] = field(default_factory=dict)
    definitions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"definition": {
            "auc": "ROC AUC = P(score(member) > score(non-member)) + P(tie)/2; 0.5 = chance",
            "tpr_at_1pct_fpr": "largest true-positive rate at a false-positive rate <= 1% "
                               "(resolution 1/n_nonmembers)",
            "tpr_at_0_1pct_fpr": "the same at FPR <= 0.1%",
            "advantage": "max over thresholds of TPR - FPR (Yeom et al. 2018)",
            "members": "training records (canaries excluded); non-members: test records",
            **self.definitions}}
        d.update({name: r.to_dict() for name, r in self.attacks.items()})
        return d


def record_scores(*, members: Sequence[Record], nonmembers: Sequence[Record], members_ft: TokenScores,
                  nonmembers_ft: TokenScores, members_base: TokenScores | None = None,
                  nonmembers_base: TokenScores | None = None,
                  attacks: Iterable[str] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    """``{key: (member scores, non-member scores, definition)}`` per record, for every attack (``key`` = its name)
    and its sensitive-token view (``<name>_sensitive``); attacks that need the base model are left out without
    its scores."""
    names = list(attacks) if attacks is not None else ATTACKS.names()
    out: dict[str, tuple[np.ndarray, np.ndarray, str]] = {}
    for name in names:
        cls = ATTACKS.get(name)
        if cls.needs_base and (members_base is None or nonmembers_base is None):
            continue
        attack = cls()
        for sensitive in (False, True):
            key = f"{name}_sensitive" if sensitive else name
            mv = MIAView.of(members, members_ft, members_base, sensitive=sensitive)
            nv = MIAView.of(nonmembers, nonmembers_ft, nonmembers_base, sensitive=sensitive)
            scope = "sensitive tokens only" if sensitive else "all predicted tokens"
            out[key] = (attack.scores(mv), attack.scores(nv), f"{attack.definition}; {scope} ({attack.reference})")
    return out


def membership_inference(*, members: Sequence[Record], nonmembers: Sequence[Record], members_ft: TokenScores,
                         nonmembers_ft: TokenScores, members_base: TokenScores | None = None,
                         nonmembers_base: TokenScores | None = None,
                         attacks: Iterable[str] | None = None) -> MIAResult:
    """Run the attacks on all tokens and on sensitive tokens; see the module docstring."""
    out = MIAResult()
    for key, (m, n, definition) in record_scores(
            members=members, nonmembers=nonmembers, members_ft=members_ft, nonmembers_ft=nonmembers_ft,
            members_base=members_base, nonmembers_base=nonmembers_base, attacks=attacks).items():
        out.attacks[key] = attack_metrics(m, n)
        out.definitions[key] = definition
    return out
