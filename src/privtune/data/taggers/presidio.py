"""``presidio``: Microsoft Presidio's analyzer (spaCy NER + recognizers) — an optional extra.

Install with ``pip install 'privtune[presidio]'`` and a spaCy English model (``en_core_web_lg`` by default; choose
another with ``presidio:MODEL``, e.g. ``presidio:en_core_web_sm``). Presidio entity types map to privtune labels
(PERSON, PHONE, EMAIL, LOCATION, DATE, ...); others keep their Presidio name in upper case.
"""

from __future__ import annotations

from typing import Any

from privtune.data.schema import Span, normalize_spans
from privtune.data.taggers.base import TAGGERS, Tagger
from privtune.errors import MissingDependencyError

DEFAULT_MODEL = "en_core_web_lg"
LABELS = {"PERSON": "PERSON", "PHONE_NUMBER": "PHONE", "EMAIL_ADDRESS": "EMAIL", "LOCATION": "LOCATION",
          "DATE_TIME": "DATE", "CREDIT_CARD": "CREDIT_CARD", "IBAN_CODE": "IBAN", "US_SSN": "SSN", "URL": "URL",
          "ORGANIZATION": "ORGANIZATION", "NRP": "NRP", "IP_ADDRESS": "IP_ADDRESS",
          "US_DRIVER_LICENSE": "ID_NUMBER", "US_PASSPORT": "ID_NUMBER", "US_BANK_NUMBER": "ID_NUMBER"}


def _engine(model: str) -> Any:
    fix = (f"Install it: pip install 'privtune[presidio]' and python -m spacy download {model}; "
           "or use --tagger regex / values:FILE.")
    try:
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider
    except ImportError:
        raise MissingDependencyError("`presidio` tagger needs the package presidio-analyzer. Found it missing. "
                                     + fix) from None
    try:
        import spacy
        if not spacy.util.is_package(model):
            raise OSError(model)
    except (ImportError, OSError):
        raise MissingDependencyError(f"`presidio` tagger needs the spaCy model {model}. Found it missing. "
                                     + fix) from None
    provider = NlpEngineProvider(nlp_configuration={"nlp_engine_name": "spacy",
                                                    "models": [{"lang_code": "en", "model_name": model}]})
    return AnalyzerEngine(nlp_engine=provider.create_engine())


@TAGGERS.register("presidio")
class PresidioTagger(Tagger):
    name = "presidio"

    def __init__(self, model: str = DEFAULT_MODEL, *, score_threshold: float = 0.4):
        self.model = model
        self.score_threshold = score_threshold
        self._engine = _engine(model)

    @classmethod
    def from_arg(cls, arg: str | None) -> "PresidioTagger":
        return cls(arg or DEFAULT_MODEL)

    @property
    def spec(self) -> str:
        return f"presidio:{self.model}"

    def tag(self, text: str) -> list[Span]:
        results = self._engine.analyze(text=text, language="en", score_threshold=self.score_threshold)
        return normalize_spans(Span(r.start, r.end, LABELS.get(r.entity_type, r.entity_type.upper()))
                               for r in results if r.end > r.start)
