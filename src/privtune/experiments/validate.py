"""Validation helpers for study files: one-line errors that name the key, the file and the closest known key.

Training options are checked by :class:`privtune.training.config.TrainConfig` itself and evaluation options against
:class:`privtune.evaluation.evaluate.EvalConfig`, so a study accepts exactly what ``privtune train`` and
``privtune eval`` accept.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Any

from privtune.errors import ConfigError, fmt

#: Training options the grid sets itself; they cannot appear in [train].
GRID_OWNED = ("data", "method", "model", "epsilon", "lora_r", "lr", "epochs", "seed", "steps", "privacy_unit")


def did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"Did you mean `{close[0]}`?" if close else f"Known: {', '.join(choices)}."


class Checker:
    """Validation helpers whose errors name the key and the study file."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, key: str, constraint: str, found: Any, fix: str | None = None) -> ConfigError:
        fix = f"{fix} (in {self.where})" if fix else f"(in {self.where})"
        return ConfigError(fmt(key, constraint, found, fix))

    def unknown(self, table: dict[str, Any], allowed: Any, prefix: str) -> None:
        for k in table:
            if k not in allowed:
                raise self.fail(f"{prefix}{k}", f"a known key ({', '.join(allowed)})", k, did_you_mean(k, allowed))

    def number_list(self, d: dict[str, Any], key: str, default: list[Any], *, integer: bool = False,
                    positive: bool = True, allow_empty: bool = False) -> list[Any]:
        v = d.get(key, default)
        if not isinstance(v, list):
            v = [v]  # a single value is a one-element grid
        kind = "integers" if integer else "numbers"
        ok = all(isinstance(x, int) if integer else isinstance(x, (int, float)) for x in v)
        ok = ok and not any(isinstance(x, bool) for x in v)
        ok = ok and all(math.isfinite(x) and (x > 0 if positive else x >= 0) for x in v) if ok else False
        if not ok or (not v and not allow_empty):
            sign = "positive" if positive else "non-negative"
            raise self.fail(key, f"a {'' if allow_empty else 'non-empty '}list of {sign} {kind}", v)
        if len(set(v)) != len(v):
            raise self.fail(key, "a list without duplicates", v)
        return [int(x) for x in v] if integer else [float(x) if isinstance(x, float) else x for x in v]

    def str_list(self, d: dict[str, Any], key: str, default: list[str]) -> list[str]:
        v = d.get(key, default)
        if not isinstance(v, list):
            v = [v]
        if not v or not all(isinstance(x, str) and x.strip() for x in v):
            raise self.fail(key, "a non-empty list of non-empty strings", v)
        if len(set(v)) != len(v):
            raise self.fail(key, "a list without duplicates", v)
        return list(v)

    def positive_int(self, d: dict[str, Any], key: str, default: int) -> int:
        v = d.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise self.fail(key, "a positive integer", v)
        return v


def method_traits(name: str) -> tuple[bool, bool]:
    """``(private, adapter)`` of a registered training method (raises the registry's error for unknown names)."""
    from privtune.training.methods import METHODS

    cls = METHODS.get(name)
    return bool(cls.private), bool(cls.adapter)


def known_methods() -> list[str]:
    from privtune.training.methods import METHODS

    return METHODS.names()


def learning_rates(raw: Any, c: Checker, methods: list[str]) -> dict[str, list[float | None]]:
    """A list for every method, or a table ``{method = [...]}``; absent: each method's default."""
    if raw is None:
        return {m: [None] for m in methods}
    if isinstance(raw, dict):
        for m in raw:
            if m not in methods:
                raise c.fail(f"learning_rates.{m}", f"one of the study's methods ({', '.join(methods)})", m,
                             did_you_mean(m, methods))
        return {m: (c.number_list(raw, m, []) if m in raw else [None]) for m in methods}
    lrs = c.number_list({"learning_rates": raw}, "learning_rates", [])
    return {m: list(lrs) for m in methods}


def train_options(data: dict[str, Any], c: Checker) -> dict[str, Any]:
    train = {"batch_size": c.positive_int(data, "batch_size", 16), "max_length": c.positive_int(data, "max_length", 128)}
    delta = data.get("delta", 1e-5)
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < 1:
        raise c.fail("delta", "a number in (0, 1)", delta)
    train["delta"] = float(delta)
    train["accountant"] = data.get("accountant", "pld")
    extra = data.get("train", {})
    if not isinstance(extra, dict):
        raise c.fail("train", "a table of training options", extra)
    check_train_keys(extra, c, "train.", shared=tuple(train))
    train.update(extra)
    validate_train(train, c)
    return train


def check_train_keys(opts: dict[str, Any], c: Checker, prefix: str, shared: tuple[str, ...]) -> None:
    from privtune.training.config import TrainConfig

    allowed = sorted(set(TrainConfig.__dataclass_fields__) - set(GRID_OWNED))
    for k in opts:
        if k in GRID_OWNED:
            raise c.fail(f"{prefix}{k}", "set by the study grid, not in this table", k,
                         "Use the top-level lists (methods, budgets, lora_ranks, learning_rates, epochs, seeds, "
                         "privacy_unit).")
        if k in shared:
            raise c.fail(f"{prefix}{k}", "given once", k, f"It is also a top-level key; keep `{k}` there.")
    c.unknown(opts, allowed, prefix)


def validate_train(options: dict[str, Any], c: Checker) -> None:
    """Let the training configuration check the values (accountant names, engines, ranges)."""
    from privtune.training.config import TrainConfig

    try:
        TrainConfig.from_dict({**options, "data": "."}).validate()
    except ConfigError as e:
        raise ConfigError(f"{e} (in {c.where})") from None


def method_options(raw: Any, c: Checker, methods: list[str], train: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``[method_options.<method>]``: training options for one method, over the shared ones."""
    if not isinstance(raw, dict):
        raise c.fail("method_options", "a table of per-method tables", raw)
    out = {}
    for m, opts in raw.items():
        if m not in methods:
            raise c.fail(f"method_options.{m}", f"one of the study's methods ({', '.join(methods)})", m,
                         did_you_mean(m, methods))
        if not isinstance(opts, dict):
            raise c.fail(f"method_options.{m}", "a table of training options", opts)
        check_train_keys(opts, c, f"method_options.{m}.", shared=())
        validate_train({**train, **opts}, c)
        out[m] = dict(opts)
    return out


@dataclass(frozen=True)
class MethodVariant:
    """``[variants.<name>]``: a registered ``method`` run with its own training options, under its own name (in
    run ids, result rows and the report), e.g. dp-rgp with EW-Tune's noise calibration beside plain dp-rgp."""

    method: str
    options: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **self.options}


def variants(raw: Any, c: Checker, train: dict[str, Any]) -> dict[str, MethodVariant]:
    if not isinstance(raw, dict):
        raise c.fail("variants", "a table of named variants", raw)
    out = {}
    for name, spec in raw.items():
        key = f"variants.{name}"
        if not re.fullmatch(r"[\w.-]+", name) or name in known_methods():
            raise c.fail(key, "named with letters, digits, '.', '_' or '-', and not like a registered method", name)
        if not isinstance(spec, dict) or not isinstance(spec.get("method"), str):
            raise c.fail(key, "a table with `method` (a registered method) and training options", spec,
                         'E.g. method = "dp-rgp" and noise_calibration = "edgeworth-estimate".')
        if spec["method"] not in known_methods():
            raise c.fail(f"{key}.method", f"a registered method ({', '.join(known_methods())})", spec["method"],
                         did_you_mean(spec["method"], known_methods()))
        opts = {k: v for k, v in spec.items() if k != "method"}
        check_train_keys(opts, c, f"{key}.", shared=())
        out[name] = MethodVariant(spec["method"], opts)
    return out


def check_eval_options(ev: dict[str, Any], c: Checker) -> None:
    """``only`` plus the fields of :class:`privtune.evaluation.evaluate.EvalConfig`; ``[eval.extraction]`` holds
    those of :class:`~privtune.evaluation.extraction.ExtractionConfig`."""
    from dataclasses import fields

    from privtune.evaluation.evaluate import EvalConfig, parse_only
    from privtune.evaluation.extraction import ExtractionConfig

    allowed = ["only", *(f.name for f in fields(EvalConfig))]
    c.unknown(ev, allowed, "eval.")
    if "only" in ev:
        try:
            parse_only(ev["only"])
        except ConfigError as e:
            raise ConfigError(f"{e} (in {c.where}, eval.only)") from None
    ext = ev.get("extraction", {})
    if not isinstance(ext, dict):
        raise c.fail("eval.extraction", "a table of extraction options", ext)
    c.unknown(ext, [f.name for f in fields(ExtractionConfig)], "eval.extraction.")
    try:
        eval_config(ev)
    except TypeError as e:
        raise c.fail("eval", "options of the right types", str(e)) from None


def eval_config(ev: dict[str, Any]) -> tuple[Any, Any]:
    """``(only, EvalConfig)`` from a study's ``[eval]`` table."""
    from privtune.evaluation.evaluate import EvalConfig
    from privtune.evaluation.extraction import ExtractionConfig

    opts = dict(ev)
    only = opts.pop("only", None)
    ext = opts.pop("extraction", None)
    cfg = EvalConfig(**opts)
    if ext:
        cfg.extraction = ExtractionConfig(**ext)
    return only, cfg


#: Keys of ``[resources]`` and of its per-method tables.
RESOURCE_KEYS = ("cpus", "gpus")


def resources(raw: Any, c: Checker, methods: list[str]) -> dict[str, Any]:
    """``[resources]``: ``cpus`` and ``gpus`` of every run, and ``[resources.<method>]`` tables for one method (or
    variant) of the study. Quantities are positive (``gpus`` may be 0); above 1 they are whole numbers, as Ray
    requires (``gpus = 0.5`` puts two runs on one GPU)."""
    if not isinstance(raw, dict):
        raise c.fail("resources", "a table of `cpus`, `gpus` and per-method tables", raw,
                     "E.g. [resources] cpus = 2, and [resources.dp-fft] gpus = 1.")
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if k in RESOURCE_KEYS:
            out[k] = _quantity(v, c, f"resources.{k}", zero=k == "gpus")
        elif k in methods:
            if not isinstance(v, dict):
                raise c.fail(f"resources.{k}", "a table of `cpus` and `gpus`", v)
            c.unknown(v, RESOURCE_KEYS, f"resources.{k}.")
            out[k] = {q: _quantity(x, c, f"resources.{k}.{q}", zero=q == "gpus") for q, x in v.items()}
        else:
            raise c.fail(f"resources.{k}", f"`cpus`, `gpus` or one of the study's methods ({', '.join(methods)})", k,
                         did_you_mean(k, [*RESOURCE_KEYS, *methods]))
    return out


def _quantity(v: Any, c: Checker, key: str, *, zero: bool) -> float | int:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v >= 0 if zero else v > 0)
    if not ok or (v > 1 and v != int(v)):
        sign = "non-negative" if zero else "positive"
        raise c.fail(key, f"a {sign} number, whole above 1 (fractions of one share it)", v)
    return int(v) if v == int(v) else float(v)
