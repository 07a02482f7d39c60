"""Redacted forms of sensitive values, for logs, CLI output, eval.json and reports (never print raw PII).

A sensitive value becomes the placeholder of its label and keeps no character of itself: ``"George Smith"`` →
``"[PERSON]"``, ``"555-123-4567"`` → ``"[PHONE]"``, a canary secret → ``"[CANARY]"``; a value with no label becomes
``"[REDACTED]"``. (Earlier versions kept the first letters of person names, ``"Ge***"``: with a few known
candidates — the people in a customer table — two letters often single one out, so nothing is kept.)
"""

from __future__ import annotations

from typing import Iterable

from privtune.data.schema import Span


def placeholder(label: str | None) -> str:
    """``[LABEL]``, or ``[REDACTED]`` without a label."""
    return f"[{label}]" if label else "[REDACTED]"


def redact(value: str, label: str | None = None) -> str:
    """The redacted form of one sensitive ``value`` of type ``label``: its placeholder, whatever the value."""
    return placeholder(label)


def redact_text(text: str, spans: Iterable[Span]) -> str:
    """``text`` with every span replaced by its redacted form; spans must be sorted and non-overlapping."""
    parts: list[str] = []
    pos = 0
    for s in spans:
        parts.append(text[pos:s.start])
        parts.append(redact(text[s.start:s.end], s.label))
        pos = s.end
    parts.append(text[pos:])
    return "".join(parts)
