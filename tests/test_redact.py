import pytest

from privtune.data.redact import redact, redact_text
from privtune.data.schema import Span


@pytest.mark.parametrize("value, label, expected", [
    ("George Smith", "PERSON", "[PERSON]"),
    ("Al", "PERSON", "[PERSON]"),
    ("X", "PERSON", "[PERSON]"),
    ("555-123-4567", "PHONE", "[PHONE]"),
    ("341752", "CANARY", "[CANARY]"),
    ("a@b.org", None, "[REDACTED]"),
])
def test_redact(value, label, expected):
    assert redact(value, label) == expected


@pytest.mark.parametrize("label", ["PERSON", "PHONE", "EMAIL", "ADDRESS", "CANARY", None])
def test_redacted_form_keeps_no_character_of_the_value(label):
    """The form depends on the label alone: two values of a label redact alike, so nothing of either is kept."""
    assert redact("Georgina Smithfield", label) == redact("Xavier Quinn", label)


def test_redact_text():
    text = "USR: I am George Smith, call 555-123-4567 please."
    spans = [Span(10, 22, "PERSON"), Span(29, 41, "PHONE")]
    out = redact_text(text, spans)
    assert out == "USR: I am [PERSON], call [PHONE] please."
    assert "Ge" not in out and "Smith" not in out and "4567" not in out
    assert redact_text(text, []) == text
