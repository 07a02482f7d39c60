"""The membership-inference attack interface: one small class per attack, registered by name.

An attack maps each record to a score, higher meaning "more likely a member of the training set". It reads the
per-token scores of the records under the fine-tuned model (and, for calibrated attacks, the base model),
restricted to a token selection: every predicted token, or only the sensitive ones (``<name>_sensitive`` in
reports).
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np

from privtune.data.schema import Record
from privtune.evaluation.tokens import TokenScores
from privtune.registry import Registry


@dataclass
class MIAView:
    """What an attack sees of a group of records: per-token scores and which tokens count."""

    ft: TokenScores
    base: TokenScores | None
    mask: np.ndarray          # bool per predicted token: the tokens the attack may use
    texts: list[str]          # the text the tokens cover (the sensitive spans, joined, for sensitive views)

    @classmethod
    def of(cls, records: Sequence[Record], ft: TokenScores, base: TokenScores | None, *,
           sensitive: bool) -> "MIAView":
        if sensitive:
            texts = [" ".join(r.text[s.start:s.end] for s in r.spans) for r in records]
            return cls(ft, base, ft.sensitive.copy(), texts)
        return cls(ft, base, np.ones(ft.n_tokens, bool), [r.text for r in records])

    def mean_nll(self, base: bool = False) -> np.ndarray:
        ts = self.base if base else self.ft
        if ts is None:
            raise ValueError("this attack needs the base model's scores")
        return ts.per_record_mean(mask=self.mask)

    def zlib_bytes(self) -> np.ndarray:
        """Length in bytes of each text compressed by zlib (level 9): a model-free estimate of its entropy."""
        return np.array([len(zlib.compress(t.encode("utf-8"), 9)) if t else np.nan for t in self.texts],
                        float)


class MIAAttack(ABC):
    """A membership score per record (higher = more likely a member)."""

    name: ClassVar[str]
    needs_base: ClassVar[bool] = False
    #: the paper the attack comes from
    reference: ClassVar[str] = ""
    #: the score's formula, for eval.json's definitions
    definition: ClassVar[str] = ""

    @abstractmethod
    def scores(self, view: MIAView) -> np.ndarray:
        """One score per record; NaN where the record has no usable token (it is then left out)."""


ATTACKS: Registry[type[MIAAttack]] = Registry("mia attack")
