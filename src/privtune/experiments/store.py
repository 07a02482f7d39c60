"""The results store of a study: ``DIR/results.sqlite``, one row per run, every figure in its own column.

Columns (names are quoted identifiers; dots are part of the name):

- sweep bookkeeping, unprefixed: ``run_id`` (primary key), ``status`` (``pending``, ``running``, ``completed``,
  ``failed``), ``stage`` (``data``, ``train`` or ``eval``: where a failed run stopped), ``error``, ``run_dir``
  (relative to the study directory), ``updated`` (ISO time), ``seq`` (position in the study's expansion: rows
  come back in the study's order);
- the grid point: ``grid.dataset``, ``grid.model``, ``grid.method``, ``grid.epsilon``, ``grid.lora_r``, ``grid.lr``,
  ``grid.epochs``, ``grid.seed`` and, in studies that set it, ``grid.privacy_unit`` (present even when training
  failed before writing run.json);
- every field of ``run.json`` under ``run.`` (nested objects flattened: ``run.lora.r``, ``run.config.lr``);
- every field of ``eval.json`` under its section: ``privacy.sensitive_train_nll``, ``mia.loss.auc``; top-level
  scalars of eval.json under ``eval.``.

Lists (loss curves, per-example values) are stored as JSON text. New keys in later rows add columns
(``ALTER TABLE ... ADD COLUMN``), so the schema follows run.json and eval.json as they evolve. The study itself
(its TOML text and the parsed configuration) is kept in the ``study`` table.

The ``trajectory`` table holds every run's in-training evaluation points (``RUN/trajectory.jsonl``), one row per
``(run_id, step)``: ``step``, ``epoch``, ``epsilon`` and the measures, intervals as JSON text ``[lo, hi]``. A row
given to :meth:`ResultStore.upsert` with a :data:`TRAJECTORY_KEY` list replaces that run's points, so a sweep and
``privtune results --rebuild`` fill it from the run directories like the runs table.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from privtune.errors import ConfigError, MissingDependencyError, fmt

STORE_FILE = "results.sqlite"
CSV_FILE = "results.csv"
TABLE = "runs"
#: Sweep columns, in the order they come first in exports.
SWEEP_COLUMNS = ("run_id", "status", "stage", "error", "run_dir", "updated", "seq")
GRID_COLUMNS = ("grid.dataset", "grid.model", "grid.method", "grid.epsilon", "grid.lora_r", "grid.lr",
                "grid.epochs", "grid.seed", "grid.privacy_unit")
#: eval.json sections (contract); any other object with a ``definition`` is a section too.
SECTIONS = ("privacy", "utility", "exposure", "mia", "extraction", "audit", "users")
_RESERVED = ("run", "grid", "eval", *SWEEP_COLUMNS)
TRAJECTORY_TABLE = "trajectory"
#: A row's key holding the run's trajectory points (a list of dicts); not a column of the runs table.
TRAJECTORY_KEY = "_trajectory"


def flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` → ``{"a.b": 1, "c": "[1, 2]"}`` (lists as JSON text, bools as 0/1)."""
    out: dict[str, Any] = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            if v:
                out.update(flatten(v, f"{key}."))
            else:
                out[key] = None
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(v, default=str)
        elif isinstance(v, bool):
            out[key] = int(v)
        elif v is None or isinstance(v, (int, float, str)):
            out[key] = v
        elif hasattr(v, "item"):          # numpy scalar
            out[key] = v.item()
        else:
            out[key] = str(v)
    return out


def make_row(*, run_id: str, status: str, grid: Mapping[str, Any], run_dir: str | None = None,
             stage: str | None = None, error: str | None = None, run_json: Mapping[str, Any] | None = None,
             eval_json: Mapping[str, Any] | None = None, seq: int | None = None,
             trajectory: list[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """One flat row from the sweep state, the grid point, run.json and eval.json (see the module docstring);
    ``trajectory`` (the points of trajectory.jsonl) travels under :data:`TRAJECTORY_KEY`."""
    row: dict[str, Any] = {"run_id": run_id, "status": status, "stage": stage, "error": error, "run_dir": run_dir,
                           "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seq": seq}
    row.update(flatten(grid, "grid."))
    if run_json:
        row.update(flatten(run_json, "run."))
    if eval_json:
        for k, v in eval_json.items():
            if isinstance(v, Mapping) and k not in _RESERVED and (k in SECTIONS or "definition" in v):
                row.update(flatten(v, f"{k}."))
            else:
                row.update(flatten({k: v}, "eval."))
    if trajectory is not None:
        row[TRAJECTORY_KEY] = list(trajectory)
    return row


class ResultStore:
    """``DIR/results.sqlite`` (see the module docstring). Only the sweep's main process writes to it."""

    def __init__(self, study_dir: str | Path, *, create: bool = True):
        self.dir = Path(study_dir)
        self.path = self.dir / STORE_FILE
        if not create and not self.path.is_file():
            raise ConfigError(fmt("DIR", "a study directory with results.sqlite (from `privtune sweep`)",
                                  str(study_dir)))
        if self.path.exists():
            check_store(self.path)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._con = sqlite3.connect(self.path, timeout=30)
        self._con.execute("PRAGMA journal_mode=WAL")   # a crash mid-write leaves the last committed state
        cols = ", ".join(f'"{c}"' for c in SWEEP_COLUMNS[1:])
        with self._con:
            self._con.execute(f'CREATE TABLE IF NOT EXISTS {TABLE} ("run_id" TEXT PRIMARY KEY, {cols})')
            self._con.execute("CREATE TABLE IF NOT EXISTS study (key TEXT PRIMARY KEY, value TEXT)")
            self._con.execute(f'CREATE TABLE IF NOT EXISTS {TRAJECTORY_TABLE} ("run_id" TEXT, "step" INTEGER, '
                              'PRIMARY KEY ("run_id", "step"))')

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- schema ------------------------------------------------------------------------------------------------
    def columns(self, table: str = TABLE) -> list[str]:
        return [r[1] for r in self._con.execute(f"PRAGMA table_info({table})")]

    def _ensure_columns(self, names: list[str], table: str = TABLE) -> None:
        have = set(self.columns(table))
        for n in names:
            if n not in have:
                self._con.execute(f'ALTER TABLE {table} ADD COLUMN "{_ident(n)}"')
                have.add(n)

    # -- rows --------------------------------------------------------------------------------------------------
    def upsert(self, row: Mapping[str, Any]) -> None:
        """Insert or replace the row of ``row["run_id"]``; columns not in ``row`` become NULL. A
        :data:`TRAJECTORY_KEY` entry replaces the run's trajectory points."""
        row = dict(row)
        points = row.pop(TRAJECTORY_KEY, None)
        names = list(row)
        with self._con:
            if points is not None:
                self._put_trajectory(str(row["run_id"]), points)
            self._ensure_columns(names)
            cols = ", ".join(f'"{_ident(n)}"' for n in names)
            marks = ", ".join("?" for _ in names)
            self._con.execute(f"INSERT OR REPLACE INTO {TABLE} ({cols}) VALUES ({marks})", [row[n] for n in names])

    def _put_trajectory(self, run_id: str, points: list[Mapping[str, Any]]) -> None:
        self._con.execute(f'DELETE FROM {TRAJECTORY_TABLE} WHERE "run_id" = ?', (run_id,))
        for p in points:
            flat = {**flatten(p), "run_id": run_id}
            names = list(flat)
            self._ensure_columns(names, TRAJECTORY_TABLE)
            cols = ", ".join(f'"{_ident(n)}"' for n in names)
            marks = ", ".join("?" * len(names))
            self._con.execute(f"INSERT OR REPLACE INTO {TRAJECTORY_TABLE} ({cols}) VALUES ({marks})",
                              [flat[n] for n in names])

    def trajectories(self) -> dict[str, list[dict[str, Any]]]:
        """``{run_id: [point, ...]}`` ordered by step; intervals parsed back into ``[lo, hi]`` lists."""
        cur = self._con.execute(f'SELECT * FROM {TRAJECTORY_TABLE} ORDER BY "run_id", "step"')
        names = [d[0] for d in cur.description]
        out: dict[str, list[dict[str, Any]]] = {}
        for r in cur.fetchall():
            p = {k: (json.loads(v) if isinstance(v, str) and v.startswith("[") else v) for k, v in zip(names, r)}
            out.setdefault(str(p.pop("run_id")), []).append(p)
        return out

    def get(self, run_id: str) -> dict[str, Any] | None:
        cur = self._con.execute(f'SELECT * FROM {TABLE} WHERE "run_id" = ?', (run_id,))
        r = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], r)) if r else None

    def rows(self) -> list[dict[str, Any]]:
        cur = self._con.execute(f'SELECT * FROM {TABLE} ORDER BY "seq" IS NULL, "seq", rowid')
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def delete_missing(self, keep: set[str]) -> None:
        """Drop rows of runs no longer in the study (a study file edited between sweeps)."""
        with self._con:
            for (rid,) in self._con.execute(f'SELECT "run_id" FROM {TABLE}').fetchall():
                if rid not in keep:
                    self._con.execute(f'DELETE FROM {TABLE} WHERE "run_id" = ?', (rid,))
                    self._con.execute(f'DELETE FROM {TRAJECTORY_TABLE} WHERE "run_id" = ?', (rid,))

    # -- study ---------------------------------------------------------------------------------------------------
    def put_study(self, values: Mapping[str, Any]) -> None:
        with self._con:
            for k, v in values.items():
                self._con.execute("INSERT OR REPLACE INTO study (key, value) VALUES (?, ?)",
                                  (k, v if isinstance(v, str) else json.dumps(v, default=str)))

    def study(self) -> dict[str, str]:
        return dict(self._con.execute("SELECT key, value FROM study").fetchall())

    # -- export --------------------------------------------------------------------------------------------------
    def dataframe(self) -> Any:
        """The rows as a pandas DataFrame, bookkeeping and grid columns first."""
        import pandas as pd

        df = pd.DataFrame(self.rows(), columns=self.columns())
        first = [c for c in (*SWEEP_COLUMNS, *GRID_COLUMNS) if c in df.columns]
        return df[first + [c for c in df.columns if c not in first]]

    def export_csv(self, out: str | Path) -> Path:
        from privtune.utils.fsio import atomic_write_text

        out = Path(out)
        atomic_write_text(out, self.dataframe().to_csv(index=False))
        return out

    def export_parquet(self, out: str | Path) -> Path:
        try:
            import pyarrow  # noqa: F401  (only its presence matters)
        except ImportError:
            raise MissingDependencyError(fmt("--parquet", "used with pyarrow installed", "pyarrow missing",
                                             "Install it with `pip install 'privtune[parquet]'`, or use --csv.")) \
                from None
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        try:
            self.dataframe().to_parquet(tmp, index=False)
            tmp.replace(out)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return out


def check_store(path: Path) -> None:
    """Refuse a results store that is empty (0 bytes), not SQLite, damaged, or without the runs table, naming the
    file and how to rebuild it; reading one would report nothing (or fail mid-way) instead."""
    found = None
    if not path.is_file():
        found = "not a file"
    elif path.stat().st_size == 0:
        found = "an empty file (0 bytes)"
    else:
        try:
            con = sqlite3.connect(path, timeout=30)
            try:
                tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                check = con.execute("PRAGMA quick_check").fetchone()
            finally:
                con.close()
        except sqlite3.DatabaseError as e:
            found = f"an unreadable file ({e})"
        else:
            if check is None or check[0] != "ok":
                found = f"a damaged database ({check[0] if check else 'no check result'})"
            elif TABLE not in tables:
                found = "a database without the runs table"
    if found is not None:
        raise ConfigError(fmt(str(path), "a privtune results store", found,
                              f"Rebuild it from the run directories with `privtune results {path.parent} "
                              "--rebuild` (the damaged file is kept beside it)."))


def recorded_study_name(study_dir: str | Path) -> str | None:
    """The name of the study whose results ``DIR/results.sqlite`` holds, or None (no store, or unreadable)."""
    path = Path(study_dir) / STORE_FILE
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            row = con.execute("SELECT value FROM study WHERE key = 'name'").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def _ident(name: str) -> str:
    return name.replace('"', '""')


@contextlib.contextmanager
def open_store(study_dir: str | Path, *, create: bool = False) -> Iterator[ResultStore]:
    store = ResultStore(study_dir, create=create)
    try:
        yield store
    finally:
        store.close()


def export_results(study_dir: str | Path, *, csv: str | Path | None = None,
                   parquet: str | Path | None = None) -> list[Path]:
    """Write the study's rows to CSV and/or Parquet (``privtune results``)."""
    if csv is None and parquet is None:
        raise ConfigError(fmt("--csv/--parquet", "given (at least one)", None))
    out = []
    with open_store(study_dir) as store:
        if parquet is not None:
            out.append(store.export_parquet(parquet))   # first: a missing pyarrow fails before anything is written
        if csv is not None:
            out.append(store.export_csv(csv))
    return out
