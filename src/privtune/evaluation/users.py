"""Per-person measures: what the model learnt about *people*, when one person owns several records.

A record names its owner in ``meta[key]`` (``key`` = ``"user"`` unless ``--user-key`` picks another field). With
``U_train`` the people owning at least one training record (*members*: a person is in the training set when any of
their records is) and ``U_test`` the people owning only test records:

- **sensitive-token gain per person.** For person ``u`` with sensitive tokens ``S_u`` (over all their records of
  one split), the token-weighted gain ``g_u = NLL_θ₀(S_u) − NLL_θ(S_u) = (1/|S_u|) Σ_{t∈S_u} (nll⁰_t − nll_t)``
  (nats; > 0: the fine-tuned model finds the person's secrets more likely than the base model did). The split's
  figure is the mean over persons ``G = (1/|U|) Σ_u g_u`` — every person counts once, however many records or
  tokens they own (the record-pooled :mod:`~privtune.evaluation.memorization` figure weights people by their
  tokens). ``memorization_nats = G_train − G_test`` (> 0: memorisation of these people beyond secrets of the kind).
- **membership inference at the user level.** Each registered attack scores every record (higher = more likely a
  member, :mod:`privtune.evaluation.mia`); a person's score is the mean of their records' scores,
  ``s_u = (1/n_u) Σ_{r∈u} s_r`` (records without a usable token left out), as in Kandpal et al. 2023 ("User
  Inference Attacks on Large Language Models"), whose likelihood-ratio statistic sums over a user's samples.
  ROC AUC and TPR at 1 % FPR are computed over people (:func:`~privtune.evaluation.mia.attack_metrics`).
- **canary exposure per person.** When the exposure canary's copies name an owner, the exposure of its secret
  (:mod:`~privtune.evaluation.exposure`) is the exposure of a secret that person repeated across ``k`` of their
  records; record-level DP protects it only at the group bound for ``k`` records.

Pure functions over :class:`~privtune.evaluation.tokens.TokenScores` and records; no user id is ever returned (an
owner field may itself be PII, e.g. an e-mail address).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from privtune.data.schema import Record
from privtune.data.users import owner
from privtune.errors import DataError, fmt
from privtune.evaluation import stats
from privtune.evaluation.mia import attack_metrics, record_scores
from privtune.evaluation.tokens import TokenScores

DEFAULT_USER_KEY = "user"
#: Percentile bootstrap over *people* behind the ``*_ci`` intervals (the settings of the record-level intervals).
INTERVAL = {**stats.INTERVAL, "method": "percentile bootstrap over people"}

DEFINITIONS = {
    "user_key": "the record field (meta.<key>) that names each record's owner",
    "n_train_users": "people owning at least one evaluated training record (members)",
    "n_test_users": "people owning only test records (non-members)",
    "n_users_in_both": "people owning records in both splits (counted as members; the generators keep them apart)",
    "records_per_user": "min, median and max number of evaluated records one person owns (both splits)",
    "sensitive_gain_per_user": "g_u = NLL_base(S_u) - NLL_ft(S_u) over the sensitive tokens S_u of all of person "
                               "u's records of the split (token-weighted within the person, nats); train/test = "
                               "mean of g_u over train people / people owning no training record (each person "
                               "counts once); memorization_nats = train - test (> 0 = memorisation of these "
                               "people); *_nll, *_nll_base: the means of the two NLLs; *_ci: [lo, hi] 95% "
                               "percentile bootstrap interval over people (train and test people resampled "
                               "independently; see `interval`)",
    "mia_user": "membership inference over people: a person is a member when any of their records trained; "
                "person score = mean of their records' attack scores (Kandpal et al. 2023); auc, "
                "tpr_at_1pct_fpr ... as in the mia section, over people",
    "exposure_per_user": "exposure (bits) of the canary secret whose copies one person owns, with the number of "
                         "copies per owner: record-level DP protects such a person only at the group bound",
}


def user_key_of(key: str | None, run_info: Mapping[str, Any] | None = None) -> str:
    """The owner field: ``key`` when given, else run.json's ``user_key``, else ``"user"``."""
    return key or str((run_info or {}).get("user_key") or DEFAULT_USER_KEY)


def find_owners(splits: Mapping[str, Sequence[Record]], key: str) -> dict[str, list[str]] | None:
    """The owner of every record, per split; ``None`` when no record names one.

    A key missing on some records only is a :class:`DataError` (a person's records could not all be found).
    """
    found = {s: [owner(r, key) for r in recs] for s, recs in splits.items()}
    flat = [o for owners in found.values() for o in owners]
    missing = sum(o is None for o in flat)
    if missing == len(flat):
        return None
    if missing:
        first = next(r.id for s, recs in splits.items() for r, o in zip(recs, found[s]) if o is None)
        raise DataError(fmt(f"meta.{key}", "set on every record or on none (the owner of each record)",
                            f"missing on {missing} of {len(flat)} records (first: {first})",
                            "Fix the data, or pick the owner field with --user-key."))
    return {s: [str(o) for o in owners] for s, owners in found.items()}


def subsample_by_user(owners: Sequence[str], n: int | None, seed: int) -> list[int]:
    """Indices (in order) of a seeded sample of whole people holding at most ``n`` records (all when ``n`` is None
    or not exceeded): a person's records are kept or dropped together. People are taken in a random order while
    they fit, so a sample is never empty when one person owns at most ``n`` records."""
    if n is None or len(owners) <= n:
        return list(range(len(owners)))
    users, idx = np.unique(np.asarray(owners, dtype=object), return_inverse=True)
    counts = np.bincount(idx, minlength=len(users))
    keep, total = np.zeros(len(users), bool), 0
    for u in np.random.default_rng(seed).permutation(len(users)):
        if total + counts[u] <= n:
            keep[u], total = True, total + counts[u]
    return [i for i in range(len(owners)) if keep[idx[i]]]


def records_per_user(owners: Sequence[str]) -> dict[str, float | None]:
    """``{min, median, max}`` of the number of records each person owns (None for no record)."""
    if not owners:
        return {"min": None, "median": None, "max": None}
    _, counts = np.unique(np.asarray(owners, dtype=object), return_counts=True)
    return {"min": int(counts.min()), "median": float(np.median(counts)), "max": int(counts.max())}


def _groups(owners: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """People in first-seen order and each record's person index."""
    return list(dict.fromkeys(owners)), stats.group_index(owners)


def person_nll(ts: TokenScores, owners: Sequence[str], mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per person (first-seen order): the mean NLL over their tokens in ``mask`` (NaN when none) and that count."""
    if len(owners) != len(ts):
        raise ValueError(f"{len(owners)} owners for {len(ts)} scored records")
    users, rec_user = _groups(owners)
    tok_user = rec_user[ts.record_index] if ts.n_tokens else np.zeros(0, np.int64)
    s = np.bincount(tok_user, weights=np.where(mask, ts.nll, 0.0), minlength=len(users))
    c = np.bincount(tok_user, weights=mask.astype(float), minlength=len(users))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, s / np.maximum(c, 1), np.nan), c.astype(int)


def bootstrap_means(values: np.ndarray, *, seed: int = stats.BOOTSTRAP_SEED) -> np.ndarray:
    """``N_RESAMPLES`` means of ``values`` (one per person) resampled with replacement; empty without values."""
    v = np.asarray(values, float)
    if v.size == 0:
        return np.zeros(0)
    return v[stats.bootstrap_indices(v.size, seed=seed)].mean(axis=1)


@dataclass
class GainSummary:
    """Mean over people of their NLLs and gain on one split, with the gain's bootstrap resamples."""

    nll: float | None
    nll_base: float | None
    gain: float | None
    gain_median: float | None
    gain_max: float | None
    n_users: int
    boot: np.ndarray

    @classmethod
    def of(cls, ft: TokenScores, base: TokenScores, owners: Sequence[str], seed: int) -> "GainSummary":
        a, n = person_nll(ft, owners, ft.sensitive)
        b, _ = person_nll(base, owners, ft.sensitive)
        ok = n > 0
        if not ok.any():
            return cls(None, None, None, None, None, 0, np.zeros(0))
        g = b[ok] - a[ok]
        return cls(float(a[ok].mean()), float(b[ok].mean()), float(g.mean()), float(np.median(g)), float(g.max()),
                   int(ok.sum()), bootstrap_means(g, seed=seed))


def sensitive_gain_per_user(*, train: TokenScores, train_base: TokenScores, test: TokenScores,
                            test_base: TokenScores, train_owners: Sequence[str],
                            test_owners: Sequence[str]) -> dict[str, Any]:
    """Mean per-person sensitive-token gain on train and test people, and their difference (module docstring).

    Test people are those owning no training record (a person with records in both splits is a member: their test
    records are left out of ``G_test``); people without a sensitive token are left out (``n_*_users`` counts those
    scored)."""
    members = set(train_owners)
    unseen = [i for i, o in enumerate(test_owners) if o not in members]
    if len(unseen) < len(test_owners):
        test, test_base = test.select(unseen), test_base.select(unseen)
        test_owners = [test_owners[i] for i in unseen]
    tr = GainSummary.of(train, train_base, train_owners, stats.BOOTSTRAP_SEED)
    te = GainSummary.of(test, test_base, test_owners, stats.BOOTSTRAP_SEED + 1)   # independent resamples
    out: dict[str, Any] = {}
    for split, s in (("train", tr), ("test", te)):
        out.update({split: s.gain, f"{split}_ci": stats.percentile_interval(s.boot), f"{split}_median": s.gain_median,
                    f"{split}_max": s.gain_max, f"{split}_nll": s.nll, f"{split}_nll_base": s.nll_base,
                    f"n_{split}_users": s.n_users})
    both = tr.gain is not None and te.gain is not None
    out["memorization_nats"] = tr.gain - te.gain if both else None
    out["memorization_nats_ci"] = stats.percentile_interval(tr.boot - te.boot) if both else None
    out["interval"] = INTERVAL
    return out


def user_scores(scores: np.ndarray, owners: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """``s_u`` = mean of person ``u``'s finite record scores (NaN when none), people in first-seen order."""
    users, idx = _groups(owners)
    v = np.asarray(scores, float)
    ok = ~np.isnan(v)
    s = np.bincount(idx[ok], weights=v[ok], minlength=len(users))
    c = np.bincount(idx[ok], minlength=len(users))
    with np.errstate(invalid="ignore", divide="ignore"):
        return users, np.where(c > 0, s / np.maximum(c, 1), np.nan)


def user_membership(member_scores: np.ndarray, nonmember_scores: np.ndarray, member_owners: Sequence[str],
                    nonmember_owners: Sequence[str]) -> dict[str, Any]:
    """ROC figures over people of one attack: members are the owners of training records (also when they own test
    records: those records' scores join theirs), non-members the other owners of test records."""
    scores = np.concatenate([np.asarray(member_scores, float), np.asarray(nonmember_scores, float)])
    users, s = user_scores(scores, [*member_owners, *nonmember_owners])
    members = set(member_owners)
    is_m = np.array([u in members for u in users], bool)
    return attack_metrics(s[is_m], s[~is_m]).to_dict()


def mia_per_user(*, members: Sequence[Record], nonmembers: Sequence[Record], members_ft: TokenScores,
                 nonmembers_ft: TokenScores, members_base: TokenScores | None, nonmembers_base: TokenScores | None,
                 member_owners: Sequence[str], nonmember_owners: Sequence[str]) -> dict[str, Any]:
    """``{attack: {auc, tpr_at_1pct_fpr, ...}}`` over people, for every attack of the ``mia`` section."""
    rs = record_scores(members=members, nonmembers=nonmembers, members_ft=members_ft, nonmembers_ft=nonmembers_ft,
                       members_base=members_base, nonmembers_base=nonmembers_base)
    return {k: user_membership(m, n, member_owners, nonmember_owners) for k, (m, n, _) in rs.items()}


def canary_owners(records: Sequence[Record], key: str) -> tuple[dict[str, int], int]:
    """Copies of the exposure canary per owner (``{owner: k}``) and the number of copies naming no owner."""
    per: dict[str, int] = {}
    unowned = 0
    for r in records:
        if not (r.is_canary and r.meta.get("canary_kind", "main") == "main"):
            continue
        o = owner(r, key)
        if o is None:
            unowned += 1
        else:
            per[o] = per.get(o, 0) + 1
    return per, unowned


def exposure_per_user(exposure: Mapping[str, Any] | None, train: Sequence[Record], key: str,
                      owner_records: Mapping[str, int] | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """The canary's exposure seen per person: ``(figures, None)``, or ``(None, reason)`` when it does not apply.

    ``exposure`` is the ``exposure`` section; ``train`` the training records with the canary copies;
    ``owner_records`` the number of other (non-canary) records each owner has."""
    per, unowned = canary_owners(train, key)
    if not per:
        return None, ("no exposure canary in the training data" if not unowned else
                      f"the exposure canary's copies name no owner (meta.{key})")
    if not exposure or exposure.get("exposure_bits") is None:
        return None, "the exposure stage was not run or skipped"
    k = list(per.values())
    others = [int((owner_records or {}).get(o, 0)) for o in per]
    return {"exposure_bits": exposure.get("exposure_bits"), "max_exposure_bits": exposure.get("max_exposure_bits"),
            "exposure_bits_base": exposure.get("exposure_bits_base"), "estimate": bool(exposure.get("estimate")),
            "owners": len(per), "copies_per_owner": {"min": min(k), "median": float(np.median(k)), "max": max(k)},
            "unowned_copies": unowned,
            "other_records_per_owner": {"min": min(others), "median": float(np.median(others)),
                                        "max": max(others)}}, None


def users_section(*, key: str, train: Sequence[Record], test: Sequence[Record],
                  owners: Mapping[str, Sequence[str]] | None, scores: Any = None,
                  canary_train: Sequence[Record] = (), exposure: Mapping[str, Any] | None = None,
                  ) -> dict[str, Any]:
    """The ``users`` section of eval.json. ``scores(model, split)`` returns :class:`TokenScores` (``model`` in
    ``fine-tuned``, ``base``); ``owners`` is :func:`find_owners` of ``{"train": train, "test": test}``. Without
    owners every measure is ``None`` and ``reason`` says why."""
    out: dict[str, Any] = {"definition": DEFINITIONS, "user_key": key, "available": owners is not None,
                           "reason": None}
    names = ("n_train_users", "n_test_users", "n_users_in_both", "records_per_user", "sensitive_gain_per_user",
             "mia_user")
    if owners is None:
        out.update({k: None for k in names})
        out["reason"] = f"no record names its owner (meta.{key}); pass --user-key to use another field"
    else:
        tr, te = list(owners["train"]), list(owners["test"])
        both = set(tr) & set(te)
        out.update({"n_train_users": len(set(tr)), "n_test_users": len(set(te) - both),
                    "n_users_in_both": len(both), "records_per_user": records_per_user(tr + te)})
        out["sensitive_gain_per_user"] = sensitive_gain_per_user(
            train=scores("fine-tuned", "train"), train_base=scores("base", "train"), test=scores("fine-tuned", "test"),
            test_base=scores("base", "test"), train_owners=tr, test_owners=te)
        out["mia_user"] = mia_per_user(
            members=train, nonmembers=test, members_ft=scores("fine-tuned", "train"),
            nonmembers_ft=scores("fine-tuned", "test"), members_base=scores("base", "train"),
            nonmembers_base=scores("base", "test"), member_owners=tr, nonmember_owners=te)
    counts: dict[str, int] = {}
    for o in ([*owners["train"], *owners["test"]] if owners else []):
        counts[o] = counts.get(o, 0) + 1
    exp, why = exposure_per_user(exposure, canary_train, key, counts)
    out["exposure_per_user"], out["exposure_per_user_reason"] = exp, why
    return out
