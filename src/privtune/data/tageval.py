"""How well a tagger recovers the exact spans a dataset already carries (``privtune data tag-eval``).

The tagger sees only the text. For each label ``L``, with gold spans ``G_L`` and predicted spans ``P_L``:

- **span level** (exact match): ``precision = |G_L ∩ P_L| / |P_L|``, ``recall = |G_L ∩ P_L| / |G_L|``, a span
  counting as found only with the same start, end and label;
- **character level**: the same ratios over the sets of character positions covered by ``G_L`` and ``P_L``;
- **token level**: over tokens (whitespace tokens, or a tokenizer's), a token being ``L`` when it overlaps an ``L``
  span (see :mod:`privtune.data.masks`).

The ``ALL`` row is label-aware at span level (micro-average) and label-agnostic at character and token level: it
measures the sensitive/non-sensitive mask that training and evaluation use. A ratio with a zero denominator is
``None``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from privtune.data.masks import encode_records, token_span_index, whitespace_offsets
from privtune.data.schema import Record, Span
from privtune.data.taggers.base import Tagger
from privtune.utils.progress import track

ALL = "ALL"


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass
class _Counts:
    gold: int = 0
    pred: int = 0
    hit: int = 0

    def add(self, gold: int, pred: int, hit: int) -> None:
        self.gold += gold
        self.pred += pred
        self.hit += hit


@dataclass
class LabelScores:
    label: str
    gold_spans: int
    pred_spans: int
    span_precision: float | None
    span_recall: float | None
    char_precision: float | None
    char_recall: float | None
    token_precision: float | None
    token_recall: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TagEvalResult:
    tagger: str
    token_unit: str                 # "whitespace" or the tokenizer's name
    documents: int
    labels: dict[str, LabelScores] = field(default_factory=dict)   # per label, plus "ALL"

    def to_dict(self) -> dict[str, Any]:
        return {"tagger": self.tagger, "token_unit": self.token_unit, "documents": self.documents,
                "labels": {k: v.to_dict() for k, v in self.labels.items()}}


def _overlap(a: Sequence[Span], b: Sequence[Span]) -> int:
    """Characters covered by both lists (each sorted and non-overlapping)."""
    i = j = n = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i].start, b[j].start), min(a[i].end, b[j].end)
        n += max(0, hi - lo)
        if a[i].end < b[j].end:
            i += 1
        else:
            j += 1
    return n


def _chars(spans: Sequence[Span]) -> int:
    return sum(s.end - s.start for s in spans)


def evaluate_tagger(records: Sequence[Record], tagger: Tagger, *, tokenizer: Any = None) -> TagEvalResult:
    """Score ``tagger`` against the spans of ``records`` (see the module docstring for the definitions)."""
    if tokenizer is not None:
        offsets = [e.offsets for e in encode_records(tokenizer, records, max_length=None, add_special_tokens=False)]
        unit = getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__
    else:
        offsets = [whitespace_offsets(r.text) for r in records]
        unit = "whitespace"
    span_c: dict[str, _Counts] = {}
    char_c: dict[str, _Counts] = {}
    tok_c: dict[str, _Counts] = {}

    def get(d: dict[str, _Counts], k: str) -> _Counts:
        return d.setdefault(k, _Counts())

    for rec, offs in zip(track(records, f"evaluating {tagger.spec}"), offsets):
        gold, pred = rec.spans, tagger.tag(rec.text)
        labels = {s.label for s in gold} | {s.label for s in pred}
        gset, pset = set(gold), set(pred)
        for lab in labels:
            g = [s for s in gold if s.label == lab]
            p = [s for s in pred if s.label == lab]
            get(span_c, lab).add(len(g), len(p), len({s for s in gset & pset if s.label == lab}))
            get(char_c, lab).add(_chars(g), _chars(p), _overlap(g, p))
        get(span_c, ALL).add(len(gold), len(pred), len(gset & pset))
        get(char_c, ALL).add(_chars(gold), _chars(pred), _overlap(gold, pred))
        gi, pi = token_span_index(offs, gold), token_span_index(offs, pred)
        for lab in labels:
            gl = [j >= 0 and gold[j].label == lab for j in gi]
            pl = [j >= 0 and pred[j].label == lab for j in pi]
            get(tok_c, lab).add(sum(gl), sum(pl), sum(a and b for a, b in zip(gl, pl)))
        get(tok_c, ALL).add(sum(j >= 0 for j in gi), sum(j >= 0 for j in pi),
                            sum(a >= 0 and b >= 0 for a, b in zip(gi, pi)))

    out = TagEvalResult(tagger=tagger.spec, token_unit=unit, documents=len(records))
    for lab in sorted(span_c, key=lambda k: (k == ALL, k)):
        s, c, t = span_c[lab], char_c[lab], tok_c[lab]
        out.labels[lab] = LabelScores(lab, s.gold, s.pred, _ratio(s.hit, s.pred), _ratio(s.hit, s.gold),
                                      _ratio(c.hit, c.pred), _ratio(c.hit, c.gold),
                                      _ratio(t.hit, t.pred), _ratio(t.hit, t.gold))
    return out

