"""Who owns a record: the *user* (person) behind it, for user-level DP and per-person measures.

A record names its owner in ``meta.user`` (or another ``meta`` key chosen with ``--user-key``); the value is a
pseudonymous id (a string or an integer, compared as text). Records of one user are the unit a user-level DP run
protects: the training set ``D`` and ``D'`` are neighbours when they differ by *all* records of one user.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median
from typing import Any, Sequence

from privtune.data.schema import Record
from privtune.errors import ConfigError, DataError, fmt

DEFAULT_USER_KEY = "user"
#: a user owning more than this share of the training records triggers a warning (user-level DP still holds, but
#: the model's utility and the per-user comparison are dominated by that one user)
DOMINANT_SHARE = 0.5


def check_user_key(key: str) -> str:
    if not isinstance(key, str) or not key or key.strip() != key:
        raise ConfigError(fmt("--user-key", "a non-empty meta key without surrounding spaces", key))
    return key


def owner(rec: Record, key: str = DEFAULT_USER_KEY) -> str | None:
    """The owner id of ``rec`` as text, or None when the record names none (missing, null or empty)."""
    v = rec.meta.get(key)
    if v is None or isinstance(v, bool) or (isinstance(v, str) and not v.strip()):
        return None
    if not isinstance(v, (str, int)):
        raise DataError(fmt(f"meta.{key}", "a string or integer user id", f"a {type(v).__name__} in record "
                            f"{rec.id!r}", "Store owners as strings or integers, or pick another field with "
                            "--user-key."))
    return str(v)


@dataclass
class UserSummary:
    """Users of one split: ``users`` distinct owners; records per user (min / median / max) over owned records;
    ``records_without_user`` records naming no owner."""

    key: str
    records: int
    users: int
    records_without_user: int
    min_records_per_user: int | None
    median_records_per_user: float | None
    max_records_per_user: int | None
    largest_user_share: float | None  # records of the largest user / records

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def user_summary(records: Sequence[Record], key: str = DEFAULT_USER_KEY) -> UserSummary:
    counts: dict[str, int] = {}
    missing = 0
    for r in records:
        u = owner(r, key)
        if u is None:
            missing += 1
        else:
            counts[u] = counts.get(u, 0) + 1
    vals = sorted(counts.values())
    return UserSummary(key=key, records=len(records), users=len(counts), records_without_user=missing,
                       min_records_per_user=vals[0] if vals else None,
                       median_records_per_user=float(median(vals)) if vals else None,
                       max_records_per_user=vals[-1] if vals else None,
                       largest_user_share=vals[-1] / len(records) if vals and records else None)


def group_by_user(records: Sequence[Record], key: str = DEFAULT_USER_KEY) -> list[list[int]]:
    """Record indices grouped by owner (users in order of first appearance); refuses records without an owner
    with a one-line :class:`DataError` (user-level DP needs every record's owner)."""
    groups: dict[str, list[int]] = {}
    missing: list[int] = []
    for i, r in enumerate(records):
        u = owner(r, key)
        if u is None:
            missing.append(i)
        else:
            groups.setdefault(u, []).append(i)
    if not groups:
        raise DataError(fmt(f"meta.{key}", "set on the training records for --privacy-unit user (the owner of each "
                            "record)", "no record naming an owner",
                            f"Add meta.{key} to every record (e.g. `privtune data synth ... --records-per-user K`), "
                            "pick the field with --user-key, or use --privacy-unit record."))
    if missing:
        raise DataError(fmt(f"meta.{key}", "set on every training record for --privacy-unit user",
                            f"{len(missing)} of {len(records)} records without it (e.g. record "
                            f"{records[missing[0]].id!r})",
                            "Give those records an owner (a record of its own is a user of one record) or fix "
                            "--user-key."))
    return list(groups.values())


def dominant_user_warning(groups: Sequence[Sequence[int]], n_records: int) -> str | None:
    """A readable warning when one user owns more than :data:`DOMINANT_SHARE` of the records."""
    if not groups or not n_records:
        return None
    top = max(len(g) for g in groups)
    if top / n_records <= DOMINANT_SHARE:
        return None
    return (f"one user owns {top} of the {n_records} training records ({100 * top / n_records:.0f}%): user-level DP "
            "bounds what the model learns from that user as a whole, so most of the data is protected as one unit "
            "and contributes at most one clipped gradient per step.")
