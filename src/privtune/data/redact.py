"""Redacted forms of sensitive values, for logs, CLI output and reports (never print raw PII).

- Person names keep their first letters and hide the rest: ``"George Smith"`` → ``"Ge***"`` (at most two
  characters shown, and never more than half of the first name) — enough to tell records apart in a log.
- Every other label becomes a placeholder: ``"555-123-4567"`` → ``"[PHONE]"``, a canary secret → ``"[CANARY]"``;
  a value with no label becomes ``"[REDACTED]"``.
"""

from __future__ import annotations

from typing import Iterable

from privtune.data.schema import Span

#: Labels shown as a partial mask rather than a placeholder.
PARTIAL_LABELS = frozenset({"PERSON"})
MASK = "***"


def placeholder(label: str | None) -> str:
    """``[LABEL]``, or ``[REDACTED]`` without a label."""
    return f"[{label}]" if label else "[REDACTED]"


def partial(value: str) -> str:
    """First letters of the first word (at most 2, at most half of it) followed by ``***``."""
    word = value.strip().split(maxsplit=1)[0] if value.strip() else ""
    keep = min(2, len(word) // 2)
    return word[:keep] + MASK


def redact(value: str, label: str | None = None) -> str:
    """The redacted form of one sensitive ``value`` of type ``label`` (see the module docstring)."""
    if label in PARTIAL_LABELS:
        return partial(value)
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
