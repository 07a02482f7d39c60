import pytest

from privtune.data.redact import partial, redact, redact_text
from privtune.data.schema import Span


@pytest.mark.parametrize("value, label, expected", [
    ("George Smith", "PERSON", "Ge***"),
    ("Al", "PERSON", "A***"),
    ("X", "PERSON", "***"),
    ("555-123-4567", "PHONE", "[PHONE]"),
    ("341752", "CANARY", "[CANARY]"),
    ("a@b.org", None, "[REDACTED]"),
])
def test_redact(value, label, expected):
    assert redact(value, label) == expected


def test_partial_never_shows_more_than_half_of_the_first_word():
    for name in ["Bo", "Eve", "Anna", "Maximilian von Trapp"]:
        first = name.split()[0]
        shown = partial(name)[:-3]
        assert first.startswith(shown) and len(shown) <= len(first) // 2


def test_redact_text():
    text = "USR: I am George Smith, call 555-123-4567 please."
    spans = [Span(10, 22, "PERSON"), Span(29, 41, "PHONE")]
    out = redact_text(text, spans)
    assert out == "USR: I am Ge***, call [PHONE] please."
    assert "Smith" not in out and "4567" not in out
    assert redact_text(text, []) == text
