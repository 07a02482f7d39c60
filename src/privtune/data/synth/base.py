"""The generator interface, its registry, and the text builder that records exact spans while text is written.

A generator writes one document at a time from an :class:`~privtune.data.synth.identities.IdentityFactory`
(who the document is about) and a ``random.Random`` (how it is phrased). Phrasings live in a TOML *bank* beside the
generator (``banks/<name>.toml``): one list of templates per slot, ``{field}`` placeholders for values.
Adding a generator is one new module in this package that subclasses :class:`Generator` and registers itself.
"""

from __future__ import annotations

import random
import string
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from importlib import resources
from typing import Any, ClassVar, Mapping

from privtune.data.schema import Span
from privtune.errors import DataError
from privtune.registry import Registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: Value for a template field: (text, span label or None when the text is not sensitive).
Value = tuple[str, "str | None"]


class Template:
    """A parsed ``str.format``-style template: literals and ``{field}`` references (no format specs)."""

    __slots__ = ("source", "parts", "fields")

    def __init__(self, source: str):
        self.source = source
        self.parts: list[tuple[str, str | None]] = [(lit, name) for lit, name, _, _ in
                                                    string.Formatter().parse(source)]
        self.fields = frozenset(name for _, name in self.parts if name)


class TextBuilder:
    """Accumulates text and the spans of the sensitive values written into it."""

    __slots__ = ("_parts", "_pos", "spans")

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._pos = 0
        self.spans: list[Span] = []

    def __len__(self) -> int:
        return self._pos

    def text(self, s: str) -> "TextBuilder":
        self._parts.append(s)
        self._pos += len(s)
        return self

    def value(self, s: str, label: str | None) -> "TextBuilder":
        if label:
            self.spans.append(Span(self._pos, self._pos + len(s), label))
        return self.text(s)

    def render(self, tpl: Template, values: Mapping[str, Value]) -> "TextBuilder":
        for lit, name in tpl.parts:
            if lit:
                self.text(lit)
            if name:
                self.value(*values[name])
        return self

    def build(self) -> tuple[str, list[Span]]:
        return "".join(self._parts), list(self.spans)


@lru_cache(maxsize=None)
def load_bank(name: str) -> dict[str, list[Template]]:
    """The phrasing bank ``banks/<name>.toml``: slot -> parsed templates."""
    raw = tomllib.loads(resources.files(__package__).joinpath("banks", f"{name}.toml").read_text("utf-8"))
    return {slot: [Template(s) for s in variants] for slot, variants in raw.items()}


_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_DATE_FORMATS = (
    lambda d: f"{_MONTHS[d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{d.day} {_MONTHS[d.month - 1]} {d.year}",
    lambda d: f"{d.month:02d}/{d.day:02d}/{d.year}",
    lambda d: f"{d.month}/{d.day}/{d.year}",
    lambda d: d.isoformat(),
    lambda d: f"{_DAYS[d.weekday()]}, {_MONTHS[d.month - 1]} {d.day}",
    lambda d: f"{_MONTHS[d.month - 1][:3]} {d.day}, {d.year}",
    lambda d: f"{_MONTHS[d.month - 1]} {d.day}",
)


def format_date(d: date, rng: random.Random) -> str:
    """One of several common English date formats (all found by the ``regex`` tagger)."""
    return rng.choice(_DATE_FORMATS)(d)


@dataclass
class Document:
    """What a generator returns for one record (the id is assigned by :func:`generate`)."""

    text: str
    spans: list[Span]
    meta: dict[str, Any] = field(default_factory=dict)
    label: int | str | None = None


class Generator(ABC):
    """A synthetic-data generator. Subclasses set the class attributes and implement :meth:`document`."""

    name: ClassVar[str]
    id_prefix: ClassVar[str]                 # record ids are "<prefix>-000042"
    description: ClassVar[str]
    task: ClassVar[str] = "lm"               # "lm" or "classification"
    default_n_train: ClassVar[int] = 10_000
    default_n_test: ClassVar[int] = 1_000
    class_labels: ClassVar[list[Any] | None] = None  # classification generators list their labels
    #: identity kinds a user keeps across their documents (``--records-per-user``); empty: no repeat users
    user_keeps: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def document(self, *, ids: Any, rng: random.Random) -> Document:
        """Write one document about fresh identities drawn from ``ids`` (an ``IdentityFactory``)."""

    def bank(self) -> dict[str, list[Template]]:
        return load_bank(self.name)

    def pick(self, rng: random.Random, slot: str) -> Template:
        try:
            return rng.choice(self.bank()[slot])
        except KeyError:
            raise DataError(f"phrasing bank `{self.name}` must have slot `{slot}`. Found "
                            f"{sorted(self.bank())}.") from None


GENERATORS: Registry[type[Generator]] = Registry("generator")
