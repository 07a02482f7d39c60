"""In-training evaluation: privacy and utility at several points of a run, into ``RUN/trajectory.jsonl``.

Das et al. (2025) follow memorisation *over training*: a method is judged by how much it memorises for the utility
it has bought so far, not at one end point. At each evaluation step ``t`` (:func:`eval_steps`: step 0, ``eval_points``
evenly spaced steps, and the end of every whole epoch) the model is scored on a fixed evaluation subset
(``trajectory_records`` training and as many test records drawn with :data:`SUBSET_SEED`, the same for every run on
the dataset whatever its seed, so methods and seeds are compared on the same records; canaries left out) with the
scoring engine of ``privtune eval`` (:func:`privtune.evaluation.tokens.score_records`), and the measures of
:func:`privtune.evaluation.trajectory.trajectory_point` are appended as one JSON object per line, with ``step``,
``epoch`` (expected epochs, ``t · B / N``), ``epsilon`` (DP: the certified ε the ledger has spent so far; null
without DP) and ``eval_s`` (the seconds this point took).

The base model's scores are computed once, before the first step (where the model still is the base model: LoRA
adapters start at zero), and kept in ``RUN/checkpoints/base-scores-<split>.npz`` (numbers only) for resumes.
Each point is appended atomically (the file is rewritten whole through a rename); a resumed run keeps the points
already written and adds only later steps, so no step appears twice.

Privacy: for a DP run the evaluation uses the model only, so the trajectory is post-processing of iterates that
DP-SGD's accounting already covers; the scores of *training* records are a measurement of the run (as in eval.json),
not a release covered by ε.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from privtune.errors import DataError
from privtune.evaluation.cache import load_scores, save_scores
from privtune.evaluation.tokens import TokenScores, encode, score_records
from privtune.evaluation.trajectory import trajectory_point
from privtune.evaluation.users import find_owners
from privtune.training.checkpoint import CKPT_DIR
from privtune.utils.fsio import atomic_write_text

TRAJECTORY_FILE = "trajectory.jsonl"
#: Seed of the evaluation subset: fixed, so that every run on a dataset is evaluated on the same records.
SUBSET_SEED = 0


def eval_steps(*, planned: int, eval_points: int, n_train: int, batch_size: int) -> list[int]:
    """Step 0, ``⌈k·S/N⌉`` for ``k = 1..N`` (``S`` planned steps, ``N = eval_points``) and each whole epoch's last
    step ``⌈e·n/B⌉ ≤ S``, sorted and unique."""
    pts = {0} | {math.ceil(k * planned / eval_points) for k in range(1, eval_points + 1)}
    per_epoch = n_train / batch_size
    e = 1
    while math.ceil(e * per_epoch - 1e-9) <= planned:
        pts.add(math.ceil(e * per_epoch - 1e-9))
        e += 1
    return sorted(p for p in pts if 0 <= p <= planned)


def read_points(path: Path) -> list[dict[str, Any]]:
    """The points of a trajectory file (a line that does not parse as an object is dropped)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text("utf-8").splitlines():
        try:
            p = json.loads(line)
        except ValueError:
            continue
        if isinstance(p, dict) and isinstance(p.get("step"), int):
            out.append(p)
    return out


def _subset(records: list[Any], n: int, seed: int) -> list[Any]:
    if len(records) <= n:
        return records
    idx = np.sort(np.random.default_rng(seed).choice(len(records), n, replace=False))
    return [records[i] for i in idx]


def _owners(records: dict[str, list[Any]], key: str) -> dict[str, list[str]] | None:
    """Each subset record's owner when the data names every one (intervals then resample people), else None."""
    try:
        return find_owners(records, key)
    except DataError:   # owners named on some records only: record-level intervals, as without owners
        return None


def skip_reason(plan: Any) -> str | None:
    """Why this run cannot record a trajectory (None: it can)."""
    cfg = plan.cfg
    if not cfg.trajectory:
        return "off (--no-trajectory)"
    if cfg.task != "lm":
        return "only for language-model runs"
    if "test" not in plan.dataset.splits:
        return "the dataset has no test split"
    if not plan.dataset.has_spans:
        return "the dataset has no sensitive spans"
    return None


class TrajectoryRecorder:
    """Called after every optimizer step (``Trainer(on_step=...)``); evaluates at :func:`eval_steps`."""

    def __init__(self, run_dir: Path, plan: Any, model: Any, tokenizer: Any, *, privacy: Any = None,
                 step: int = 0, load_base: Callable[[], Any] | None = None):
        cfg = plan.cfg
        self.path = Path(run_dir) / TRAJECTORY_FILE
        self.model, self.tokenizer, self.privacy, self.max_length = model, tokenizer, privacy, cfg.max_length
        # epochs count sampling units: records, or users in a user-level run (batch_size then counts users)
        units = getattr(plan, "n_units", plan.n_train)
        self.batch_size, self.n_train = cfg.batch_size, units
        self.steps = set(eval_steps(planned=plan.steps, eval_points=cfg.eval_points, n_train=units,
                                    batch_size=cfg.batch_size))
        keep = (lambda r: not (r.is_canary or r.meta.get("audit")))  # noqa: E731
        self.records = {
            "train": _subset([r for r in plan.dataset.train if keep(r)], cfg.trajectory_records, SUBSET_SEED),
            "test": _subset([r for r in plan.dataset.split("test") if keep(r)], cfg.trajectory_records,
                            SUBSET_SEED + 1)}
        self.enc = {k: encode(tokenizer, v, max_length=cfg.max_length) for k, v in self.records.items()}
        self.owners = _owners(self.records, cfg.user_key)
        self.points = read_points(self.path)
        self.last = max((p["step"] for p in self.points), default=-1)
        t0 = time.perf_counter()
        self.base = {k: self._base(Path(run_dir), k, step, load_base) for k in self.records}
        self.base_s = time.perf_counter() - t0   # this session's base scoring (or loading)

    def _base(self, run_dir: Path, split: str, step: int, load_base: Callable[[], Any] | None) -> TokenScores:
        path = run_dir / CKPT_DIR / f"base-scores-{split}.npz"
        ts = load_scores(path)
        if ts is not None and ts.record_ids == [r.id for r in self.records[split]]:
            return ts
        if step == 0 or load_base is None:
            model = self.model                   # before the first step the model is the base model
        else:
            model = load_base()
        ts = self._score(model, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_scores(path, ts)
        return ts

    def _score(self, model: Any, split: str) -> TokenScores:
        return score_records(model, self.tokenizer, self.records[split], encoded=self.enc[split],
                             max_length=self.max_length, description=None)

    def __call__(self, state: Any) -> None:
        if state.step in self.steps and state.step > self.last:
            self.evaluate(state.step)

    def evaluate(self, step: int) -> dict[str, Any]:
        """Score the model now and append the point (step 0: the base model's scores, no pass needed)."""
        t0 = time.perf_counter()
        ft = dict(self.base) if step == 0 else {k: self._score(self.model, k) for k in self.records}
        eps = None
        if self.privacy is not None:
            from privtune.training.privacy import certified

            res = self.privacy.epsilon()
            eps = certified(res) if res is not None else 0.0
        point = {"step": step, "epoch": round(step * self.batch_size / self.n_train, 4), "epsilon": eps,
                 **trajectory_point(train=ft["train"], train_base=self.base["train"], test=ft["test"],
                                    test_base=self.base["test"], owners=self.owners)}
        dt = time.perf_counter() - t0
        point["eval_s"] = round(dt, 3)
        self.points.append(_finite(point))
        atomic_write_text(self.path, "".join(json.dumps(p) + "\n" for p in self.points))
        self.last = step
        return point

    def summary(self) -> dict[str, Any]:
        """run.json fields: ``trajectory_points`` and ``trajectory_eval_s``, the seconds of in-training evaluation
        (every point's ``eval_s``, from all sessions, plus this session's base-model scoring); they are part of
        ``wall_time_s`` but not of ``train_time_s``."""
        return {"trajectory_points": len(self.points),
                "trajectory_eval_s": round(sum(float(p.get("eval_s") or 0.0) for p in self.points) + self.base_s, 3)}


def _finite(obj: Any) -> Any:
    from privtune.evaluation.evaluate import _finite as f

    return f(obj)
