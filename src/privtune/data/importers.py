"""Import a user's own text as a dataset directory (``privtune data import``).

Sources (the format is chosen from the path):

- a **JSONL** file (``.jsonl``/``.json``): one record per line, ``{"text": ...}`` at least; ``id``, ``spans``,
  ``meta``, ``label`` are kept (spans already present survive tagging unchanged); a missing id becomes
  ``<file stem>-<line>``;
- a **CSV** file (``.csv``/``.tsv``): one record per row, text from ``text_column`` (default ``text``; several
  comma-separated columns, e.g. a GLUE sentence pair ``question,sentence``, are joined with a newline), an optional
  ``label_column`` for classification, an optional ``id`` column; other columns are ignored (they may hold PII).
  ``.tsv`` files are read without quoting, as tab-separated files are defined (GLUE's files rely on it: a field may
  start with ``"``);
- a **folder of .txt files**: one document per file (e.g. one dialog), id = the path below the folder.

Classification (``label_column`` given): every record needs a label (JSONL: the key ``label_column``), all integers
or all strings, and the data must hold at least two classes.

``test`` names a second source for ``test.jsonl``; otherwise ``test_fraction`` of the records (default 0.1; 0 keeps
all in train) go to test, chosen with ``seed``. With two sources every id is qualified by its split (``train/dial-0``,
``test/dial-0``), so ids are unique by construction: corpora published one folder per split with the same file names
in both (CustomerSim's ``train/dial-0.txt`` and ``test/dial-0.txt`` are different dialogs) import as they are. A
record whose text (whitespace aside) is in both splits is refused: it would make the train/test comparison of every
memorisation measure meaningless. Taggers add sensitive spans. Any bad input raises a one-line
:class:`DataError` naming the file and line (or record id); nothing is written unless everything succeeds. Errors
never quote record content: not a text, a label value, nor the first row of a CSV unless it looks like a header
(:mod:`privtune.data.headers`; a headerless CSV's "column names" are its first record).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import random
import re
from pathlib import Path
from typing import Any, Sequence

from privtune.data.headers import describe_columns
from privtune.data.schema import DatasetInfo, Record, shown_keys, write_dataset
from privtune.errors import ConfigError, DataError, fmt
from privtune.utils.fsio import read_text_utf8
from privtune.utils.owned import check_out

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
CSV_SUFFIXES = (".csv", ".tsv")
DEFAULT_TEST_FRACTION = 0.1


def source_format(src: Path) -> str:
    if src.is_dir():
        return "txt-folder"
    if not src.is_file():
        raise ConfigError(fmt("SRC", "an existing JSONL or CSV file or a folder of .txt files", str(src)))
    suffix = src.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in CSV_SUFFIXES:
        return "csv"
    raise ConfigError(fmt("SRC", f"a file ending in {', '.join(JSONL_SUFFIXES + CSV_SUFFIXES)} or a folder",
                          str(src), "Rename the file after its format."))


def read_jsonl_source(path: Path, *, label_column: str | None = None) -> list[Record]:
    records = []
    for lineno, line in enumerate(read_text_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}: "
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}malformed JSON ({e.msg}: column {e.colno}). Fix or remove the line.") from None
        if isinstance(obj, dict) and (isinstance(obj.get("id"), int) or not obj.get("id")):
            obj = {**obj, "id": str(obj["id"]) if isinstance(obj.get("id"), int) else f"{path.stem}-{lineno:06d}"}
        if isinstance(obj, dict) and label_column is not None:
            obj = _label_from(obj, label_column, where)
        records.append(Record.from_dict(obj, where))
    return records


def read_csv_source(path: Path, *, text_column: str = "text", label_column: str | None = None) -> list[Record]:
    tsv = path.suffix.lower() == ".tsv"
    reader = csv.reader(io.StringIO(read_text_utf8(path), newline=""), delimiter="\t" if tsv else ",",
                        quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
    text_columns = [c.strip() for c in text_column.split(",") if c.strip()]
    try:
        header = next(reader, [])
        for opt, col in [*(("--text-column", c) for c in text_columns), ("--label-column", label_column)]:
            if col is not None and col not in header:   # the header is quoted only if it looks like one
                raise DataError(f"{path}:1: `{opt}` must name a column of the CSV header. Found {col!r}; "
                                f"{describe_columns(header)}. Pass {opt} with one of the columns, or add a header "
                                "row naming them (e.g. `id,text,label`).")
        records = []
        for row in reader:
            if not row:
                continue
            where = f"{path}:{reader.line_num}: "
            if len(row) != len(header):
                raise DataError(f"{where}the row must have {len(header)} fields like the header. Found {len(row)}. "
                                "Quote fields that contain the delimiter.")
            values = dict(zip(header, row))
            rid = (values.get("id") or "").strip() or f"{path.stem}-{reader.line_num:06d}"
            label: Any = None
            if label_column is not None:
                label = values[label_column].strip()
                if not label:
                    raise DataError(f"{where}`{label_column}` must not be empty in a classification dataset.")
            text = "\n".join(values[c] for c in text_columns)
            rec = Record(id=rid, text=text, meta={"source_line": reader.line_num}, label=label)
            rec.validate(where)
            records.append(rec)
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({e}). Fix the quoting on that line.") from None
    return records


def read_txt_folder(path: Path) -> list[Record]:
    files = sorted(p for p in path.rglob("*.txt") if p.is_file())
    records = []
    for p in files:
        rel = p.relative_to(path).with_suffix("").as_posix()
        rec = Record(id=re.sub(r"\s+", "_", rel), text=read_text_utf8(p), meta={"source_file": p.relative_to(path).as_posix()})
        rec.validate(f"{p}: ")
        records.append(rec)
    return records


def read_source(src: str | Path, *, text_column: str = "text", label_column: str | None = None) -> list[Record]:
    """Read one source (JSONL, CSV or folder of .txt) into validated records with unique ids."""
    src = Path(src)
    fmt_ = source_format(src)
    if fmt_ == "jsonl":
        records = read_jsonl_source(src, label_column=label_column)
    elif fmt_ == "csv":
        records = read_csv_source(src, text_column=text_column, label_column=label_column)
    else:
        records = read_txt_folder(src)
    if not records:
        raise DataError(f"{src}: the source must hold at least one record. Found an empty dataset. "
                        + ("Add .txt files to the folder." if fmt_ == "txt-folder" else "Check the file."))
    seen: set[str] = set()
    for r in records:
        if r.id in seen:
            raise DataError(f"{src}: record id {r.id!r} appears twice. Ids must be unique.")
        seen.add(r.id)
    if label_column is not None:
        _coerce_labels(records)
        kinds = {type(r.label) for r in records}
        if len(kinds) > 1:  # located by record id; the values themselves are record content
            raise DataError(f"{src}: `{label_column}` labels must be all integers or all strings. Found both "
                            f"(e.g. records {next(r.id for r in records if isinstance(r.label, int))!r} and "
                            f"{next(r.id for r in records if isinstance(r.label, str))!r}). Make them one kind.")
    return records


def _label_from(obj: dict[str, Any], label_column: str, where: str) -> dict[str, Any]:
    """A JSONL object with its ``label_column`` value moved to ``label`` (which must then be the only label key)."""
    if obj.get(label_column) is None:
        raise DataError(f"{where}`{label_column}` must be present on every record of a classification dataset. "
                        f"Found keys {shown_keys(obj)}. Add the label, or pass --label-column with the key that holds "
                        "it.")
    if label_column != "label":
        if "label" in obj:
            raise DataError(f"{where}`label` and `{label_column}` must not both be present when --label-column is "
                            f"`{label_column}`. Found both. Remove one.")
        obj = {k: v for k, v in obj.items() if k != label_column} | {"label": obj[label_column]}
    return obj


def check_classes(records: Sequence[Record], *, label_column: str, where: str) -> list[Any]:
    """The class set of a classification dataset: at least two classes, or a one-line DataError."""
    classes = sorted({r.label for r in records}, key=str)
    if len(classes) < 2:
        raise DataError(f"{where}: `{label_column}` must hold at least two classes for classification. Found "
                        f"{len(classes)}. Add records of another class.")
    return classes


def _coerce_labels(records: Sequence[Record]) -> None:
    """Integer class labels when every label is an integer literal ("0", "1", ...), strings otherwise."""
    if all(isinstance(r.label, str) and re.fullmatch(r"-?\d+", r.label) for r in records):
        for r in records:
            r.label = int(r.label)  # type: ignore[arg-type]


def split_records(records: list[Record], *, test_fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Put ``round(test_fraction · N)`` records, drawn with ``seed``, in test; both keep the source order."""
    if not 0 <= test_fraction < 1:
        raise ConfigError(fmt("--test-fraction", "in [0, 1)", test_fraction))
    n_test = round(test_fraction * len(records))
    if n_test >= len(records):
        raise ConfigError(fmt("--test-fraction", f"small enough to leave training records ({len(records)} in all)",
                              test_fraction))
    chosen = set(random.Random(f"privtune:{seed}:import-split").sample(range(len(records)), n_test))
    return ([r for i, r in enumerate(records) if i not in chosen], [r for i, r in enumerate(records) if i in chosen])


def qualify_ids(records: list[Record], split: str) -> list[Record]:
    """The records with ids ``<split>/<id>``: two sources' ids cannot collide, whatever their files are called."""
    return [dataclasses.replace(r, id=f"{split}/{r.id}") for r in records]


def check_no_shared_text(train: Sequence[Record], test: Sequence[Record], *, src: str | Path,
                         test_src: str | Path) -> None:
    """Refuse a record whose text (whitespace-normalised) is in both sources; the error names ids, never text."""
    first = {" ".join(r.text.split()): r.id for r in train}
    shared = [(r.id, first[k]) for r in test if (k := " ".join(r.text.split())) in first]
    if shared:
        tid, sid = shared[0]
        more = f" ({len(shared)} records in all)" if len(shared) > 1 else ""
        raise DataError(f"{test_src}: record {tid!r} must not repeat a training record. Found the same text as "
                        f"{sid!r} in {src}{more}. A record in both splits corrupts the train/test comparison: "
                        "remove the copies from one source.")


def import_dataset(src: str | Path, *, out: str | Path, test: str | Path | None = None,
                   test_fraction: float | None = None, seed: int = 0, text_column: str = "text",
                   label_column: str | None = None, taggers: Sequence[Any] = (), name: str | None = None,
                   overwrite: bool = False) -> Path:
    """Read, split, tag and write a dataset directory atomically (see the module docstring)."""
    from privtune.data.taggers import build_tagger, tag_records

    if test is not None and test_fraction is not None:
        raise ConfigError(fmt("--test-fraction", "unset when --test gives a test source", test_fraction))
    sources = [("the import source", src), ("the --test source", test)]
    check_out(out, overwrite=overwrite, sources=sources)  # never the source or a parent of it; before reading
    tagger = build_tagger(taggers) if taggers else None  # fail on a bad tagger before reading anything
    train = read_source(src, text_column=text_column, label_column=label_column)
    if test is not None:
        test_recs = read_source(test, text_column=text_column, label_column=label_column)
        check_no_shared_text(train, test_recs, src=src, test_src=test)
        train, test_recs = qualify_ids(train, "train"), qualify_ids(test_recs, "test")
    else:
        fraction = DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
        train, test_recs = split_records(train, test_fraction=fraction, seed=seed)
    splits = {"train": train, **({"test": test_recs} if test_recs else {})}
    if tagger is not None:
        splits = {k: tag_records(v, tagger, description=f"tagging {k}") for k, v in splits.items()}
    labelled = label_column is not None
    classes = check_classes([r for v in splits.values() for r in v], label_column=label_column,
                            where=str(src)) if labelled else None
    info = DatasetInfo(
        name=name or Path(out).name, source=str(src), seed=seed, task="classification" if labelled else "lm",
        class_labels=classes,
        params={"format": source_format(Path(src)), "test_source": str(test) if test is not None else None,
                "test_fraction": None if test is not None else (DEFAULT_TEST_FRACTION if test_fraction is None
                                                               else test_fraction),
                "text_column": text_column, "label_column": label_column,
                "taggers": tagger.spec if tagger is not None else None})
    return write_dataset(out, splits, info, overwrite=overwrite, sources=sources)
