"""``values:FILE``: tag every occurrence of known sensitive values (a customer table, a list of names).

``FILE`` is either

- a CSV (``.csv``/``.tsv``) with a header: each column is a label, named after it (upper-cased, other characters
  turned into ``_``: a column ``phone`` gives PHONE, ``Full name`` gives FULL_NAME — name columns after privtune's
  labels, PERSON, PHONE, EMAIL, ..., to compare with them). A file whose first row does not look like a header
  (:mod:`privtune.data.headers`: ``Karen Davis,350-692-6024,...``) is refused with a one-line error asking for a
  header row: read as one, its secrets would become label names, and labels are published (stats, eval.json, the
  results store, placeholders such as ``[KAREN_DAVIS]``). The error names the column, never its content; or
- any other text file with one value per line, labelled ``SENSITIVE`` unless a label follows the file name:
  ``values:names.txt:PERSON``.

Matching is exact and case-sensitive, on word boundaries (``Ann`` does not match inside ``Annual``); the longest
value wins where several start at the same place. A lookup indexed by each value's first word keeps the cost
linear in the text length, whatever the number of values.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from privtune.data.headers import is_column_name
from privtune.data.schema import LABEL_RE, Span
from privtune.data.taggers.base import TAGGERS, Tagger
from privtune.errors import ConfigError, DataError, fmt
from privtune.utils.fsio import read_text_utf8

_TOKEN = re.compile(r"\w+|[^\w\s]")
DEFAULT_LABEL = "SENSITIVE"


def column_label(name: str) -> str:
    label = re.sub(r"[^A-Z0-9]+", "_", name.strip().upper()).strip("_")
    if not label or not LABEL_RE.match(label):
        label = f"COL_{label}" if label else ""
    if not LABEL_RE.match(label):  # the name is not shown: it may be a value (a file without a header)
        raise DataError(fmt("values column name", "letters or digits (it becomes the label)",
                            f"a name of {len(name)} characters without them"))
    return label


def check_header(path: Path, header: list[str]) -> None:
    """A one-line error unless ``header`` looks like a row of column names (never quoting a cell: it may be a secret)."""
    bad = [i + 1 for i, c in enumerate(header) if not is_column_name(c)]
    if bad:
        cols = ", ".join(str(i) for i in bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise DataError(f"{path}:1: a values CSV must start with a header row naming its labels (letters and _, "
                        f"e.g. PERSON,PHONE,EMAIL). Found column {cols} of {len(header)} not a label name (not "
                        "shown: the file may have no header, and then the row is a secret). Add a header row such as "
                        "`PERSON,PHONE,...` or rename the columns after labels.")


def read_values(path: str | Path, label: str | None = None) -> dict[str, str]:
    """value -> label from a CSV with a header (labels = column names) or a one-value-per-line file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(fmt("values file", "an existing CSV or text file", str(path),
                              "Use --tagger values:PATH (CSV with a header, or one value per line)."))
    text = read_text_utf8(path)
    values: dict[str, str] = {}
    if path.suffix.lower() in (".csv", ".tsv") and label is None:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}:1: a values CSV must start with a header naming its columns (the labels).")
        check_header(path, header)
        labels = [column_label(h) for h in header]
        for row in reader:
            for lab, v in zip(labels, row):
                if v.strip():
                    values.setdefault(v.strip(), lab)
    else:
        lab = label or DEFAULT_LABEL
        for line in text.splitlines():
            if line.strip():
                values.setdefault(line.strip(), lab)
    if not values:
        raise DataError(f"{path}: the values file must hold at least one value. Found none.")
    return values


@TAGGERS.register("values")
class ValuesTagger(Tagger):
    name = "values"

    def __init__(self, values: dict[str, str], *, source: str = "<dict>"):
        self.source = source
        self.values = dict(values)
        self._index: dict[str, list[tuple[str, str]]] = {}
        for v, lab in self.values.items():
            first = _TOKEN.search(v)
            if first:
                self._index.setdefault(first.group(), []).append((v, lab))
        for cands in self._index.values():
            cands.sort(key=lambda c: -len(c[0]))

    @classmethod
    def from_arg(cls, arg: str | None) -> "ValuesTagger":
        if not arg:
            raise ConfigError(fmt("tagger", "values:FILE or values:FILE:LABEL", "values",
                                  "Name a CSV of known values (its columns are the labels)."))
        path, label = arg, None
        head, _, tail = arg.rpartition(":")
        if head and LABEL_RE.match(tail):
            path, label = head, tail
        return cls(read_values(path, label), source=arg)

    @property
    def spec(self) -> str:
        return f"values:{self.source}"

    def tag(self, text: str) -> list[Span]:
        out: list[Span] = []
        end = 0
        for m in _TOKEN.finditer(text):
            a = m.start()
            if a < end:
                continue
            for v, lab in self._index.get(m.group(), ()):
                b = a + len(v)
                if text.startswith(v, a) and not (b < len(text) and _word(text[b - 1]) and _word(text[b])) \
                        and not (a > 0 and _word(text[a - 1]) and _word(text[a])):
                    out.append(Span(a, b, lab))
                    end = b
                    break
        return out


def _word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"
