"""Taggers find sensitive spans in raw text: ``regex``, ``values:FILE``, ``presidio`` (optional extra), combined by
union. Every module of this package that registers a :class:`Tagger` in ``TAGGERS`` is found automatically."""

from __future__ import annotations

import importlib
import pkgutil

from privtune.data.taggers.base import (TAGGERS, Tagger, UnionTagger, build_tagger, merge_spans, parse_tagger,
                                        tag_records)

for _m in pkgutil.iter_modules(__path__):
    if _m.name not in ("base",) and not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["TAGGERS", "Tagger", "UnionTagger", "build_tagger", "merge_spans", "parse_tagger", "tag_records"]
