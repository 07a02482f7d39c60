"""Everything a run needs, built in the one correct order, from a config (fresh run) or run.json (resume).

Order (it matters for DP with LoRA): load base model -> apply the method (LoRA wrapping) -> move to device ->
attach the DP engine to the *wrapped* model -> build the optimizer over the wrapped model's trainable parameters.
Every check that can fail on bad input runs here, before a run directory exists.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from privtune.data.schema import Dataset, load_dataset
from privtune.errors import ConfigError, DataError, fmt
from privtune.models.loading import LoadedModel, load_model
from privtune.training.config import TrainConfig
from privtune.training.data import Encoded, class_labels, encode
from privtune.training.dp import get_engine
from privtune.training.dp.engine import DPEngine
from privtune.training.methods import Method, get_method
from privtune.training.privacy import PrivacyPlan, check_budget_feasible, plan_privacy
from privtune.training.randomness import DPRandomness
from privtune.training.sampling import PoissonSampler, ShuffleSampler, UserPoissonSampler, planned_steps


@dataclass
class Plan:
    """Decisions derived from the config and the dataset (no model weights involved)."""

    cfg: TrainConfig
    method: Method
    dataset: Dataset
    labels: list[Any] | None
    n_train: int
    steps: int
    checkpoint_every: int
    physical_batch_size: int
    lr: float
    privacy: PrivacyPlan | None
    users: list[list[int]] | None = None      # user-level DP: the record indices of each user
    max_records_seen: int | None = None       # the most training records one user owns (None: no owners named)
    unit_warnings: list[str] = field(default_factory=list)  # e.g. one user owning most of the data

    @property
    def user_level(self) -> bool:
        return self.users is not None

    @property
    def n_units(self) -> int:
        """N of the accountant: training records, or users (user-level DP)."""
        return len(self.users) if self.users is not None else self.n_train

    @property
    def sample_rate(self) -> float:
        return self.cfg.batch_size / self.n_units


def make_plan(cfg: TrainConfig, *, privacy: PrivacyPlan | None = None) -> Plan:
    """Validate ``cfg`` against its dataset and decide steps, checkpoints and (DP) the noise."""
    cfg.validate()
    method = get_method(cfg.method)
    if cfg.dp_engine and method.private:
        get_engine(cfg.dp_engine)
    ds = load_dataset(cfg.data)
    if ds.info.task != cfg.task:
        raise ConfigError(fmt("--task", f"the dataset's task ({ds.info.task})", cfg.task,
                              f"Pass --task {ds.info.task} or use another dataset."))
    labels = None
    if cfg.task == "classification":
        labels = class_labels(ds)
        ds.split("test")  # accuracy and macro-F1 need a test split: DataError naming the fix
        if len(labels) < 2:
            raise DataError(fmt("labels", "at least two classes", labels))
    n = len(ds.train)
    users, seen, unit_warnings = _units(cfg, method, ds)
    n_units, unit = (len(users), "users") if users is not None else (n, "training records")
    if cfg.batch_size > n_units:
        raise ConfigError(fmt("--batch-size", f"at most the number of {unit} ({n_units})", cfg.batch_size,
                              "Lower --batch-size or add data."))
    steps = planned_steps(n=n_units, batch_size=cfg.batch_size, epochs=cfg.epochs if cfg.steps is None else None,
                          steps=cfg.steps)
    every = cfg.checkpoint_every or max(1, math.ceil(steps / 20))
    plan = Plan(cfg=cfg, method=method, dataset=ds, labels=labels, n_train=n, steps=steps, checkpoint_every=every,
                physical_batch_size=cfg.physical_batch_size or min(cfg.batch_size, 16),
                lr=cfg.lr if cfg.lr is not None else method.default_lr, privacy=privacy, users=users,
                max_records_seen=seen, unit_warnings=unit_warnings)
    if method.private and plan.privacy is None:
        reserve = cfg.resume_reserve if cfg.resume_reserve is not None else every
        from privtune.accounting.events import AccountingWarning
        from privtune.training.estimate_calibration import UnsafeCalibrationWarning

        with warnings.catch_warnings():  # a run states them in run.json's privacy_warnings (the CLI prints them)
            warnings.simplefilter("ignore", AccountingWarning)
            warnings.simplefilter("ignore", UnsafeCalibrationWarning)
            plan.privacy = plan_privacy(epsilon=cfg.epsilon, delta=cfg.delta, noise_multiplier=cfg.noise_multiplier,
                                        max_grad_norm=cfg.max_grad_norm, sample_rate=plan.sample_rate, steps=steps,
                                        reserve=reserve, accountant=cfg.accountant, secure_rng=cfg.secure_rng,
                                        dataset_size=n_units, noise_calibration=cfg.noise_calibration,
                                        noise_seed=cfg.noise_seed)
        check_budget_feasible(plan.privacy, steps)
    elif not method.private and (cfg.epsilon is not None or cfg.noise_multiplier is not None
                                 or cfg.noise_calibration != "certified"):
        raise ConfigError(fmt("--method", "a DP method (dp-fft, dp-lora) when --epsilon or --noise-multiplier is "
                              "given", cfg.method, f"Use dp-{cfg.method} or drop the privacy options."))
    return plan


def _units(cfg: TrainConfig, method: Method, ds: Dataset) -> tuple[list[list[int]] | None, int | None, list[str]]:
    """User-level DP: the users (record indices per owner), refused when records name no owner; every DP run: the
    most records one user owns (for the group bound of a record-level run); warnings (one user owning most of the
    data)."""
    from privtune.data.users import dominant_user_warning, group_by_user, user_summary

    if cfg.privacy_unit == "user":
        if not method.private:
            raise ConfigError(fmt("--privacy-unit user", "used with a DP method (dp-fft, dp-lora, dp-rgp)",
                                  cfg.method, "A non-private run has no privacy unit."))
        groups = group_by_user(ds.train, cfg.user_key)
        warn = dominant_user_warning(groups, len(ds.train))
        return groups, max(len(g) for g in groups), [warn] if warn else []
    if not method.private:
        return None, None, []
    summary = user_summary(ds.train, cfg.user_key)
    return None, summary.max_records_per_user, []


@dataclass
class Session:
    plan: Plan
    loaded: LoadedModel
    model: torch.nn.Module
    data: Encoded
    test: Encoded | None
    sampler: Any
    engine: DPEngine | None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    randomness: DPRandomness | None = None  # DP: this session's source of noise and masks (its key is never saved)


def lr_lambda(schedule: str, warmup: int, total: int):
    def f(step: int) -> float:  # step = number of scheduler steps taken so far
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        frac = min(1.0, (step - warmup) / max(1, total - warmup))
        return 1.0 - frac if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * frac))
    return f


def load_base(plan: Plan) -> LoadedModel:
    cfg = plan.cfg
    return load_model(cfg.model, task=cfg.task, num_labels=len(plan.labels) if plan.labels else None,
                      device=cfg.device, allow_download=cfg.allow_download)


def build_session(plan: Plan, loaded: LoadedModel | None = None) -> Session:
    """Build model, data, sampler, engine, optimizer and schedule in the correct order."""
    cfg = plan.cfg
    loaded = loaded or load_base(plan)
    torch.manual_seed(cfg.seed)  # adapter initialisation and dropout are reproducible
    model = plan.method.prepare(loaded.model, cfg=cfg, task=cfg.task).to(loaded.device)
    data = encode(loaded.tokenizer, plan.dataset.train, max_length=cfg.max_length, task=cfg.task, labels=plan.labels)
    test = None
    if cfg.eval_test and "test" in plan.dataset.splits:
        test = encode(loaded.tokenizer, plan.dataset.test, max_length=cfg.max_length, task=cfg.task,
                      labels=plan.labels)
    engine, randomness = None, None
    if plan.privacy is not None:
        # the mechanism's coins: a fresh secret per session unless the plan asks otherwise (never written down)
        randomness = DPRandomness.for_plan(plan.privacy)
        if plan.users is not None:
            import numpy as np

            sampler: Any = UserPoissonSampler(users=tuple(np.asarray(u, dtype=np.int64) for u in plan.users),
                                              sample_rate=plan.privacy.sample_rate, randomness=randomness,
                                              max_records_per_user=cfg.max_records_per_user)
        else:
            sampler = PoissonSampler(n=plan.n_train, sample_rate=plan.privacy.sample_rate, randomness=randomness)
        engine = plan.method.make_engine(model, cfg=cfg, max_grad_norm=plan.privacy.max_grad_norm)
    else:
        sampler = ShuffleSampler(n=plan.n_train, batch_size=cfg.batch_size, seed=cfg.seed)
    optimizer = torch.optim.AdamW(plan.method.optimizer_params(model), lr=plan.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.lr_schedule, cfg.warmup_steps, plan.steps))
    return Session(plan=plan, loaded=loaded, model=model, data=data, test=test, sampler=sampler, engine=engine,
                   optimizer=optimizer, scheduler=scheduler, randomness=randomness)
