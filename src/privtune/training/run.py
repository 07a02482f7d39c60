"""Run directories: start a run, resume it, finish it, and load what it produced.

``RUN/`` holds ``run.json`` (configuration, status and every figure), ``ledger.json`` (DP: the accountant ledger,
written ahead of each step), ``checkpoints/`` and, once finished, ``model/`` (``save_pretrained`` form: the adapter
alone for LoRA methods, with the tokenizer and a ``privtune.json`` stamp). ``status`` is ``running`` while a process
owns the run (or after it was killed: resumable), ``failed`` with an ``error`` (resumable from the last good
checkpoint), ``interrupted``, ``budget_exhausted`` (finished early by the budget guard) or ``completed``. A DP run
that fails or is interrupted still reports the epsilon its ledger has spent.

Resume continues from the newest checkpoint that loads whole (damaged newer ones are skipped and noted in
``recovered``) with the ledger as ``ledger.json`` has it, which must be this run's (``run_id``) and count at least
the steps every checkpoint and run.json record: the ledger never shrinks (:meth:`PrivacyState.load`). ``--lr`` may
change on resume (run.json ``changes`` says from which step); nothing else may, the privacy plan least of all.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager, Iterator

import torch

from privtune.errors import ConfigError, ModelLoadError, PrivtuneError, ResumeError, fmt
from privtune.training.checkpoint import (CKPT_DIR, Checkpoint, checkpoint_steps, clean_partial, latest_step,
                                         load_newest, save_checkpoint, set_rng_state)
from privtune.training.config import TrainConfig
from privtune.training.distributed import SINGLE, Dist, from_env, launch
from privtune.training.privacy import PrivacyPlan, PrivacyState
from privtune.training.session import Session, build_session, make_plan
from privtune.training.trainer import Trainer, TrainState
from privtune.training import record as rec_mod  # noqa: E402
from privtune.utils.fsio import LOCK_FILE, atomic_dir, atomic_write_json, claim_dir, ensure_fresh_dir, exclusive_lock
from privtune.utils.progress import make_progress, progress_enabled

RUN_FILE = "run.json"
MODEL_DIR = "model"
#: internal resume state, not a release: the training set's content hash (which a DP run's run.json leaves out)
RESUME_FILE = Path(CKPT_DIR) / "resume.json"
FINISHED = ("completed", "budget_exhausted")


@dataclass
class RunResult:
    run_dir: Path
    record: dict[str, Any]

    @property
    def status(self) -> str:
        return self.record["status"]

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), **self.record}


def read_record(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise ConfigError(fmt("run directory", "a directory with run.json (from `privtune train --out`)",
                              str(run_dir)))
    try:
        record = json.loads(path.read_text("utf-8"))
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        record, why = None, str(e).splitlines()[0]
    else:
        why = f"a JSON {type(record).__name__}, not an object" if not isinstance(record, dict) else ""
    if not isinstance(record, dict) or not {"status", "config"} <= set(record):
        # privtune writes run.json atomically: a damaged one was damaged afterwards, and it alone holds the run's
        # configuration and privacy plan, so nothing can be rebuilt from the other files safely
        raise ConfigError(fmt(str(path), "a whole run record", why or "no status or config",
                              "It is truncated or corrupt: restore it from a backup (the run cannot be resumed or "
                              "evaluated without it)."))
    return record


def train(config: TrainConfig | None = None, *, out: str | Path, nproc: int | None = None,
          **overrides: Any) -> RunResult:
    """Train per ``config`` (or keyword overrides) into the new run directory ``out``.

    ``nproc``: train in that many local processes (:mod:`privtune.training.distributed`); under ``torchrun`` the
    processes are already there and ``nproc`` is not needed.
    """
    cfg = TrainConfig.from_dict({**(config.to_dict() if config else {}), **overrides})
    out = ensure_fresh_dir(out, what="--out", fix=_TAKEN)   # early; the claim below is what makes it exclusive
    plan = make_plan(cfg)                      # bad input fails here, before anything is written
    if plan.user_level and ((nproc or 1) > 1 or _under_torchrun()):
        raise ConfigError(fmt("--nproc", "1 with --privacy-unit user (user-level sampling runs in one process)",
                              nproc or int(os.environ.get("WORLD_SIZE", "1"))))
    if nproc is not None and nproc != 1 and not _under_torchrun():
        launch(nproc=nproc, out=out, config=cfg.to_dict())
        return RunResult(out, read_record(out))
    dist = from_env()
    # Rank 0 claims --out before the model loads and holds its lock through _run: of two `train --out` on one
    # directory exactly one runs, the other fails at once. A failure before run.json exists removes the claim.
    with claim_dir(out, busy=_busy(out), fix=_TAKEN) if dist.main else contextlib.nullcontext():
        session = build_session(plan)
        dist.broadcast_module(session.model)
        record = rec_mod.initial_record(plan, session)
        record["processes"] = dist.world
        if dist.main:
            atomic_write_json(out / RESUME_FILE, {"dataset_hash": plan.dataset.info.content_hash})
            atomic_write_json(out / RUN_FILE, record)   # whole run.json, already marked running
        dist.barrier()
        return _run(out, session, record, TrainState(), dist)


_TAKEN = ("Choose another path; to continue a run that stopped, use `privtune train --resume RUN`; "
          "to train again, remove the directory first.")


def _busy(run_dir: Path) -> str:
    return fmt("run directory", "not in use by another privtune process", str(run_dir),
               "Wait for the other process to finish, or stop it.")


def resume(run_dir: str | Path, *, nproc: int | None = None, lr: float | None = None) -> RunResult:
    """Continue a run that was killed, failed or interrupted; a finished run is returned as it is.

    ``lr``: continue with this learning rate (e.g. after a NaN loss); the privacy plan is never touched.
    """
    run_dir = Path(run_dir)
    record = read_record(run_dir)
    if record["status"] in FINISHED:
        if lr is not None:
            raise ConfigError(fmt("--lr", "given only to resume an unfinished run", lr,
                                  f"{run_dir} is {record['status']}: nothing is left to train."))
        return RunResult(run_dir, record)
    privacy = PrivacyPlan.from_dict(record["privacy_plan"]) if record.get("privacy_plan") else None
    if nproc is not None and nproc != 1 and not _under_torchrun():
        _check_resumable(run_dir, record, privacy)  # the refusals, as one line, before any process starts
        launch(nproc=nproc, resume=run_dir, lr=lr)
        return RunResult(run_dir, read_record(run_dir))
    cfg = TrainConfig.from_dict(record["config"])
    previous_lr = record.get("learning_rate")
    if lr is not None:
        cfg.lr = lr
    plan = make_plan(cfg, privacy=privacy)     # validates --lr
    started_on = trained_dataset_hash(run_dir, record)
    if plan.dataset.info.content_hash != started_on:
        raise ConfigError(fmt("--data", "the dataset the run started with", cfg.data,
                              "Its content hash changed; restore the original data to resume."))
    dist = from_env()
    with _lock(run_dir) if dist.main else contextlib.nullcontext():
        if dist.main:
            clean_partial(run_dir)
        dist.barrier()  # every rank reads the checkpoint after rank 0 cleaned partial writes
        ckpt = _check_resumable(run_dir, record, privacy)
    session = build_session(plan)
    state = TrainState()
    if ckpt is not None:
        plan.method.load_trainable_state(session.model, ckpt.trainable)
        session.optimizer.load_state_dict(ckpt.training_state["optimizer"])
        session.scheduler.load_state_dict(ckpt.training_state["scheduler"])
        set_rng_state(ckpt.training_state["rng"])
        _set_lr(session, plan.lr)  # the optimizer state carries the rate it was saved with
        state = TrainState.from_dict(ckpt.state["train_state"])
        record["wall_time_s"] = ckpt.state["wall_time_s"]  # time of work that survived; lost work is not counted
        if ckpt.skipped:
            record.setdefault("recovered", []).append(
                {"resume": record.get("resumes", 0) + 1, "resumed_from": str(ckpt.path.relative_to(run_dir)),
                 "skipped": [{"file": str(Path(f).relative_to(run_dir)), "error": why} for f, why in ckpt.skipped]})
    if plan.lr != previous_lr:
        record["learning_rate"] = record["config"]["lr"] = plan.lr
        record.setdefault("changes", []).append({"option": "lr", "value": plan.lr, "previous": previous_lr,
                                                 "from_step": state.step + 1,
                                                 "resume": record.get("resumes", 0) + 1})
    record["resumes"] = record.get("resumes", 0) + 1
    record["processes"] = dist.world
    return _run(run_dir, session, record, state, dist, steps_taken=_steps_taken(run_dir, record, ckpt))


def _steps_taken(run_dir: Path, record: dict[str, Any], ckpt: Checkpoint | None) -> tuple[int, str]:
    """The fewest DP steps this run has provably taken, and what records them (the ledger must count as many)."""
    found = [(int(record.get("ledger_steps") or 0), RUN_FILE)]
    found += [(step, f"checkpoint step-{step:07d}") for step in checkpoint_steps(run_dir)[-1:]]
    if ckpt is not None and ckpt.state.get("ledger"):  # DP runs only
        from privtune.accounting import Ledger

        found.append((Ledger.from_dict(ckpt.state["ledger"]).steps, f"the ledger copy in {ckpt.path.name}"))
    return max(found)


def _check_resumable(run_dir: Path, record: dict[str, Any], privacy: PrivacyPlan | None) -> Checkpoint | None:
    """The newest whole checkpoint; raises a one-line ResumeError when the checkpoints or the ledger forbid it."""
    ckpt = load_newest(run_dir, run_id=record.get("run_id"))
    if privacy is not None:
        taken, by = _steps_taken(run_dir, record, ckpt)
        PrivacyState.load(privacy, run_dir, run_id=record.get("run_id"), steps_taken=taken, taken_by=by,
                          persist=False)
    return ckpt


def _set_lr(s: Session, lr: float) -> None:
    """Every parameter group at ``lr`` times the schedule's factor where the schedule stands."""
    sched = s.scheduler
    if list(sched.base_lrs) == [lr] * len(sched.base_lrs):
        return
    sched.base_lrs = [lr] * len(sched.base_lrs)
    for group, factor in zip(s.optimizer.param_groups, sched.lr_lambdas):
        group["initial_lr"] = lr
        group["lr"] = lr * factor(sched.last_epoch)


def _resume_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RESUME_FILE
    if not path.is_file():
        return {}
    try:
        state = json.loads(path.read_text("utf-8"))
    except ValueError as e:
        state, why = None, str(e).splitlines()[0]
    else:
        why = "not a JSON object"
    if not isinstance(state, dict):
        raise ResumeError(fmt(str(path), "a whole resume state file", why, "It is truncated or corrupt: restore it "
                              "from a backup."))
    return state


def trained_dataset_hash(run_dir: str | Path, record: dict[str, Any]) -> str | None:
    """Content hash of the dataset the run was trained on: run.json's, or (DP runs, which do not publish it) the
    run directory's internal resume state; None for runs that predate both."""
    return record.get("dataset_hash") or _resume_state(Path(run_dir)).get("dataset_hash")


def _under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _lock(run_dir: Path) -> ContextManager[None]:
    """One process per run directory at a time (re-entrant in a process: ``_run`` inside ``train``'s claim)."""
    return exclusive_lock(run_dir / LOCK_FILE, _busy(run_dir))


def _run(run_dir: Path, s: Session, record: dict[str, Any], state: TrainState, dist: Dist = SINGLE, *,
         steps_taken: tuple[int, str] = (0, "")) -> RunResult:
    """Train (every rank); rank 0 alone writes run.json, the ledger, checkpoints and the model.

    ``steps_taken``: (a resume) the DP steps the run has provably taken, which the ledger must count.
    """
    plan = s.plan
    main = dist.main
    t_start = time.perf_counter()
    wall_before = record.get("wall_time_s") or 0.0
    if s.loaded.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(s.loaded.device)
    with _lock(run_dir) if main else contextlib.nullcontext():
        privacy = PrivacyState.load(plan.privacy, run_dir, run_id=record.get("run_id"), steps_taken=steps_taken[0],
                                    taken_by=steps_taken[1], persist=main) if plan.privacy is not None else None
        record.update(status="running", error=None)
        if main:
            atomic_write_json(run_dir / RUN_FILE, record)
        dist.barrier()  # every rank has read the ledger before rank 0 records the next step

        def checkpoint(st: TrainState) -> None:
            if not main:
                return
            saved = {"train_state": st.to_dict(), "run_id": record.get("run_id"),
                     "ledger": privacy.ledger.to_dict() if privacy is not None else None,
                     "wall_time_s": wall_before + time.perf_counter() - t_start}
            save_checkpoint(run_dir, step=st.step, trainable=plan.method.trainable_state(s.model),
                            optimizer=s.optimizer, scheduler=s.scheduler, state=saved)

        try:
            recorder = _trajectory(run_dir, s, record, privacy, state) if main else None
            with make_progress(*rec_mod.progress_columns()) as progress:
                trainer = Trainer(model=s.model, task=plan.cfg.task, data=s.data, sampler=s.sampler,
                                  optimizer=s.optimizer, scheduler=s.scheduler, planned_steps=plan.steps,
                                  physical_batch_size=plan.physical_batch_size, device=s.loaded.device,
                                  engine=s.engine, privacy=privacy, randomness=s.randomness,
                                  checkpoint_every=plan.checkpoint_every, on_checkpoint=checkpoint, state=state,
                                  progress=progress if progress_enabled() and main else None, method=plan.method,
                                  dist=dist, format_loss=rec_mod.loss_text(plan), on_step=recorder)
                outcome = trainer.run()
            if main and latest_step(run_dir) != outcome.state.step:
                checkpoint(outcome.state)
            if s.engine is not None:
                s.engine.close()
            if main:
                _save_model(run_dir, s, record)
                record.update(rec_mod.final_fields(s, outcome, privacy, wall_before + time.perf_counter() - t_start))
                if recorder is not None:
                    record.update(recorder.summary())
        except PrivtuneError as e:
            if main:
                _fail(run_dir, record, "failed", str(e), wall_before + time.perf_counter() - t_start, privacy, plan)
            raise
        except KeyboardInterrupt:
            if main:
                _fail(run_dir, record, "interrupted", "interrupted by the user",
                      wall_before + time.perf_counter() - t_start, privacy, plan)
            raise
        except Exception as e:
            if main:
                _fail(run_dir, record, "failed", f"{type(e).__name__}: {e}", wall_before + time.perf_counter() - t_start,
                      privacy, plan)
            raise
        if main:
            atomic_write_json(run_dir / RUN_FILE, record)
    dist.barrier()  # the run directory is complete before any rank returns
    return RunResult(run_dir, record)


def _trajectory(run_dir: Path, s: Session, record: dict[str, Any], privacy: PrivacyState | None,
                state: TrainState) -> Any:
    """The in-training evaluation (:mod:`privtune.training.trajectory`) of this session, or None (run.json's
    ``trajectory_skipped`` says why)."""
    from privtune.training.session import load_base
    from privtune.training.trajectory import TrajectoryRecorder, skip_reason

    why = skip_reason(s.plan)
    record.pop("trajectory_skipped", None)
    if why is not None:
        record["trajectory_skipped"] = why
        return None
    rec = TrajectoryRecorder(run_dir, s.plan, s.model, s.loaded.tokenizer, privacy=privacy, step=state.step,
                             load_base=lambda: load_base(s.plan).model)
    if state.step == 0:
        rec(state)   # the base model's point
    return rec


def _fail(run_dir: Path, record: dict[str, Any], status: str, error: str, wall: float,
          privacy: PrivacyState | None, plan: Any = None) -> None:
    record.update(status=status, error=error, wall_time_s=round(wall, 3))
    if privacy is not None and privacy.steps:  # the steps it took are spent, finished or not
        record.update(rec_mod.spent_fields(privacy))
        if plan is not None:  # and what they imply for a user owning several records (record-level runs)
            try:
                record.update(rec_mod.group_fields(plan, privacy))
            except Exception:  # noqa: BLE001 - the failure being recorded matters more than the bound
                pass
    atomic_write_json(run_dir / RUN_FILE, record)


def _save_model(run_dir: Path, s: Session, record: dict[str, Any]) -> None:
    with atomic_dir(run_dir / MODEL_DIR, overwrite=True) as tmp:
        s.plan.method.save(s.model, tmp)
        s.loaded.tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "privtune.json", rec_mod.stamp(s.plan))


@dataclass
class TrainedRun:
    """A finished run loaded for evaluation: the fine-tuned model, its tokenizer and run.json."""

    run_dir: Path
    record: dict[str, Any]
    model: torch.nn.Module
    tokenizer: Any
    device: torch.device
    _labels: int | None = field(default=None, repr=False)

    def load_base(self) -> torch.nn.Module:
        """A fresh copy of the base model the run started from (same spec, task and device), in eval mode."""
        from privtune.models.loading import load_model

        m = load_model(self.record["model"], task=self.record["task"], num_labels=self._labels,
                       device=self.device).model
        return m.eval()


def load_trained(run_dir: str | Path, *, device: str | torch.device | None = None) -> TrainedRun:
    """Load the fine-tuned model of a finished run (LoRA adapters applied on their base)."""
    from privtune.models.loading import load_model, load_tokenizer, resolve_device

    run_dir = Path(run_dir)
    record = read_record(run_dir)
    model_dir = run_dir / MODEL_DIR
    if record["status"] not in FINISHED or not (model_dir / "privtune.json").is_file():
        raise ConfigError(fmt("run directory", "a finished run with a model", f"{run_dir} (status "
                              f"{record['status']})", "Resume it with `privtune train --resume RUN`."))
    check_model_files(model_dir, adapter=bool(record.get("adapter")))
    dev = resolve_device(device)
    n_labels = len(record["class_labels"]) if record.get("class_labels") else None
    if record.get("adapter"):
        from peft import PeftModel

        from privtune.training.methods.lora import quiet_peft

        base = load_model(record["model"], task=record["task"], num_labels=n_labels, device=dev).model
        with quiet_peft(), _unreadable(model_dir):
            model = PeftModel.from_pretrained(base, str(model_dir)).to(dev)
    else:
        with _unreadable(model_dir):
            model = load_model(str(model_dir), task=record["task"], num_labels=n_labels, device=dev).model
    with _unreadable(model_dir):
        tok = load_tokenizer(str(model_dir))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return TrainedRun(run_dir=run_dir, record=record, model=model.eval(), tokenizer=tok, device=dev,
                      _labels=n_labels)


#: What ``_save_model`` writes: the weights (one of the names), their configuration and the fast tokenizer.
MODEL_FILES = {"adapter": (("adapter_config.json",), ("adapter_model.safetensors", "adapter_model.bin")),
               "full": (("config.json",), ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                                           "pytorch_model.bin.index.json"))}
_DAMAGED = "Restore the run directory from a backup, or train the run again."


def check_model_files(model_dir: Path, *, adapter: bool) -> None:
    """A one-line :class:`ModelLoadError` when a file of the saved model is missing or empty, before any library
    reads it (a missing adapter would otherwise send peft looking for it on the Hugging Face hub)."""
    required, weights = MODEL_FILES["adapter" if adapter else "full"]
    for group in [*((name,) for name in required), weights, ("tokenizer.json",)]:
        present = [model_dir / n for n in group if (model_dir / n).is_file()]
        if not present:
            raise ModelLoadError(fmt(str(model_dir), "the run's complete saved model", f"{group[0]} missing",
                                     _DAMAGED))
        if any(p.stat().st_size == 0 for p in present):
            raise ModelLoadError(fmt(str(model_dir), "the run's complete saved model", f"{present[0].name} empty",
                                     _DAMAGED))


@contextlib.contextmanager
def _unreadable(model_dir: Path) -> Iterator[None]:
    """A truncated or corrupt file of the saved model becomes a one-line :class:`ModelLoadError`."""
    from safetensors import SafetensorError

    try:
        yield
    except PrivtuneError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ModelLoadError(fmt(str(model_dir), "the run's complete, readable saved model",
                                 f"{type(e).__name__}: {first}", _DAMAGED)) from None
