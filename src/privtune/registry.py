"""A small named registry: plugins (methods, accountants, taggers, attacks) register themselves by name.

The CLI builds its choices from registries, so adding a plugin is one new file and one decorator.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from privtune.errors import ConfigError, fmt

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise RuntimeError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj
        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(fmt(self.kind, f"one of {', '.join(sorted(self._items))}", name)) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
