"""One point of a training trajectory: the privacy and utility measures of eval.json on a fixed evaluation subset.

At a point of training with model ``θ_t`` and base model ``θ₀`` (nats per token, pooled over tokens; see
:mod:`privtune.evaluation.memorization`, whose functions compute them):

- ``sensitive_train_gain = NLL_θ₀ − NLL_θt`` over sensitive tokens of the subset's training records;
- ``sensitive_test_gain``: the same over sensitive tokens of held-out (test) records;
- ``memorization_nats = sensitive_train_gain − sensitive_test_gain``;
- ``nonsensitive_test_nll`` = ``NLL_θt`` over non-sensitive test tokens (utility) and ``nonsensitive_test_nll_base``;

each with ``<key>_ci``, its 95% percentile-bootstrap interval over records — over people, each with their records,
when ``owners`` names every record's owner (``interval_unit``) — train and test resampled independently,
fine-tuned and base paired. ``nonsensitive_test_nll_diff_ci`` is the interval of
``NLL_θt − NLL_θ₀`` on those tokens: below zero, the run has learned (see
:attr:`privtune.experiments.analysis.RunView.learned`).
"""

from __future__ import annotations

from typing import Any, Sequence

from privtune.evaluation.memorization import privacy_measures, utility_measures
from privtune.evaluation.tokens import TokenScores

#: The keys of a trajectory point's measures (each also with ``_ci``), as trajectory.jsonl holds them.
MEASURES = ("sensitive_train_gain", "sensitive_test_gain", "memorization_nats", "nonsensitive_test_nll",
            "nonsensitive_test_nll_base", "nonsensitive_test_nll_diff")


def trajectory_point(*, train: TokenScores, train_base: TokenScores, test: TokenScores,
                     test_base: TokenScores, owners: dict[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """The measures of one trajectory point (module docstring) from per-token scores of both models."""
    p = privacy_measures(train=train, train_base=train_base, test=test, test_base=test_base,
                         owners=owners).to_dict()
    u = utility_measures(test=test, test_base=test_base, owners=owners).to_dict()
    both = {**p, **u}
    out: dict[str, Any] = {}
    for k in MEASURES:
        out[k] = both.get(k)
        out[f"{k}_ci"] = both.get(f"{k}_ci")
    out["sensitive_train_nll"] = p["sensitive_train_nll"]
    out["sensitive_train_nll_base"] = p["sensitive_train_nll_base"]
    out["n_train_records"], out["n_test_records"] = len(train), len(test)
    out["interval_unit"] = "records" if owners is None else "people"
    return out
