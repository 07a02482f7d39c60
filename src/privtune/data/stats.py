"""Dataset statistics (``privtune data stats``): documents, tokens, sensitive-token share, labels, canaries, and
the users who own the records (``meta.user`` or ``user_key``: users, records per user min/median/max).

Tokens are whitespace-separated words unless a tokenizer is given. A token is sensitive when it overlaps a span
(:mod:`privtune.data.masks`), so ``sensitive_token_share = sensitive tokens / tokens``. Canary secrets are never
part of the result: the ``canary`` and ``audit`` entries are redacted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from privtune.data.masks import encode_records, load_fast_tokenizer, token_span_index, whitespace_offsets
from privtune.data.schema import Dataset, Record, load_dataset
from privtune.utils.progress import track


@dataclass
class SplitStats:
    documents: int = 0
    canary_records: int = 0
    chars: int = 0
    tokens: int = 0
    sensitive_tokens: int = 0
    max_tokens: int = 0
    spans: dict[str, int] = field(default_factory=dict)               # label -> spans
    sensitive_tokens_by_label: dict[str, int] = field(default_factory=dict)
    class_counts: dict[str, int] = field(default_factory=dict)        # classification: label -> records

    @property
    def sensitive_token_share(self) -> float | None:
        return self.sensitive_tokens / self.tokens if self.tokens else None

    @property
    def mean_tokens(self) -> float | None:
        return self.tokens / self.documents if self.documents else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sensitive_token_share": self.sensitive_token_share, "mean_tokens": self.mean_tokens}

    def merge(self, other: "SplitStats") -> None:
        for k in ("documents", "canary_records", "chars", "tokens", "sensitive_tokens"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.max_tokens = max(self.max_tokens, other.max_tokens)
        for attr in ("spans", "sensitive_tokens_by_label", "class_counts"):
            mine = getattr(self, attr)
            for k, v in getattr(other, attr).items():
                mine[k] = mine.get(k, 0) + v


@dataclass
class DatasetStats:
    name: str
    path: str | None
    task: str
    token_unit: str
    splits: dict[str, SplitStats]
    total: SplitStats
    canary: dict[str, Any] | None = None   # redacted
    audit: dict[str, Any] | None = None    # redacted
    users: dict[str, Any] | None = None    # split -> UserSummary dict, "shared": owners found in several splits

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "task": self.task, "token_unit": self.token_unit,
                "splits": {k: v.to_dict() for k, v in self.splits.items()}, "total": self.total.to_dict(),
                "canary": self.canary, "audit": self.audit, "users": self.users}


def _split_stats(records: list[Record], offsets: list[list[tuple[int, int]]]) -> SplitStats:
    st = SplitStats()
    for rec, offs in zip(records, offsets):
        st.documents += 1
        st.canary_records += rec.is_canary
        st.chars += len(rec.text)
        st.tokens += len(offs)
        st.max_tokens = max(st.max_tokens, len(offs))
        for s in rec.spans:
            st.spans[s.label] = st.spans.get(s.label, 0) + 1
        for j in token_span_index(offs, rec.spans):
            if j >= 0:
                st.sensitive_tokens += 1
                lab = rec.spans[j].label
                st.sensitive_tokens_by_label[lab] = st.sensitive_tokens_by_label.get(lab, 0) + 1
        if rec.label is not None:
            st.class_counts[str(rec.label)] = st.class_counts.get(str(rec.label), 0) + 1
    return st


def user_stats(ds: Dataset, key: str = "user") -> dict[str, Any]:
    """Per split: users, records per user (min/median/max), records without an owner, the largest user's share;
    ``shared_users``: owners that appear in more than one split (0 when train and test people are disjoint)."""
    from privtune.data.users import check_user_key, owner, user_summary

    check_user_key(key)
    out: dict[str, Any] = {"key": key}
    seen: dict[str, set[str]] = {}
    for name, recs in ds.splits.items():
        out[name] = user_summary(recs, key).to_dict()
        seen[name] = {u for u in (owner(r, key) for r in recs) if u is not None}
    names = list(seen)
    out["shared_users"] = len({u for i, a in enumerate(names) for b in names[i + 1:] for u in seen[a] & seen[b]})
    return out


def dataset_stats(data: Dataset | str | Path, *, tokenizer: Any = None, allow_download: bool = False,
                  user_key: str = "user") -> DatasetStats:
    """Statistics of a dataset (a loaded :class:`Dataset` or a directory). ``tokenizer``: a fast tokenizer or a
    name/path to load one (from the local cache only, unless ``allow_download``); tokens are counted without
    special tokens. ``user_key``: the ``meta`` key naming a record's owner."""
    from privtune.data.synth.canaries import redacted
    from privtune.data.users import check_user_key

    check_user_key(user_key)
    if isinstance(tokenizer, (str, Path)):  # before reading the data: a missing tokenizer fails at once
        tokenizer = load_fast_tokenizer(str(tokenizer), allow_download=allow_download)
    ds = data if isinstance(data, Dataset) else load_dataset(data)
    unit = "whitespace" if tokenizer is None else (getattr(tokenizer, "name_or_path", "") or "tokenizer")
    splits: dict[str, SplitStats] = {}
    total = SplitStats()
    for name, recs in ds.splits.items():
        if tokenizer is None:
            offsets = [whitespace_offsets(r.text) for r in track(recs, f"counting {name}")]
        else:
            offsets = [e.offsets for e in encode_records(tokenizer, recs, max_length=None, add_special_tokens=False)]
        splits[name] = _split_stats(recs, offsets)
        total.merge(splits[name])
    audit = redacted(ds.info.audit)
    if audit is not None:
        audit["included_count"] = sum(ds.info.audit["included"])
        audit.pop("included", None)
    return DatasetStats(name=ds.info.name, path=str(ds.path) if ds.path else None, task=ds.info.task,
                        token_unit=unit, splits=splits, total=total, canary=redacted(ds.info.canary), audit=audit,
                        users=user_stats(ds, user_key))
