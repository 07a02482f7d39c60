"""The configuration of one training run: CLI options, a TOML file (``--config``) or Python keywords.

Privacy quantities: ``epsilon``/``delta`` are the target of the (epsilon, delta)-DP guarantee under add/remove-one
neighbouring; ``noise_multiplier`` sigma is the Gaussian noise std divided by the clipping norm ``max_grad_norm`` C;
the sample rate is ``q = batch_size / N`` (expected batch over training-set size).

Privacy unit (``privacy_unit``): ``record`` (default; neighbouring datasets differ by one record) or ``user``
(they differ by all records of one user, named by ``meta.<user_key>``): then ``N`` counts users, ``batch_size`` is
the expected number of *users* per step, each sampled user contributes at most ``max_records_per_user`` records
(all by default) through one clipped gradient, and epsilon is per user.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from privtune.errors import ConfigError, fmt

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LR_SCHEDULES = ("linear", "cosine", "constant")
PRIVACY_UNITS = ("record", "user")
RGP_CARRIERS = ("history", "weight")


@dataclass
class TrainConfig:
    data: str = ""
    method: str = "lora"
    model: str = "embedded"
    task: str = "lm"
    # privacy (DP methods)
    epsilon: float | None = None
    delta: float = 1e-5
    noise_multiplier: float | None = None
    max_grad_norm: float = 1.0
    accountant: str = "pld"
    noise_calibration: str = "certified"  # or "edgeworth-estimate": EW-Tune's, research only (see docs/ewtune.md)
    secure_rng: bool = False             # noise and masks straight from the OS CSPRNG (Opacus' secure mode)
    noise_seed: int | None = None        # reproducible noise and masks: no guarantee against anyone who knows it
    dp_engine: str = "bk"                 # per-example gradient engine (docs/performance.md)
    dp_diagnostics: bool = False          # DP: record the non-noised training statistics, labelled (docs/training.md)
    privacy_unit: str = "record"          # what one DP guarantee protects: a record, or a user (all their records)
    max_records_per_user: int | None = None  # user-level: records of a sampled user used per step (default all)
    user_key: str = "user"                # the meta key naming a record's owner
    # schedule
    epochs: float | None = 3.0
    steps: int | None = None
    batch_size: int = 16                 # logical batch (expected batch under Poisson sampling)
    physical_batch_size: int | None = None  # micro-batch bound for memory; default min(batch_size, 16)
    max_length: int = 128
    lr: float | None = None              # default: the method's
    lr_schedule: str = "linear"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    # LoRA
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: list[str] | None = None
    # RGP (rgp, dp-rgp): gradient-carrier rank, power iterations, what the carriers are computed from
    rgp_rank: int = 1
    rgp_power_iters: int = 1
    rgp_carriers: str = "history"
    # run
    seed: int = 0
    checkpoint_every: int | None = None  # steps; default about 20 checkpoints per run
    resume_reserve: int | None = None    # DP: steps of budget kept for re-execution after a crash; default checkpoint_every
    device: str = "auto"
    allow_download: bool = False
    eval_test: bool = True               # score the test split after training (loss; accuracy for classification)
    # in-training evaluation (RUN/trajectory.jsonl, privtune.training.trajectory)
    trajectory: bool = True              # evaluate privacy and utility at several points during training
    eval_points: int = 5                 # evenly spaced evaluation steps (epoch ends and step 0 are added)
    trajectory_records: int = 50         # fixed evaluation subset per split (train, test)
    extra: dict[str, Any] = field(default_factory=dict)  # method plug-ins' own options

    def validate(self) -> "TrainConfig":
        from privtune.training.methods import METHODS

        if self.method not in METHODS:
            METHODS.get(self.method)  # raises the one-line error listing the choices
        if not self.data:
            raise ConfigError(fmt("--data", "a dataset directory", self.data))
        if self.task not in ("lm", "classification"):
            raise ConfigError(fmt("--task", "one of lm, classification", self.task))
        if self.epsilon is not None and not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ConfigError(fmt("--epsilon", "a positive finite number", self.epsilon))
        if not (0 < self.delta < 1):
            raise ConfigError(fmt("--delta", "in (0, 1)", self.delta))
        from privtune.training.estimate_calibration import NOISE_CALIBRATIONS

        if self.noise_calibration not in NOISE_CALIBRATIONS:
            raise ConfigError(fmt("--noise-calibration", f"one of {', '.join(NOISE_CALIBRATIONS)}",
                                  self.noise_calibration))
        if self.noise_seed is not None:
            if isinstance(self.noise_seed, bool) or not isinstance(self.noise_seed, int) or self.noise_seed < 0:
                raise ConfigError(fmt("--noise-seed", "a non-negative integer", self.noise_seed))
            if self.secure_rng:
                raise ConfigError(fmt("--noise-seed", "used without --secure-rng (reproducible noise cannot come "
                                      "from the OS CSPRNG)", self.noise_seed, "Drop one of the two."))
        if self.privacy_unit not in PRIVACY_UNITS:
            raise ConfigError(fmt("--privacy-unit", f"one of {', '.join(PRIVACY_UNITS)}", self.privacy_unit))
        if self.max_records_per_user is not None:
            if self.max_records_per_user < 1:
                raise ConfigError(fmt("--max-records-per-user", "a positive integer", self.max_records_per_user))
            if self.privacy_unit != "user":
                raise ConfigError(fmt("--max-records-per-user", "given with --privacy-unit user",
                                      self.max_records_per_user, "Add --privacy-unit user or drop it."))
        from privtune.data.users import check_user_key

        check_user_key(self.user_key)
        if not isinstance(self.dp_diagnostics, bool):
            raise ConfigError(fmt("dp_diagnostics", "true or false", self.dp_diagnostics))
        if self.noise_multiplier is not None and not self.noise_multiplier > 0:
            raise ConfigError(fmt("--noise-multiplier", "positive", self.noise_multiplier))
        if not self.max_grad_norm > 0:
            raise ConfigError(fmt("--max-grad-norm", "positive", self.max_grad_norm))
        if self.batch_size < 1:
            raise ConfigError(fmt("--batch-size", "a positive integer", self.batch_size))
        if self.physical_batch_size is not None and self.physical_batch_size < 1:
            raise ConfigError(fmt("--physical-batch-size", "a positive integer", self.physical_batch_size))
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(fmt("--lr", "positive", self.lr))
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(fmt("--lr-schedule", f"one of {', '.join(LR_SCHEDULES)}", self.lr_schedule))
        if self.warmup_steps < 0 or self.weight_decay < 0:
            raise ConfigError(fmt("--warmup-steps/--weight-decay", "non-negative",
                                  (self.warmup_steps, self.weight_decay)))
        if self.lora_r < 1 or self.lora_alpha <= 0 or not (0 <= self.lora_dropout < 1):
            raise ConfigError(fmt("LoRA options", "r >= 1, alpha > 0, 0 <= dropout < 1",
                                  (self.lora_r, self.lora_alpha, self.lora_dropout)))
        if isinstance(self.rgp_rank, bool) or not isinstance(self.rgp_rank, int) or self.rgp_rank < 1:
            raise ConfigError(fmt("--rank", "an integer >= 1 (the RGP gradient-carrier rank)", self.rgp_rank))
        if isinstance(self.rgp_power_iters, bool) or not isinstance(self.rgp_power_iters, int) \
                or self.rgp_power_iters < 1:
            raise ConfigError(fmt("--power-iters", "an integer >= 1", self.rgp_power_iters))
        if self.rgp_carriers not in RGP_CARRIERS:
            raise ConfigError(fmt("--rgp-carriers", f"one of {', '.join(RGP_CARRIERS)}", self.rgp_carriers))
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ConfigError(fmt("--checkpoint-every", "a positive number of steps", self.checkpoint_every))
        if self.resume_reserve is not None and self.resume_reserve < 0:
            raise ConfigError(fmt("--resume-reserve", "a non-negative number of steps", self.resume_reserve))
        if not isinstance(self.trajectory, bool):
            raise ConfigError(fmt("trajectory", "true or false", self.trajectory))
        if isinstance(self.eval_points, bool) or not isinstance(self.eval_points, int) or self.eval_points < 1:
            raise ConfigError(fmt("--eval-points", "a positive integer", self.eval_points,
                                  "Use --no-trajectory to turn in-training evaluation off."))
        if isinstance(self.trajectory_records, bool) or not isinstance(self.trajectory_records, int) \
                or self.trajectory_records < 2:
            raise ConfigError(fmt("trajectory_records", "an integer >= 2", self.trajectory_records))
        if self.steps is None and (self.epochs is None or not self.epochs > 0):
            raise ConfigError(fmt("--epochs", "positive (or give --steps)", self.epochs))
        if self.steps is not None and self.steps < 1:
            raise ConfigError(fmt("--steps", "a positive integer", self.steps))
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "config") -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        norm = {k.replace("-", "_"): v for k, v in d.items()}
        unknown = sorted(set(norm) - names)
        if unknown:
            raise ConfigError(fmt(f"{where} keys", f"among {', '.join(sorted(names))}", unknown))
        return cls(**{k: _typed(k, v, where) for k, v in norm.items()})

    @classmethod
    def from_toml(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(fmt("--config", "an existing TOML file", str(path)))
        try:
            d = tomllib.loads(path.read_text("utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(fmt("--config", "valid TOML", str(path), f"({e}).")) from None
        d = d.get("train", d)  # a [train] table or top-level keys
        return cls.from_dict(d, where=str(path))


def _typed(key: str, value: Any, where: str) -> Any:
    """``value`` checked against the field's annotation (a TOML file or a JSON config can hold anything): a
    number for float fields (an int is one), an integer for int fields (a float with an integral value is taken
    as one), a string, a bool, a list of strings or a table; None where the field allows it."""
    kinds = {t.strip() for t in _ANNOTATIONS[key].split("|")}
    if value is None and "None" in kinds:
        return value
    if "bool" in kinds and isinstance(value, bool):
        return value
    if not isinstance(value, bool):
        if "int" in kinds and (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            return int(value)
        if "float" in kinds and isinstance(value, (int, float)):
            return value
    if "str" in kinds and isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    if "list[str]" in kinds and isinstance(value, list) and all(isinstance(x, str) for x in value):
        return value
    if "dict[str, Any]" in kinds and isinstance(value, dict):
        return value
    names = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
             "list[str]": "a list of strings", "dict[str, Any]": "a table", "None": "unset"}
    want = " or ".join(names[k] for k in sorted(kinds, key=lambda k: k == "None"))
    raise ConfigError(fmt(key, want, value, f"Fix it in {where}." if where != "config" else None))


_ANNOTATIONS = {f.name: str(f.type) for f in fields(TrainConfig)}
