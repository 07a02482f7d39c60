"""Records, spans and dataset directories — the contract every other part of privtune reads.

A dataset directory holds ``train.jsonl``, ``test.jsonl`` (optionally ``valid.jsonl``) and ``dataset.json``.
One record per line::

    {"id": "cs-000042", "text": "...", "spans": [{"start": 17, "end": 29, "label": "PERSON"}], "meta": {...}}

Spans are character offsets ``[start, end)`` into ``text``, sorted and non-overlapping, with upper-case labels.
A token is *sensitive* when its character range overlaps a span. A canary record has ``"meta": {"canary": true}``
and ``dataset.json`` describes its template, candidate space and number of insertions. Classification datasets
add a ``label`` (int or str) to each record.

Everything is validated on read and on write; errors name the file, the line or record id, and the fix.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from privtune import __version__
from privtune.errors import ConfigError, DataError
from privtune.utils.fsio import atomic_dir, atomic_write_json, is_empty_dir, sha256_files
from privtune.utils.owned import check_out, recognise

SPLITS = ("train", "valid", "test")
LABEL_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
#: Labels privtune's generators and taggers emit. Other upper-case labels are allowed.
KNOWN_LABELS = ("PERSON", "PHONE", "ADDRESS", "EMAIL", "ORDER_ID", "TRACKING_ID", "DATE", "ID_NUMBER",
                "CANARY", "LOCATION", "ORGANIZATION", "URL", "CREDIT_CARD", "IBAN", "SSN", "NUMBER")

_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")


# Errors name files, lines, record ids, offsets and keys, never record content: a malformed label or key may be the
# span's text or another value of the record, so those are shown only when they have the syntax of a name.
def _label_text(label: Any) -> str:
    """A span label as an error may show it: itself when it has label syntax, else only its kind and length."""
    if isinstance(label, str) and LABEL_RE.match(label):
        return label
    return f"a label of {len(label)} characters" if isinstance(label, str) else f"a label of type {type(label).__name__}"


def shown_keys(keys: Iterable[Any]) -> str:
    """``['id', 'txt']`` — the keys of a JSON object as an error may show them (the others only counted)."""
    keys = list(keys)
    names = sorted(str(k) for k in keys if isinstance(k, str) and _KEY_RE.match(k))
    hidden = len(keys) - len(names)
    return f"{names}" + (f" and {hidden} other key{'s' if hidden > 1 else ''} (not shown)" if hidden else "")


@dataclass(frozen=True, order=True)
class Span:
    """A sensitive character range ``[start, end)`` of a record's text."""

    start: int
    end: int
    label: str

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "label": self.label}


@dataclass
class Record:
    """One document (a dialog, a biography, a user's text) with its sensitive spans."""

    id: str
    text: str
    spans: list[Span] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    label: int | str | None = None  # classification target, when the dataset has one

    @property
    def is_canary(self) -> bool:
        return bool(self.meta.get("canary", False))

    def span_text(self, span: Span) -> str:
        return self.text[span.start:span.end]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "text": self.text, "spans": [s.to_dict() for s in self.spans],
                             "meta": self.meta}
        if self.label is not None:
            d["label"] = self.label
        return d

    def validate(self, where: str = "") -> None:
        """Raise :class:`DataError` unless the record satisfies the contract."""
        loc = f"{where}record {self.id!r}: " if self.id else f"{where}"
        if not isinstance(self.id, str) or not self.id:
            found = "an empty string" if self.id == "" else f"type {type(self.id).__name__}"
            raise DataError(f"{where}`id` must be a non-empty string. Found {found}. Give every record an id.")
        if not isinstance(self.text, str):
            raise DataError(f"{loc}`text` must be a string. Found {type(self.text).__name__}.")
        if not self.text.strip():
            raise DataError(f"{loc}`text` must not be empty. Remove the record or give it text.")
        if not isinstance(self.meta, dict):
            raise DataError(f"{loc}`meta` must be an object. Found {type(self.meta).__name__}.")
        if self.label is not None and (isinstance(self.label, bool) or not isinstance(self.label, (int, str))):
            raise DataError(f"{loc}`label` must be an integer or a string. Found type {type(self.label).__name__}.")
        n = len(self.text)
        prev_end = -1
        for s in self.spans:
            if not (isinstance(s.start, int) and isinstance(s.end, int)) or isinstance(s.start, bool):
                raise DataError(f"{loc}span offsets must be integers. Found types {type(s.start).__name__} and "
                                f"{type(s.end).__name__}.")
            if not (0 <= s.start < s.end <= n):  # offsets and lengths only: never the text, nor the label unchecked
                raise DataError(f"{loc}span [{s.start}, {s.end}) {_label_text(s.label)} must lie inside the text "
                                f"(length {n}) and be non-empty. Fix or drop the span.")
            if not isinstance(s.label, str) or not LABEL_RE.match(s.label):
                raise DataError(f"{loc}span label must be upper case like PERSON or PHONE. Found "
                                f"{_label_text(s.label)}.")
            if s.start < prev_end:
                raise DataError(f"{loc}spans must be sorted and non-overlapping; the span at [{s.start}, {s.end}) "
                                f"{_label_text(s.label)} overlaps or precedes the previous one ending at {prev_end}. "
                                "Merge or drop overlapping spans.")
            prev_end = s.end

    @classmethod
    def from_dict(cls, d: Any, where: str = "") -> "Record":
        """Parse and validate one JSON object."""
        if not isinstance(d, dict):
            raise DataError(f"{where}each line must be a JSON object. Found {type(d).__name__}.")
        unknown = set(d) - {"id", "text", "spans", "meta", "label"}
        if unknown:
            raise DataError(f"{where}unknown record keys {shown_keys(unknown)}; allowed: id, text, spans, meta, "
                            "label.")
        if "text" not in d:
            raise DataError(f"{where}a record must have a `text` key. Found keys {shown_keys(d)}.")
        raw_spans = d.get("spans") or []
        if not isinstance(raw_spans, list):
            raise DataError(f"{where}`spans` must be a list. Found {type(raw_spans).__name__}.")
        spans = []
        for s in raw_spans:
            if not isinstance(s, dict) or not {"start", "end", "label"} <= set(s):  # never its values
                found = (f"one without {', '.join(k for k in ('start', 'end', 'label') if k not in s)}"
                         if isinstance(s, dict) else f"type {type(s).__name__}")
                raise DataError(f"{where}each span must be an object with start, end and label. Found {found}.")
            spans.append(Span(s["start"], s["end"], s["label"]))
        rec = cls(id=d.get("id", ""), text=d["text"], spans=spans, meta=d.get("meta") or {},
                  label=d.get("label"))
        rec.validate(where)
        return rec


def normalize_spans(spans: Iterable[Span]) -> list[Span]:
    """Sort spans and merge overlapping or touching spans of the same label; for overlaps across labels the
    earlier (then longer) span wins. Used by taggers that combine several sources."""
    out: list[Span] = []
    for s in sorted(spans, key=lambda s: (s.start, -(s.end - s.start))):
        if out and s.start < out[-1].end:
            last = out[-1]
            if s.label == last.label and s.end > last.end:
                out[-1] = Span(last.start, s.end, last.label)
            continue
        out.append(s)
    return out


def read_jsonl(path: str | Path) -> list[Record]:
    """Read and validate a JSONL file of records; ids must be unique."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"`{path}` must be an existing JSONL file. Found nothing there.")
    records: list[Record] = []
    seen: set[str] = set()
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}: "
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{where}bytes at offset {e.start} are not UTF-8. Re-encode the file as UTF-8.") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}malformed JSON ({e.msg}: column {e.colno}). Fix or remove the line.") from None
            rec = Record.from_dict(obj, where)
            if rec.id in seen:
                raise DataError(f"{where}record id {rec.id!r} appears twice. Ids must be unique within a split.")
            seen.add(rec.id)
            records.append(rec)
    return records


def write_jsonl(path: str | Path, records: Iterable[Record]) -> int:
    """Validate and write records (one JSON object per line). Returns the count."""
    n = 0
    seen: set[str] = set()
    with open(path, "w", encoding="utf-8") as f:
        for rec in records:
            rec.validate(f"{path}: ")
            if rec.id in seen:
                raise DataError(f"{path}: record id {rec.id!r} appears twice. Ids must be unique within a split.")
            seen.add(rec.id)
            f.write(json.dumps(rec.to_dict(), ensure_ascii=False) + "\n")
            n += 1
    return n


@dataclass
class DatasetInfo:
    """Contents of ``dataset.json``."""

    name: str
    source: str                      # generator name ("customersim", "synbio") or import source
    seed: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)       # span label -> number of spans (all splits)
    content_hash: str = ""
    task: str = "lm"                 # "lm" (causal LM on text) or "classification" (text + label)
    canary: dict[str, Any] | None = None  # template, candidate space, secret pattern, repeats
    audit: dict[str, Any] | None = None   # one-run audit canaries: template, secrets, inclusion flags, seed
    class_labels: list[Any] | None = None  # classification: the label set, in index order
    params: dict[str, Any] = field(default_factory=dict)       # generator / importer / tagger parameters
    privtune_version: str = __version__
    created: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "") -> "DatasetInfo":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise DataError(f"{where}unknown keys {sorted(unknown)} in dataset.json.")
        for key in ("name", "source"):
            if key not in d:
                raise DataError(f"{where}dataset.json must have `{key}`. Regenerate or re-import the dataset.")
        return cls(**d)


@dataclass
class Dataset:
    """A loaded dataset directory."""

    info: DatasetInfo
    splits: dict[str, list[Record]]
    path: Path | None = None

    @property
    def train(self) -> list[Record]:
        return self.split("train")

    @property
    def test(self) -> list[Record]:
        return self.split("test")

    def split(self, name: str) -> list[Record]:
        if name not in self.splits:
            where = f" in {self.path}" if self.path else ""
            raise DataError(f"split `{name}` must exist{where}. Found splits {sorted(self.splits)}. "
                            f"Add {name}.jsonl (e.g. `privtune data import ... --test-fraction 0.1`).")
        return self.splits[name]

    @property
    def has_spans(self) -> bool:
        return any(r.spans for recs in self.splits.values() for r in recs)


def _label_counts(splits: dict[str, list[Record]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for recs in splits.values():
        for r in recs:
            for s in r.spans:
                counts[s.label] = counts.get(s.label, 0) + 1
    return dict(sorted(counts.items()))


def _save_dataset(out: str | Path, splits: dict[str, list[Record]], info: DatasetInfo, *,
                 overwrite: bool = False, sources: Sequence[tuple[str, str | Path | None]] = ()) -> Path:
    """Validate and write a dataset directory atomically; fills counts, labels, content hash and timestamp.

    If ``out`` already holds a dataset with the same content, nothing is written (idempotent). If it holds
    anything else, :class:`ConfigError` unless ``overwrite``, which replaces only a directory privtune wrote
    (:func:`privtune.utils.owned.check_out`): never one of ``sources`` (what was read), the current directory or a
    parent of them.
    """
    out = check_out(out, overwrite=overwrite, sources=sources)
    bad = set(splits) - set(SPLITS)
    if bad:
        raise ConfigError(f"`splits` must be among {', '.join(SPLITS)}. Found {sorted(bad)}.")
    if not splits.get("train"):
        raise DataError("`train` split must hold at least one record. Found an empty dataset. "
                        "Check the source file or generator counts.")
    with atomic_dir(out, overwrite=True) as tmp:
        files = []
        for name in SPLITS:
            if name in splits:
                p = tmp / f"{name}.jsonl"
                write_jsonl(p, splits[name])
                files.append(p)
        info.counts = {k: len(v) for k, v in splits.items()}
        info.labels = _label_counts(splits)
        info.content_hash = sha256_files(files)
        if out.is_dir() and not is_empty_dir(out) and not overwrite:
            existing = _existing_hash(out)
            if existing == info.content_hash:
                raise _SameDataset()
            kind = recognise(out)   # --overwrite replaces privtune's own directories only
            held = ("a different dataset" if existing else f"a privtune {kind}" if kind
                    else "files privtune did not write")
            fix = "Choose another path, remove it, or pass --overwrite." if kind else "Choose another path."
            raise ConfigError(f"`--out` must be a new or empty directory. Found {out} holding {held}. {fix}")
        info.privtune_version = __version__
        info.created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        atomic_write_json(tmp / "dataset.json", info.to_dict())
    return out


class _SameDataset(Exception):
    pass


def _existing_hash(path: Path) -> str | None:
    try:
        return json.loads((path / "dataset.json").read_text("utf-8")).get("content_hash")
    except (OSError, ValueError):
        return None


def write_dataset(out: str | Path, splits: dict[str, list[Record]], info: DatasetInfo, *,
                  overwrite: bool = False, sources: Sequence[tuple[str, str | Path | None]] = ()) -> Path:
    """Validate and write a dataset directory atomically (see :func:`_save_dataset`): re-writing the same dataset to the same place is a no-op."""
    try:
        return _save_dataset(out, splits, info, overwrite=overwrite, sources=sources)
    except _SameDataset:
        return Path(out)


def load_dataset(path: str | Path, *, verify_hash: bool = True) -> Dataset:
    """Load and validate a dataset directory."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"`{path}` must be a dataset directory. Found nothing there. "
                        "Create one with `privtune data synth customersim --out DIR` or `privtune data import`.")
    meta_path = path / "dataset.json"
    if not meta_path.is_file():
        raise DataError(f"`{meta_path}` must exist. Found a directory without dataset.json; "
                        "create datasets with `privtune data synth` or `privtune data import`.")
    try:
        info = DatasetInfo.from_dict(json.loads(meta_path.read_text("utf-8")), f"{meta_path}: ")
    except json.JSONDecodeError as e:
        raise DataError(f"{meta_path}: malformed JSON ({e.msg}: line {e.lineno}). Regenerate the dataset.") from None
    splits: dict[str, list[Record]] = {}
    files = []
    for name in SPLITS:
        p = path / f"{name}.jsonl"
        if p.exists():
            splits[name] = read_jsonl(p)
            files.append(p)
    if "train" not in splits:
        raise DataError(f"`{path / 'train.jsonl'}` must exist. Found splits {sorted(splits)}.")
    if verify_hash and info.content_hash and sha256_files(files) != info.content_hash:
        raise DataError(f"`{path}` content must match the hash in dataset.json. Found modified files. "
                        "Re-import the data (or load with verify_hash=False if the edit was deliberate).")
    return Dataset(info=info, splits=splits, path=path)


def iter_all(ds: Dataset) -> Iterator[tuple[str, Record]]:
    for name, recs in ds.splits.items():
        for r in recs:
            yield name, r


def check_split_name(name: str) -> str:
    if name not in SPLITS:
        raise ConfigError(f"`split` must be one of {', '.join(SPLITS)}. Found {name!r}.")
    return name
