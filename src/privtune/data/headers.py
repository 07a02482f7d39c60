"""Is the first row of a CSV a header? Column names travel; a row of records must not.

A CSV without a header row turns its first record into column names, and column names go far: a values file's become
labels (in spans, stats, eval.json, the results store, redaction placeholders ``[KAREN_DAVIS]``), an import's are
quoted back in errors. So a first row counts as a header only when every cell looks like a column name and like
nothing a record holds. A cell looks like a column name when it is

- written as an identifier in one case: upper snake (``PERSON``, ``FULL_NAME``) or lower snake (``phone``,
  ``order_id``) — letters and ``_`` only; or
- in any case, with spaces or hyphens, one of the usual column names of a customer table (:data:`COMMON`:
  ``Name``, ``Full name``, ``Phone number``, ``E-mail``, ...) or one of privtune's labels.

Anything else — a digit, ``@``, ``.``, or a mixed-case word outside that list (``Karen Davis``, ``350-692-6024``,
``karen@example.org``, ``AB12345``) — makes the row a record. What this cannot tell apart: a first record whose every
cell is a single word of letters in one case (``karen``); naming columns after labels avoids it.
"""

from __future__ import annotations

import re
from typing import Sequence

from privtune.data.schema import KNOWN_LABELS

_SNAKE = re.compile(r"^(?:[A-Z][A-Z_]*|[a-z][a-z_]*)$")
_WORDS = re.compile(r"^[A-Za-z][A-Za-z _-]*$")
MAX_LEN = 40
#: Column names of customer tables accepted in any case and spacing (upper snake after normalising).
COMMON = frozenset({
    "NAME", "FIRST_NAME", "LAST_NAME", "FULL_NAME", "SURNAME", "GIVEN_NAME", "FAMILY_NAME", "CUSTOMER",
    "CUSTOMER_NAME", "CLIENT", "CLIENT_NAME", "USER", "USERNAME", "USER_NAME", "CONTACT", "CONTACT_NAME",
    "PHONE_NUMBER", "MOBILE", "MOBILE_NUMBER", "TELEPHONE", "TEL", "E_MAIL", "EMAIL_ADDRESS", "MAIL",
    "STREET", "STREET_ADDRESS", "CITY", "STATE", "COUNTRY", "ZIP", "ZIP_CODE", "POSTCODE", "POST_CODE",
    "POSTAL_CODE", "COMPANY", "EMPLOYER", "ACCOUNT", "ACCOUNT_NUMBER", "ORDER", "ORDER_NUMBER", "TRACKING",
    "TRACKING_NUMBER", "DOB", "BIRTHDAY", "BIRTHDATE", "BIRTH_DATE", "DATE_OF_BIRTH", "ID", "TEXT", "LABEL",
    "SENSITIVE", *KNOWN_LABELS,
})


def normalized(cell: str) -> str:
    """``"Full name"`` → ``"FULL_NAME"`` (upper case, runs of spaces and hyphens as ``_``)."""
    return re.sub(r"[\s\-]+", "_", cell.strip().upper()).strip("_")


def is_column_name(cell: str) -> bool:
    """Whether ``cell`` looks like a column name (see the module docstring)."""
    c = cell.strip()
    if not c or len(c) > MAX_LEN:
        return False
    return bool(_SNAKE.match(c)) or (bool(_WORDS.match(c)) and normalized(c) in COMMON)


def is_header(row: Sequence[str]) -> bool:
    """Whether a CSV's first row is a header: every cell a column name (see the module docstring)."""
    return bool(row) and all(is_column_name(c) for c in row)


def describe_columns(row: Sequence[str]) -> str:
    """How an error may speak of a first row: its names if it is a header, only its width otherwise."""
    if is_header(row):
        return f"columns are {list(row)}"
    return (f"the first row ({len(row)} fields) does not look like a header, so it is not shown (it may be a "
            "record)")
