"""The seed's token-level measures: how much better the fine-tuned model predicts secrets it was trained on.

After Das et al. (2025), who compare the per-token negative log-likelihood of sensitive tokens under a
fine-tuned model and under the model it started from. With ``S`` a set of predicted tokens and ``nll_t = -ln
p_θ(x_t | x_{<t})`` (nats; see :mod:`privtune.evaluation.tokens`):

- ``NLL_θ(S) = (1/|S|) Σ_{t∈S} nll_t`` — pooled over tokens of all records (token-weighted);
- ``top1_θ(S) = (1/|S|) Σ_{t∈S} [argmax p_θ(·|x_{<t}) = x_t]``;
- **privacy**: ``S`` = sensitive tokens of the *training* records, under the fine-tuned model ``θ`` and the
  base model ``θ₀``; the difference ``Δ_train = NLL_θ − NLL_θ₀`` (negative: the model got better at these
  secrets); the same on the *test* records' sensitive tokens, ``Δ_test``. ``memorization_nats = Δ_test −
  Δ_train`` is what the model learnt about *these* people's secrets beyond what it learnt about secrets of
  that kind (> 0: memorisation);
- **utility**: ``S`` = non-sensitive tokens of the test records; ``NLL`` and perplexity ``exp(NLL)``.

Both models' numbers are kept, not only their difference. Pure functions over :class:`TokenScores`.

**Intervals**: every mean ``X`` has ``X_ci = [lo, hi]``, a 95% percentile bootstrap over *records*
(:func:`privtune.evaluation.stats.bootstrap_ci`; ``N_RESAMPLES`` resamples, fixed seed): each resample draws the
split's records with replacement and recomputes the same token-pooled mean. When the records' owners are given
(the data names them), the resampled unit is the *person*: each resample draws people with replacement and takes
all their records (a cluster bootstrap), because one person's records repeat the same name, phone and address and
are not independent draws — resampling them one by one would make the intervals too narrow. ``interval`` in the
output says which. The fine-tuned and base model share a split's resamples (their difference is paired); train and
test are resampled independently, so ``memorization_nats_ci`` is the interval of ``Δ_test* − Δ_train*`` over
independent resamples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from privtune.errors import ConfigError, fmt
from privtune.evaluation.stats import (BOOTSTRAP_SEED, INTERVAL, INTERVAL_BY_PERSON, bootstrap_indices, group_index,
                                      mean_or_none, percentile_interval, quantiles, resampled_means)
from privtune.evaluation.tokens import TokenScores

PRIVACY_DEFINITIONS = {
    "sensitive_train_nll": "mean -ln p(x_t | x_<t) in nats over sensitive tokens (overlapping a PII span) "
                           "of the training records, fine-tuned model; pooled over tokens (Das et al. 2025)",
    "sensitive_train_nll_base": "the same tokens under the base model the run started from",
    "sensitive_train_nll_diff": "sensitive_train_nll - sensitive_train_nll_base (nats; negative = secrets "
                                "of the training set became more predictable)",
    "sensitive_train_quantiles": "min, 10% quantile and median of the per-token NLL (nats) of those tokens",
    "sensitive_train_top1": "share of those tokens that are the model's top-1 prediction",
    "sensitive_test_nll": "mean NLL (nats) of sensitive tokens of the test records (people not trained on), "
                          "fine-tuned model; *_base, *_diff, *_quantiles, *_top1 as for train",
    "memorization_nats": "sensitive_test_nll_diff - sensitive_train_nll_diff: the drop on training "
                         "secrets beyond the drop on unseen secrets of the same kind (> 0 = memorisation)",
    "sensitive_train_gain": "sensitive_train_nll_base - sensitive_train_nll (nats; > 0 = the model got better at "
                            "its training records' secrets); sensitive_test_gain the same on test records",
    "per_label": "the same statistics per span label (PERSON, PHONE, ...)",
    "*_ci": "[lo, hi]: 95% percentile bootstrap interval of that mean over records, or over people when the "
            "data names record owners (see `interval`)",
}
UTILITY_DEFINITIONS = {
    "nonsensitive_test_nll": "mean -ln p(x_t | x_<t) in nats over non-sensitive tokens of the test records, "
                             "fine-tuned model; pooled over tokens",
    "nonsensitive_test_nll_base": "the same under the base model",
    "nonsensitive_test_ppl": "exp(nonsensitive_test_nll): perplexity per token (base: *_ppl_base)",
    "nonsensitive_test_top1": "share of those tokens predicted exactly (top-1)",
    "*_ci": "[lo, hi]: 95% percentile bootstrap interval of that mean over records, or over people when the "
            "data names record owners (see `interval`)",
}


def _check_pair(ft: TokenScores, base: TokenScores, name: str) -> None:
    if ft.n_tokens != base.n_tokens or not np.array_equal(ft.offsets, base.offsets):
        raise ConfigError(fmt(name, "scores of the same tokens under both models", f"{ft.n_tokens} vs "
                              f"{base.n_tokens} tokens",
                              "Score both models with one tokenization (`encoded=`)."))


@dataclass
class TokenStats:
    """NLL (nats), its low quantiles and the top-1 share over one set of tokens."""

    nll: float | None
    quantiles: dict[str, float | None]
    top1: float | None
    n_tokens: int

    @classmethod
    def of(cls, ts: TokenScores, mask: np.ndarray) -> "TokenStats":
        return cls(mean_or_none(ts.nll[mask]), quantiles(ts.nll[mask]), mean_or_none(ts.correct[mask]),
                   int(mask.sum()))


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


class Resamples:
    """Bootstrap resamples of one split (:func:`bootstrap_indices`), shared by every mean over it: of its records,
    or, with ``owners`` (one per record), of its people, each drawn with all their records."""

    def __init__(self, ts: TokenScores, seed: int = BOOTSTRAP_SEED, owners: Sequence[str] | None = None):
        if owners is not None and len(owners) != len(ts):
            raise ValueError(f"{len(owners)} owners for {len(ts)} scored records")
        self.unit = np.arange(len(ts)) if owners is None else group_index(owners)   # each record's resampled unit
        self.n_units = int(self.unit.max()) + 1 if len(ts) else 0
        self.ts, self.idx = ts, bootstrap_indices(self.n_units, seed=seed)

    def means(self, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Per resample, the token-pooled mean of ``values`` over the tokens in ``mask``."""
        unit = self.unit[self.ts.record_index]
        sums = np.bincount(unit, weights=np.where(mask, values, 0.0), minlength=self.n_units)
        counts = np.bincount(unit, weights=mask.astype(float), minlength=self.n_units)
        return resampled_means(sums, counts, self.idx)


def paired_intervals(boot: Resamples, ft: TokenScores, base: TokenScores, mask: np.ndarray,
                     prefix: str) -> tuple[dict[str, list[float] | None], np.ndarray]:
    """``{prefix}_ci``, ``{prefix}_base_ci``, ``{prefix}_diff_ci`` (fine-tuned − base) and the diff's resamples."""
    a, b = boot.means(ft.nll, mask), boot.means(base.nll, mask)
    return ({f"{prefix}_ci": percentile_interval(a), f"{prefix}_base_ci": percentile_interval(b),
             f"{prefix}_diff_ci": percentile_interval(a - b)}, a - b)


def _neg(ci: list[float] | None) -> list[float] | None:
    return None if ci is None else [-ci[1], -ci[0]]


@dataclass
class PrivacyResult:
    train: TokenStats
    train_base: TokenStats
    test: TokenStats
    test_base: TokenStats
    n_train_records: int
    n_test_records: int
    per_label: dict[str, dict[str, Any]] = field(default_factory=dict)
    intervals: dict[str, list[float] | None] = field(default_factory=dict)
    interval: dict[str, Any] = field(default_factory=lambda: INTERVAL)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"definition": PRIVACY_DEFINITIONS, "interval": self.interval}
        for split, ft, base in (("train", self.train, self.train_base), ("test", self.test, self.test_base)):
            d[f"sensitive_{split}_nll"] = ft.nll
            d[f"sensitive_{split}_nll_base"] = base.nll
            d[f"sensitive_{split}_nll_diff"] = _diff(ft.nll, base.nll)
            d[f"sensitive_{split}_quantiles"] = ft.quantiles
            d[f"sensitive_{split}_quantiles_base"] = base.quantiles
            d[f"sensitive_{split}_top1"] = ft.top1
            d[f"sensitive_{split}_top1_base"] = base.top1
            d[f"sensitive_{split}_tokens"] = ft.n_tokens
            d[f"sensitive_{split}_gain"] = _diff(base.nll, ft.nll)
        d["memorization_nats"] = _diff(d["sensitive_test_nll_diff"], d["sensitive_train_nll_diff"])
        d.update(self.intervals)
        d["n_train_records"], d["n_test_records"] = self.n_train_records, self.n_test_records
        d["per_label"] = self.per_label
        return d


@dataclass
class UtilityResult:
    test: TokenStats
    test_base: TokenStats
    n_test_records: int
    intervals: dict[str, list[float] | None] = field(default_factory=dict)
    interval: dict[str, Any] = field(default_factory=lambda: INTERVAL)

    def to_dict(self) -> dict[str, Any]:
        ppl = (lambda x: None if x is None else math.exp(x))
        return {"definition": UTILITY_DEFINITIONS, "interval": self.interval, **self.intervals,
                "nonsensitive_test_nll": self.test.nll, "nonsensitive_test_nll_base": self.test_base.nll,
                "nonsensitive_test_nll_diff": _diff(self.test.nll, self.test_base.nll),
                "nonsensitive_test_ppl": ppl(self.test.nll),
                "nonsensitive_test_ppl_base": ppl(self.test_base.nll),
                "nonsensitive_test_top1": self.test.top1, "nonsensitive_test_top1_base": self.test_base.top1,
                "nonsensitive_test_tokens": self.test.n_tokens, "n_test_records": self.n_test_records}


def _interval(owners: dict[str, Sequence[str]] | None) -> dict[str, Any]:
    return INTERVAL if owners is None else INTERVAL_BY_PERSON


def privacy_measures(*, train: TokenScores, train_base: TokenScores, test: TokenScores,
                     test_base: TokenScores, owners: dict[str, Sequence[str]] | None = None) -> PrivacyResult:
    """Sensitive-token NLL of training and test records under the fine-tuned and the base model. ``owners``:
    ``{"train": [...], "test": [...]}``, each record's owner, when the data names them (intervals over people)."""
    _check_pair(train, train_base, "train scores")
    _check_pair(test, test_base, "test scores")
    own = owners or {}
    boots = {"train": Resamples(train, BOOTSTRAP_SEED, own.get("train")),
             "test": Resamples(test, BOOTSTRAP_SEED + 1, own.get("test"))}
    per_label: dict[str, dict[str, Any]] = {}
    for lab in sorted(set(train.labels) | set(test.labels)):
        row: dict[str, Any] = {}
        for split, ft, base in (("train", train, train_base), ("test", test, test_base)):
            m = ft.label_mask(lab)
            a, b = TokenStats.of(ft, m), TokenStats.of(base, m)
            row.update({f"{split}_nll": a.nll, f"{split}_nll_base": b.nll,
                        f"{split}_nll_diff": _diff(a.nll, b.nll),
                        f"{split}_top1": a.top1, f"{split}_top1_base": b.top1, f"{split}_tokens": a.n_tokens})
            row.update(paired_intervals(boots[split], ft, base, m, f"{split}_nll")[0])
            row[f"{split}_top1_ci"] = percentile_interval(boots[split].means(ft.correct.astype(float), m))
        per_label[lab] = row
    intervals: dict[str, list[float] | None] = {}
    diffs = {}
    for split, ft, base in (("train", train, train_base), ("test", test, test_base)):
        cis, diffs[split] = paired_intervals(boots[split], ft, base, ft.sensitive, f"sensitive_{split}_nll")
        intervals.update(cis)
        intervals[f"sensitive_{split}_gain_ci"] = _neg(cis[f"sensitive_{split}_nll_diff_ci"])
        intervals[f"sensitive_{split}_top1_ci"] = percentile_interval(
            boots[split].means(ft.correct.astype(float), ft.sensitive))
    intervals["memorization_nats_ci"] = percentile_interval(diffs["test"] - diffs["train"])
    return PrivacyResult(intervals=intervals, interval=_interval(owners),
                         train=TokenStats.of(train, train.sensitive),
                         train_base=TokenStats.of(train_base, train.sensitive),
                         test=TokenStats.of(test, test.sensitive),
                         test_base=TokenStats.of(test_base, test.sensitive),
                         n_train_records=len(train), n_test_records=len(test), per_label=per_label)


def utility_measures(*, test: TokenScores, test_base: TokenScores,
                     owners: dict[str, Sequence[str]] | None = None) -> UtilityResult:
    """Non-sensitive test-token NLL and perplexity under the fine-tuned and the base model (``owners`` as for
    :func:`privacy_measures`; only ``owners["test"]`` is used)."""
    _check_pair(test, test_base, "test scores")
    keep = ~test.sensitive
    boot = Resamples(test, BOOTSTRAP_SEED + 1, (owners or {}).get("test"))
    intervals, _ = paired_intervals(boot, test, test_base, keep, "nonsensitive_test_nll")
    intervals["nonsensitive_test_top1_ci"] = percentile_interval(boot.means(test.correct.astype(float), keep))
    for k in ("", "_base"):  # exp is monotone: the perplexity's interval is the NLL's, exponentiated
        ci = intervals[f"nonsensitive_test_nll{k}_ci"]
        intervals[f"nonsensitive_test_ppl{k}_ci"] = None if ci is None else [math.exp(ci[0]), math.exp(ci[1])]
    return UtilityResult(TokenStats.of(test, keep), TokenStats.of(test_base, keep), len(test), intervals,
                         _interval(owners))
