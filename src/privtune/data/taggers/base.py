"""The tagger interface: find sensitive character spans in raw text.

A tagger is built from a spec string, ``NAME`` or ``NAME:ARG`` (``regex``, ``values:crm.csv``, ``presidio``), and
maps a text to sorted, non-overlapping :class:`~privtune.data.schema.Span` s. Several taggers combine by union
(:class:`UnionTagger`); spans a record already carries are always kept.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from bisect import bisect_left
from itertools import accumulate
from typing import ClassVar, Iterable, Sequence

from privtune.data.schema import Record, Span, normalize_spans
from privtune.errors import ConfigError, fmt
from privtune.registry import Registry
from privtune.utils.progress import track


class Tagger(ABC):
    """Finds sensitive spans in text. Subclasses register with ``@TAGGERS.register(name)``."""

    name: ClassVar[str]
    labels: ClassVar[tuple[str, ...]] = ()   # labels it can emit (informational; empty = data-dependent)

    @classmethod
    def from_arg(cls, arg: str | None) -> "Tagger":
        """Build from the part after ``NAME:`` in a spec (``None`` when there is none)."""
        if arg:
            raise ConfigError(fmt("tagger", f"`{cls.name}` without an argument", f"{cls.name}:{arg}"))
        return cls()

    @abstractmethod
    def tag(self, text: str) -> list[Span]:
        """Sorted, non-overlapping sensitive spans of ``text``."""

    @property
    def spec(self) -> str:
        return self.name


TAGGERS: Registry[type[Tagger]] = Registry("tagger")


class UnionTagger(Tagger):
    """The union of several taggers; overlaps resolve as in :func:`~privtune.data.schema.normalize_spans`."""

    name = "union"

    def __init__(self, taggers: Sequence[Tagger]):
        self.taggers = list(taggers)

    def tag(self, text: str) -> list[Span]:
        return normalize_spans(s for t in self.taggers for s in t.tag(text))

    @property
    def spec(self) -> str:
        return "+".join(t.spec for t in self.taggers)


def parse_tagger(spec: str) -> Tagger:
    """``"regex"`` -> RegexTagger(), ``"values:crm.csv"`` -> ValuesTagger.from_arg("crm.csv"), ..."""
    name, _, arg = spec.partition(":")
    return TAGGERS.get(name.strip()).from_arg(arg or None)


def build_tagger(specs: Iterable[str | Tagger]) -> Tagger:
    taggers = [s if isinstance(s, Tagger) else parse_tagger(s) for s in specs]
    if not taggers:
        raise ConfigError(fmt("tagger", f"at least one of {', '.join(TAGGERS.names())}", "none"))
    return taggers[0] if len(taggers) == 1 else UnionTagger(taggers)


class Occupied:
    """Character ranges already taken, answering "does ``[a, b)`` overlap one of them?" in O(log n).

    A range ``[s, e)`` overlaps ``[a, b)`` when ``s < b and a < e``. Among the ranges with ``s < b`` (a prefix of
    them sorted by start) one overlaps exactly when the largest ``e`` of that prefix exceeds ``a``, so sorted
    starts and running maxima of the ends answer a query with one bisection. Building costs O(n log n) whatever
    the ranges (unsorted, overlapping or empty ones included), so checking m candidates against n taken ranges
    costs O((n + m) log n) instead of the O(n · m) of comparing every pair, which made a megabyte of text with
    tens of thousands of matches take minutes.
    """

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()):
        pairs = sorted(ranges)
        self._starts = [a for a, _ in pairs]
        self._reach = list(accumulate((b for _, b in pairs), max))

    def overlaps(self, start: int, end: int) -> bool:
        k = bisect_left(self._starts, end)  # ranges starting before `end`
        return k > 0 and self._reach[k - 1] > start


def merge_spans(existing: Sequence[Span], found: Iterable[Span]) -> list[Span]:
    """``existing`` spans unchanged, plus the found spans that overlap none of them. O((n + m) log n)."""
    kept = list(existing)
    taken = Occupied((e.start, e.end) for e in kept)
    extra = [s for s in found if not taken.overlaps(s.start, s.end)]
    return sorted(kept + normalize_spans(extra))


def tag_records(records: Sequence[Record], tagger: Tagger, *, description: str = "tagging") -> list[Record]:
    """New records with the tagger's spans added to those already present (which are kept as they are)."""
    out = []
    for r in track(records, description):
        out.append(Record(id=r.id, text=r.text, spans=merge_spans(r.spans, tagger.tag(r.text)), meta=r.meta,
                          label=r.label))
    return out
