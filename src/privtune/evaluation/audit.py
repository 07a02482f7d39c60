"""One-run privacy audit (Steinke, Nasr & Jagielski 2023, "Privacy Auditing with One (1) Training Run").

``m`` audit canaries are each put into the training set independently with probability 1/2. After training, an
auditor scores every canary (here: how much more likely the fine-tuned model finds the canary's secret than
the base model does), guesses "included" for the ``r/2`` highest scores and "excluded" for the ``r/2`` lowest,
abstains on the rest, and counts ``v`` correct guesses out of ``r``.

If training is (ε, δ)-DP, the number of correct guesses ``W`` satisfies, for every ``v`` (their main theorem
for approximate DP),

    P[W ≥ v] ≤ β + 2·m·δ·α,   β = P[Bin(r, q) ≥ v],   α = max_{1≤i≤v} P[v − i ≤ Bin(r, q) < v] / i,

with ``q = e^ε / (1 + e^ε)`` the accuracy of ε-DP randomised response. The audit's lower bound at confidence
``1 − p`` is the largest ε for which this p-value stays below ``p``: any smaller ε is rejected, so the
training cannot be (ε, δ)-DP for ε under the bound — unless we were unlucky, with probability at most ``p``.

We try a few guess counts ``r`` fixed in advance and spend ``p`` over them with a Bonferroni correction, so
the reported maximum remains a valid lower bound at the stated confidence. For a DP run the bound must not
exceed the certified ε; we report both and the check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import stats
from scipy.optimize import brentq

from privtune.data.schema import Record
from privtune.data.synth.canaries import CanarySpec
from privtune.errors import ConfigError, DataError, fmt

DEFINITIONS = {
    "epsilon_lower_bound": "largest epsilon rejected at the stated confidence by the one-run audit of "
                           "Steinke, Nasr & Jagielski (2023): training cannot be (epsilon, delta)-DP for any "
                           "smaller epsilon; "
                           "an empirical lower bound, not a guarantee",
    "certified_epsilon": "the run's certified upper bound on epsilon (run.json); null without DP",
    "consistent": "epsilon_lower_bound <= certified_epsilon (null without DP): a violation means a bug in "
                  "the DP implementation or accounting",
    "score": "per canary: mean NLL of its secret tokens under the base model minus under the fine-tuned "
             "model",
    "guesses": "'included' for the r/2 highest scores, 'excluded' for the r/2 lowest; n_correct of "
               "n_guesses right",
}


def p_value(*, m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """``P[W ≥ v]`` bound under the (ε, δ)-DP null hypothesis (see the module docstring); in [0, 1]."""
    if not (0 <= v <= r <= m):
        raise ConfigError(fmt("guess counts", "0 <= v <= r <= m", f"m={m}, r={r}, v={v}"))
    if epsilon < 0 or not (0 <= delta <= 1):
        raise ConfigError(fmt("epsilon, delta", "epsilon >= 0 and delta in [0, 1]", (epsilon, delta)))
    q = 1.0 / (1.0 + math.exp(-epsilon))
    beta = float(stats.binom.sf(v - 1, r, q))
    alpha = 0.0
    if v > 0 and delta > 0:
        tail = np.cumsum(stats.binom.pmf(np.arange(v - 1, -1, -1), r, q))  # P[v-i <= Bin < v], i = 1..v
        alpha = float((tail / np.arange(1, v + 1)).max())
    return min(1.0, beta + 2.0 * m * delta * alpha)


def epsilon_lower_bound(*, m: int, r: int, v: int, delta: float, confidence: float = 0.95) -> float:
    """The largest ε whose p-value is below ``1 − confidence`` (0 when even ε = 0 is not rejected)."""
    if not 0 < confidence < 1:
        raise ConfigError(fmt("confidence", "in (0, 1)", confidence))
    p = 1.0 - confidence
    f = lambda eps: p_value(m=m, r=r, v=v, epsilon=eps, delta=delta) - p  # noqa: E731  increasing in eps
    if f(0.0) >= 0:
        return 0.0
    hi = 1.0
    while f(hi) < 0:
        hi *= 2
        if hi > 1e3:  # pragma: no cover - only for r in the millions
            return hi
    return float(brentq(f, 0.0, hi, xtol=1e-10))


def default_guess_counts(m: int) -> list[int]:
    """Guess counts tried, fixed before seeing scores: about 5, 10, 20, 50 and 100 % of the canaries."""
    counts = {max(2, 2 * round(m * frac / 2)) for frac in (0.05, 0.1, 0.2, 0.5, 1.0)}
    return sorted(c for c in counts if c <= m) or ([m] if m >= 1 else [])


@dataclass
class AuditResult:
    epsilon_lower_bound: float
    certified_epsilon: float | None
    delta: float
    confidence: float
    n_canaries: int
    n_included: int
    n_guesses: int
    n_correct: int
    tried: list[dict[str, Any]] = field(default_factory=list)

    @property
    def consistent(self) -> bool | None:
        if self.certified_epsilon is None:
            return None
        return self.epsilon_lower_bound <= self.certified_epsilon + 1e-9

    def to_dict(self) -> dict[str, Any]:
        return {"definition": DEFINITIONS, "epsilon_lower_bound": self.epsilon_lower_bound, "estimate": True,
                "certified_epsilon": self.certified_epsilon, "consistent": self.consistent,
                "delta": self.delta,
                "confidence": self.confidence, "n_canaries": self.n_canaries, "n_included": self.n_included,
                "n_guesses": self.n_guesses, "n_correct": self.n_correct, "tried": self.tried}


def one_run_audit(scores: Sequence[float], included: Sequence[bool], *, delta: float,
                  confidence: float = 0.95, guess_counts: Sequence[int] | None = None,
                  certified_epsilon: float | None = None) -> AuditResult:
    """Guess membership from ``scores`` (higher = "included"); turn the correct guesses into an ε lower bound.

    Each guess count ``r`` in ``guess_counts`` is tested at level ``(1 − confidence)/len(guess_counts)``
    (Bonferroni), so the best of them is a lower bound at ``confidence``.
    """
    s = np.asarray(scores, float)
    inc = np.asarray(included, bool)
    if s.shape != inc.shape or s.ndim != 1 or s.size < 2:
        raise DataError(fmt("audit canaries", "at least 2 scores with one inclusion flag each",
                            f"{s.size} scores, {inc.size} flags"))
    if np.isnan(s).any():
        raise DataError(fmt("audit scores", "finite numbers", "NaN",
                            "Every audit canary needs a secret token."))
    m = s.size
    counts = list(guess_counts) if guess_counts is not None else default_guess_counts(m)
    level = 1.0 - (1.0 - confidence) / max(len(counts), 1)
    order = np.argsort(-s, kind="stable")
    tried = []
    for r in counts:
        top, bottom = order[:(r + 1) // 2], order[m - r // 2:] if r // 2 else order[:0]
        v = int(inc[top].sum() + (~inc[bottom]).sum())
        tried.append({"n_guesses": r, "n_correct": v,
                      "epsilon_lower_bound": epsilon_lower_bound(m=m, r=r, v=v, delta=delta,
                                                                 confidence=level)})
    best = max(tried, key=lambda t: t["epsilon_lower_bound"])
    return AuditResult(best["epsilon_lower_bound"], certified_epsilon, delta, confidence, m, int(inc.sum()),
                       best["n_guesses"], best["n_correct"], tried)


@dataclass(frozen=True)
class AuditSpec:
    """``dataset.json``'s ``audit`` object: one template with a ``{secret}`` slot, the secrets, and which of
    them were put into the training set."""

    template: str
    secrets: tuple[str, ...]
    included: tuple[bool, ...]

    @classmethod
    def from_info(cls, audit: dict[str, Any]) -> "AuditSpec":
        missing = [k for k in ("template", "secrets", "included") if k not in audit]
        if missing:
            raise DataError(fmt("dataset.json audit", "an object with template, secrets and included",
                                f"missing {missing}", "Regenerate the dataset with audit canaries."))
        spec = cls(str(audit["template"]), tuple(map(str, audit["secrets"])),
                   tuple(map(bool, audit["included"])))
        n, k = len(spec.secrets), len(spec.included)
        if spec.template.count("{secret}") != 1 or n != k or n < 2:
            raise DataError(fmt("dataset.json audit", "a template with one {secret} slot and >= 2 secrets, "
                                "one inclusion flag each", f"{n} secrets, {k} flags"))
        return spec

    def records(self) -> list[Record]:
        """One record per canary with a CANARY span over its secret (for the token scorer)."""
        spec = CanarySpec(template=self.template)
        return [Record(id=f"audit-{i}", text=text, spans=[span])
                for i, (text, span) in enumerate(spec.render(s) for s in self.secrets)]


def audit_scores(model: Any, base_model: Any, tokenizer: Any, spec: AuditSpec, *,
                 max_length: int | None = 512) -> np.ndarray:
    """Per canary: mean NLL of the secret's tokens under ``base_model`` minus under ``model`` (nats; higher =
    the fine-tuned model knows this secret better than its starting point did)."""
    from privtune.evaluation.tokens import encode, score_records

    recs = spec.records()
    enc = encode(tokenizer, recs, max_length=max_length)
    ft = score_records(model, tokenizer, recs, encoded=enc, description="audit canaries")
    base = score_records(base_model, tokenizer, recs, encoded=enc, description="audit canaries (base)")
    return base.per_record_mean(mask=base.sensitive) - ft.per_record_mean(mask=ft.sensitive)
