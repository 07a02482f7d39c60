"""The contents of run.json: what was asked, what happened, what it cost.

Efficiency figures: ``wall_time_s`` (seconds of the training sessions, summed over resumes, setup excluded),
``peak_memory_mb`` (CPU: the process's peak resident set size, ``getrusage`` ``ru_maxrss``; GPU: CUDA max allocated —
``peak_memory_kind`` says which), ``tokens_per_s`` (non-padding tokens through forward+backward per second of step
time), ``examples_per_s`` (examples per second of step time; for DP runs the *expected* count, steps × expected batch
size, which the plan fixes), ``trainable_params``/``total_params`` (tied weights once; LoRA totals include the frozen
base).

What a DP run releases: the model and everything the plan fixes (ε from the ledger, σ, C, q, steps, expected batch
size). The training statistics in :data:`PRIVATE_STATS` (step losses, token and example counts, empty batches, clip
fraction) are computed from the private data without noise, so they are outside the DP guarantee: a DP run leaves them
``null`` and says so in ``dp_diagnostics``; with ``dp_diagnostics = true`` they are recorded there, beside the label
:data:`OUTSIDE_DP`, and nowhere else. Non-DP runs publish them at the top level as usual. (Checkpoints keep the
counters for resume; they are internal state, not a release.)
"""

from __future__ import annotations

import resource
import sys
import time
import uuid
from typing import Any

import torch
from rich.progress import TextColumn

from privtune import __version__
from privtune.models.loading import count_params
from privtune.training import estimate_calibration
from privtune.training.evaluate import evaluate_split
from privtune.training.privacy import certified, privacy_warnings
from privtune.training.randomness import run_fields as randomness_fields
from privtune.training.trainer import snapshot_losses

NEIGHBOURING = "add_or_remove_one"
#: user-level DP: neighbouring datasets differ by all records of one user
NEIGHBOURING_USER = "add_or_remove_one_user"
#: run.json keys computed from the training data without noise (withheld from DP runs unless --dp-diagnostics)
PRIVATE_STATS = ("final_train_loss", "train_loss_curve", "tokens", "tokens_per_s", "examples", "epochs_run",
                 "empty_batches", "clip_fraction")
#: the label every diagnostic of a DP run carries, wherever it appears
OUTSIDE_DP = "outside the DP guarantee (computed from private data without noise)"
WITHHELD = ("not released: computed from private data without noise, outside the DP guarantee "
            "(--dp-diagnostics records them here, labelled)")


def diagnostics(private: bool, enabled: bool) -> dict[str, Any] | None:
    """The ``dp_diagnostics`` object of run.json before the statistics are known (None for non-DP runs)."""
    if not private:
        return None
    if enabled:
        return {"enabled": True, "label": OUTSIDE_DP}
    return {"enabled": False, "label": WITHHELD, "withheld": list(PRIVATE_STATS)}


def release_stats(plan: Any, stats: dict[str, Any]) -> dict[str, Any]:
    """Top-level run.json fields for the training statistics ``stats``: as they are without DP; for a DP run all
    ``null``, and (with diagnostics) the values under ``dp_diagnostics`` beside their label."""
    private = plan.privacy is not None
    diag = diagnostics(private, plan.cfg.dp_diagnostics)
    if not private:
        return {**stats, "dp_diagnostics": diag}
    if diag["enabled"]:
        diag.update(stats)
    return {**dict.fromkeys(stats), "dp_diagnostics": diag}


def loss_text(plan: Any) -> Any:
    """How the progress bar shows a step's loss: plainly without DP, labelled with diagnostics, else withheld."""
    if plan.privacy is None:
        return lambda loss: "-" if loss is None else f"{loss:.3f}"
    if plan.cfg.dp_diagnostics:
        return lambda loss: "-" if loss is None else f"{loss:.3f} (diagnostic, outside the DP guarantee)"
    return lambda loss: "withheld (DP)"


def progress_columns() -> list[TextColumn]:
    return [TextColumn("loss {task.fields[loss]}"), TextColumn("ε {task.fields[eps]}")]


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10), "process_rss"


def _autocast(device: torch.device) -> str | None:
    """The reduced precision the forward passes ran in (``bfloat16`` on GPUs that support it), or None."""
    from privtune.models.loading import autocast_dtype

    dtype = autocast_dtype(device)
    return None if dtype is None else str(dtype).removeprefix("torch.")


def stamp(plan: Any) -> dict[str, Any]:
    """Written beside the saved model: who made it and under which privacy terms."""
    p = plan.privacy
    return {"privtune_version": __version__, "method": plan.cfg.method, "base_model": plan.cfg.model,
            "accountant": p.accountant if p else None, "neighbouring": _neighbouring(plan),
            "sampling": "poisson" if p else "shuffle", "privacy_unit": _unit(plan) if p else None}


def _neighbouring(plan: Any) -> str | None:
    if plan.privacy is None:
        return None
    return NEIGHBOURING_USER if plan.user_level else NEIGHBOURING


def initial_record(plan: Any, s: Any) -> dict[str, Any]:
    cfg, p = plan.cfg, plan.privacy
    trainable, total = count_params(s.model)
    return {
        "privtune_version": __version__, "run_id": uuid.uuid4().hex,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "status": "running",
        "error": None, "method": cfg.method, "adapter": plan.method.adapter, "private": plan.method.private,
        "model": cfg.model, "model_source": s.loaded.source, "model_arch": s.loaded.arch, "task": cfg.task,
        "dataset": str(cfg.data), "dataset_name": plan.dataset.info.name,
        # a hash of the whole training set identifies it exactly (membership of one record can be tested against
        # it): DP runs keep it in internal resume state only (training.run.RESUME_FILE)
        "dataset_hash": None if p else plan.dataset.info.content_hash, "class_labels": plan.labels,
        "epsilon": None, "epsilon_certified": None, "target_epsilon": cfg.epsilon if p else None,
        "delta": p.delta if p else None, "noise_multiplier": p.noise_multiplier if p else None,
        "max_grad_norm": p.max_grad_norm if p else None, "sample_rate": plan.sample_rate,
        "accountant": p.accountant if p else None, "sampling": "poisson" if p else "shuffle",
        "neighbouring": _neighbouring(plan), "noise_calibrated": p.calibrated if p else None,
        "calibrated_steps": p.calibrated_steps if p else None, "reserve_steps": p.reserve_steps if p else None,
        "secure_rng": cfg.secure_rng, **randomness_fields(p),
        "privacy_warnings": privacy_warnings(p, dataset_size=plan.n_units, unit=_unit(plan)) + plan.unit_warnings,
        **unit_fields(plan),
        "dp_engine": cfg.dp_engine if p else None, "privacy_plan": p.to_dict() if p else None,
        "steps": 0, "planned_steps": plan.steps, "ledger_steps": 0 if p else None,
        "epochs": cfg.epochs if cfg.steps is None else plan.steps * plan.sample_rate,
        "n_train": plan.n_train, "batch_size": cfg.batch_size, "expected_batch_size": cfg.batch_size,
        "expected_batch_unit": "users" if plan.user_level else "records",
        "physical_batch_size": plan.physical_batch_size, "max_length": cfg.max_length, "learning_rate": plan.lr,
        "lr_schedule": cfg.lr_schedule, "warmup_steps": cfg.warmup_steps, "weight_decay": cfg.weight_decay,
        "lora": {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
                 "targets": _lora_targets(s.model)} if plan.method.adapter else None,
        "seed": cfg.seed, "device": str(s.loaded.device), "autocast": _autocast(s.loaded.device),
        "checkpoint_every": plan.checkpoint_every, "resumes": 0,
        "trainable_params": trainable, "total_params": total,
        "wall_time_s": 0.0, "train_time_s": 0.0, "peak_memory_mb": None, "peak_memory_kind": None,
        "tokens": None if p else 0, "tokens_per_s": None, "examples_per_s": None, "final_train_loss": None,
        "train_loss_curve": None if p else [], "dp_diagnostics": diagnostics(p is not None, cfg.dp_diagnostics),
        "test_loss": None, "n_test": None, "config": cfg.to_dict(), "model_dir": "model",
        "ledger_file": "ledger.json" if p else None,
        **plan.method.record_fields(s.model), **estimate_calibration.plan_fields(p),
    }


def _unit(plan: Any) -> str:
    return "user" if plan.user_level else "record"


def unit_fields(plan: Any) -> dict[str, Any]:
    """run.json's privacy unit (DP runs; null otherwise): ``privacy_unit``; user-level runs: ``n_users`` (the
    accountant's N), ``max_records_per_user`` (the cap per step, null: all of a user's records),
    ``max_records_per_user_seen`` (the most records one user owns), ``user_key``; record-level runs on data naming
    owners: ``max_records_per_user_seen`` and, once steps are taken, ``user_group_epsilon``
    (:func:`group_fields`)."""
    if plan.privacy is None:
        return {"privacy_unit": None}
    cfg = plan.cfg
    out: dict[str, Any] = {"privacy_unit": _unit(plan), "user_key": cfg.user_key,
                           "max_records_per_user_seen": plan.max_records_seen}
    if plan.user_level:
        out.update(n_users=plan.n_units, max_records_per_user=cfg.max_records_per_user)
    return out


def group_fields(plan: Any, privacy: Any) -> dict[str, Any]:
    """Record-level DP on data where a user owns k > 1 records: the group-privacy bound for such a user, from the
    ledger (:func:`privtune.accounting.group.group_epsilon`; a certified upper bound, labelled ``bound``)."""
    k = plan.max_records_seen
    if plan.privacy is None or plan.user_level or not k or k < 2 or privacy is None or not privacy.steps:
        return {}
    from privtune.accounting.group import group_epsilon

    g = group_epsilon(privacy.ledger, delta=plan.privacy.delta, group_size=k)
    return {"user_group_epsilon": g["epsilon"], "user_group_epsilon_kind": "bound", "user_group_size": k,
            "user_group_delta": g["delta"], "user_group_method": g["method"],
            "user_group_note": f"record-level DP: a user with {k} records is protected at epsilon "
                               f"{g['epsilon']:.3g} (group-privacy upper bound, delta {g['delta']:g}), not at the "
                               "per-record epsilon"}


def _lora_targets(model: Any) -> list[str] | None:
    cfg = getattr(model, "peft_config", {}).get("default")
    return sorted(cfg.target_modules) if cfg is not None else None


def final_fields(s: Any, outcome: Any, privacy: Any, wall: float) -> dict[str, Any]:
    st = outcome.state
    peak, kind = peak_memory_mb(s.loaded.device)
    # DP: the realised batch sizes are private; the expected ones (steps × expected batch) are fixed by the plan
    # (user-level: expected records, q * sum_u min(|u|, M), not users)
    per_step = getattr(s.sampler, "expected_records", None) or s.sampler.expected_batch_size
    examples = st.step * per_step if privacy is not None else st.examples
    out: dict[str, Any] = {
        "status": outcome.status, "error": None, "steps": st.step, "wall_time_s": round(wall, 3),
        "train_time_s": round(st.train_time_s, 3), "peak_memory_mb": round(peak, 1), "peak_memory_kind": kind,
        "examples_per_s": round(examples / st.train_time_s, 2) if st.train_time_s else None,
    }
    stats: dict[str, Any] = {
        "tokens": st.tokens, "tokens_per_s": round(st.tokens / st.train_time_s, 1) if st.train_time_s else None,
        "examples": st.examples, "epochs_run": st.examples / s.plan.n_train,
        "final_train_loss": snapshot_losses(st.loss_curve), "train_loss_curve": st.loss_curve,
        "empty_batches": st.empty_batches,
    }
    if privacy is not None:
        stats["clip_fraction"] = st.clip_clipped / st.clip_n if st.clip_n else None
    out.update(release_stats(s.plan, stats))
    if privacy is not None:
        eps = privacy.epsilon()
        out.update(spent_fields(privacy, eps))
        out.update(group_fields(s.plan, privacy))
        out.update(estimate_calibration.final_fields(privacy.plan, privacy.ledger, out["epsilon"] if eps else None))
    if s.test is not None and len(s.test):
        labels = s.plan.labels
        out.update(evaluate_split(s.model, s.test, task=s.plan.cfg.task, device=s.loaded.device,
                                  n_classes=len(labels) if labels else None))
    return out


def spent_fields(privacy: Any, eps: Any = None) -> dict[str, Any]:
    """What the ledger has spent (finished runs, and failed or interrupted ones: every step taken costs)."""
    eps = eps if eps is not None else privacy.epsilon()
    out: dict[str, Any] = {
        "ledger_steps": privacy.steps, "epsilon": certified(eps) if eps is not None else 0.0,
        "epsilon_certified": True, "certified_by": (eps.accountant if eps.certified else "pld") if eps else None}
    if eps is not None and not eps.certified:  # an estimate is shown beside the certified bound, labelled
        out.update(epsilon_estimate=eps.epsilon, epsilon_estimate_accountant=eps.accountant)
    return out
