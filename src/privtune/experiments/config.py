"""Studies: a TOML file describing a grid of runs, validated on load and expanded into run configurations.

A study names datasets (a generator spec, generated into the study directory, or an existing dataset directory),
base models, methods, privacy budgets ε (DP methods only; a non-DP method runs once per remaining combination),
LoRA ranks (adapter methods only), learning rates, epochs and seeds, plus options shared by every run::

    name = "tradeoff"
    models = ["embedded"]
    methods = ["fft", "lora", "dp-fft", "dp-lora"]
    budgets = [1, 8]              # ε, certified; DP methods only
    lora_ranks = [8]
    epochs = [3]
    seeds = [0]
    batch_size = 16
    max_length = 128

    [datasets.cs]
    generator = "customersim"
    train = 1000
    test = 200

    [train]                       # any other `privtune train` option, for every run
    max_grad_norm = 1.0

    [method_options.dp-fft]       # options for one method only (DP likes larger batches)
    batch_size = 64

    [eval]                        # options of `evaluate_run`
    only = ["privacy", "utility", "exposure", "mia"]

Every configuration gets a stable id, ``<readable slug>-<8 hex>``: the hash covers everything that determines the
run (dataset spec, model, method, every training option), so a resumed sweep recognises finished runs and a changed
option gives a new run instead of silently reusing an old one.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privtune.errors import ConfigError, fmt

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: Top-level keys of a study file.
STUDY_KEYS = ("name", "description", "datasets", "models", "methods", "budgets", "lora_ranks", "learning_rates",
              "epochs", "seeds", "batch_size", "max_length", "delta", "accountant", "train", "method_options",
              "eval")
#: Keys of a generated dataset (the options of `privtune data synth`).
GENERATOR_KEYS = ("generator", "train", "test", "seed", "canary_repeats", "canary_digits", "audit_canaries")
#: Training options the grid sets itself; they cannot appear in [train].
GRID_OWNED = ("data", "method", "model", "epsilon", "lora_r", "lr", "epochs", "seed", "steps")


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"Did you mean `{close[0]}`?" if close else f"Known: {', '.join(choices)}."


class _Checker:
    """Validation helpers whose errors name the key and the study file."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, key: str, constraint: str, found: Any, fix: str | None = None) -> ConfigError:
        fix = f"{fix} (in {self.where})" if fix else f"(in {self.where})"
        return ConfigError(fmt(key, constraint, found, fix))

    def unknown(self, table: dict[str, Any], allowed: Any, prefix: str) -> None:
        for k in table:
            if k not in allowed:
                raise self.fail(f"{prefix}{k}", f"a known key ({', '.join(allowed)})", k, _did_you_mean(k, allowed))

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


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset of the study: generated from ``generator`` (+ options) or read from ``path``."""

    name: str
    generator: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    path: str | None = None            # as written in the study file
    resolved: str | None = None        # absolute path of ``path``

    def identity(self) -> dict[str, Any]:
        """What makes the data: hashed into run ids (the path as written, so ids do not depend on the machine)."""
        if self.generator:
            return {"generator": self.generator, **self.options}
        return {"path": self.path}

    def location(self, study_dir: str | Path) -> Path:
        """Where the dataset directory is (generated ones live in ``STUDY_DIR/data/<name>``)."""
        return Path(self.resolved) if self.resolved else Path(study_dir) / "data" / self.name

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.identity()}


@dataclass(frozen=True)
class RunConfig:
    """One point of the grid: what to train and how to evaluate it."""

    run_id: str
    dataset: str
    model: str
    method: str
    epsilon: float | None
    lora_r: int | None
    lr: float | None
    epochs: float
    seed: int
    train_options: dict[str, Any]      # every other TrainConfig option (shared by the study)
    private: bool = False
    adapter: bool = False

    def grid(self) -> dict[str, Any]:
        """The values that vary across the study (stored with every result row)."""
        return {"dataset": self.dataset, "model": self.model, "method": self.method, "epsilon": self.epsilon,
                "lora_r": self.lora_r, "lr": self.lr, "epochs": self.epochs, "seed": self.seed}

    def train_config(self, data_dir: str | Path) -> dict[str, Any]:
        """Keyword arguments for :class:`privtune.training.config.TrainConfig`."""
        cfg = {**self.train_options, "data": str(data_dir), "model": self.model, "method": self.method,
               "epochs": self.epochs, "seed": self.seed}
        if self.epsilon is not None:
            cfg["epsilon"] = self.epsilon
        if self.lora_r is not None:
            cfg["lora_r"] = self.lora_r
        if self.lr is not None:
            cfg["lr"] = self.lr
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, **self.grid(), "train_options": dict(self.train_options)}


@dataclass
class Study:
    """A validated study file (see the module docstring)."""

    name: str
    datasets: dict[str, DatasetSpec]
    models: list[str]
    methods: list[str]
    budgets: list[float]
    lora_ranks: list[int]
    learning_rates: dict[str, list[float | None]]   # per method; [None] means the method's default
    epochs: list[float]
    seeds: list[int]
    train: dict[str, Any]                           # batch_size, max_length, delta, accountant and [train]
    eval: dict[str, Any]
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)   # per method, over ``train``
    description: str = ""
    source: str = ""                                # the TOML text, stored with the results
    path: str | None = None

    def expand(self) -> list[RunConfig]:
        """Every run configuration, in a fixed order (file order of datasets, then the lists as written)."""
        runs: list[RunConfig] = []
        for ds in self.datasets.values():
            for model in self.models:
                for method in self.methods:
                    private, adapter = method_traits(method)
                    for eps in (self.budgets if private else [None]):
                        for r in (self.lora_ranks if adapter else [None]):
                            for lr in self.learning_rates.get(method, [None]):
                                for ep in self.epochs:
                                    for seed in self.seeds:
                                        runs.append(self._run(ds, model, method, eps, r, lr, ep, seed,
                                                              private, adapter))
        return runs

    def _run(self, ds: DatasetSpec, model: str, method: str, eps: float | None, r: int | None, lr: float | None,
             ep: float, seed: int, private: bool, adapter: bool) -> RunConfig:
        options = dict(sorted({**self.train, **self.method_options.get(method, {})}.items()))
        if not private:
            options = {k: v for k, v in options.items() if k not in ("delta", "accountant")}
        ident = {"dataset": ds.identity(), "model": model, "method": method, "epsilon": eps, "lora_r": r, "lr": lr,
                 "epochs": ep, "seed": seed, "train": options}
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:8]
        parts = [ds.name, model_slug(model), method]
        if eps is not None:
            parts.append(f"eps{_num(eps)}")
        if r is not None:
            parts.append(f"r{r}")
        if lr is not None:
            parts.append(f"lr{_num(lr)}")
        parts += [f"ep{_num(ep)}", f"s{seed}"]
        slug = re.sub(r"[^a-z0-9._-]+", "_", "-".join(parts).lower())
        return RunConfig(run_id=f"{slug}-{digest}", dataset=ds.name, model=model, method=method, epsilon=eps,
                         lora_r=r, lr=lr, epochs=ep, seed=seed, train_options=options, private=private,
                         adapter=adapter)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "datasets": {k: v.to_dict() for k, v in self.datasets.items()}, "models": self.models,
                "methods": self.methods, "budgets": self.budgets, "lora_ranks": self.lora_ranks,
                "learning_rates": self.learning_rates, "epochs": self.epochs, "seeds": self.seeds,
                "train": self.train, "method_options": self.method_options, "eval": self.eval}


def _num(x: float) -> str:
    return f"{x:g}".replace("+", "")


def model_slug(spec: str) -> str:
    """A short readable name for a model spec: ``EleutherAI/pythia-70m`` → ``pythia-70m``."""
    tail = spec.rstrip("/").rsplit("/", 1)[-1]
    return tail.replace(":", "_") or "model"


def load_study(path: str | Path) -> Study:
    """Read and validate a study TOML file; relative dataset paths are relative to the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(fmt("STUDY", "an existing TOML file", str(path)))
    text = path.read_text("utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(fmt("STUDY", "valid TOML", str(path), f"({e}).")) from None
    study = parse_study(data, base_dir=path.parent, where=str(path))
    study.source, study.path = text, str(path.resolve())
    return study


def parse_study(data: dict[str, Any], *, base_dir: str | Path = ".", where: str = "study") -> Study:
    """Validate a study given as a dict (the parsed TOML); see :func:`load_study`."""
    c = _Checker(where)
    c.unknown(data, STUDY_KEYS, "")
    name = data.get("name", Path(where).stem if where != "study" else "study")
    if not isinstance(name, str) or not re.fullmatch(r"[\w.-]+", name):
        raise c.fail("name", "a name of letters, digits, '.', '_' or '-'", name)
    datasets = _datasets(data.get("datasets"), c, Path(base_dir))
    models = c.str_list(data, "models", ["embedded"])
    methods = c.str_list(data, "methods", ["fft", "lora", "dp-fft", "dp-lora"])
    for m in methods:
        if m not in known_methods():
            raise c.fail("methods", f"a list of known methods ({', '.join(known_methods())})", m,
                         _did_you_mean(m, known_methods()))
    traits = {m: method_traits(m) for m in methods}
    budgets = c.number_list(data, "budgets", [], allow_empty=True)
    if any(p for p, _ in traits.values()) and not budgets:
        raise c.fail("budgets", "a non-empty list of ε when a DP method is in `methods`", budgets,
                     "Add e.g. budgets = [1, 8].")
    lora_ranks = c.number_list(data, "lora_ranks", [8], integer=True)
    learning_rates = _learning_rates(data.get("learning_rates"), c, methods)
    epochs = c.number_list(data, "epochs", [3.0])
    seeds = c.number_list(data, "seeds", [0], integer=True, positive=False)
    train = _train_options(data, c)
    method_options = _method_options(data.get("method_options", {}), c, methods, train)
    ev = data.get("eval", {})
    if not isinstance(ev, dict):
        raise c.fail("eval", "a table of evaluation options", ev)
    _check_eval_options(ev, c)
    desc = data.get("description", "")
    if not isinstance(desc, str):
        raise c.fail("description", "a string", desc)
    return Study(name=name, description=desc, datasets=datasets, models=models, methods=methods, budgets=budgets,
                 lora_ranks=lora_ranks, learning_rates=learning_rates, epochs=epochs, seeds=seeds, train=train,
                 eval=dict(ev), method_options=method_options)


def _datasets(raw: Any, c: _Checker, base_dir: Path) -> dict[str, DatasetSpec]:
    if not isinstance(raw, dict) or not raw:
        raise c.fail("datasets", "a table of named datasets", raw,
                     'Add e.g. [datasets.cs] with generator = "customersim" or path = "data/cs".')
    from privtune.data.synth import GENERATORS

    out: dict[str, DatasetSpec] = {}
    for name, spec in raw.items():
        key = f"datasets.{name}"
        if not re.fullmatch(r"[\w.-]+", name):
            raise c.fail(key, "named with letters, digits, '.', '_' or '-'", name)
        if not isinstance(spec, dict) or ("generator" in spec) == ("path" in spec):
            raise c.fail(key, "a table with exactly one of `generator` or `path`", spec)
        if "path" in spec:
            c.unknown(spec, ("path",), f"{key}.")
            p = spec["path"]
            resolved = (base_dir / p).resolve() if isinstance(p, str) else None
            if resolved is None or not (resolved / "dataset.json").is_file():
                raise c.fail(f"{key}.path", "a dataset directory (with dataset.json)", p,
                             "Create it with `privtune data synth` or `privtune data import`.")
            out[name] = DatasetSpec(name=name, path=p, resolved=str(resolved))
            continue
        c.unknown(spec, GENERATOR_KEYS, f"{key}.")
        gen = spec["generator"]
        if gen not in GENERATORS:
            raise c.fail(f"{key}.generator", f"one of {', '.join(GENERATORS.names())}", gen,
                         _did_you_mean(gen, GENERATORS.names()))
        opts = {k: v for k, v in spec.items() if k != "generator"}
        for k, v in opts.items():
            lo = 1 if k in ("train", "canary_digits") else 0
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise c.fail(f"{key}.{k}", "a positive integer" if lo else "a non-negative integer", v)
        out[name] = DatasetSpec(name=name, generator=gen, options=dict(sorted(opts.items())))
    return out


def _learning_rates(raw: Any, c: _Checker, methods: list[str]) -> dict[str, list[float | None]]:
    """A list for every method, or a table ``{method = [...]}``; absent: each method's default."""
    if raw is None:
        return {m: [None] for m in methods}
    if isinstance(raw, dict):
        for m in raw:
            if m not in methods:
                raise c.fail(f"learning_rates.{m}", f"one of the study's methods ({', '.join(methods)})", m,
                             _did_you_mean(m, methods))
        return {m: (c.number_list(raw, m, []) if m in raw else [None]) for m in methods}
    lrs = c.number_list({"learning_rates": raw}, "learning_rates", [])
    return {m: list(lrs) for m in methods}


def _train_options(data: dict[str, Any], c: _Checker) -> dict[str, Any]:
    train = {"batch_size": c.positive_int(data, "batch_size", 16), "max_length": c.positive_int(data, "max_length", 128)}
    delta = data.get("delta", 1e-5)
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < 1:
        raise c.fail("delta", "a number in (0, 1)", delta)
    train["delta"] = float(delta)
    train["accountant"] = data.get("accountant", "pld")
    extra = data.get("train", {})
    if not isinstance(extra, dict):
        raise c.fail("train", "a table of training options", extra)
    _check_train_keys(extra, c, "train.", shared=tuple(train))
    train.update(extra)
    _validate_train(train, c)
    return train


def _check_train_keys(opts: dict[str, Any], c: _Checker, prefix: str, shared: tuple[str, ...]) -> None:
    from privtune.training.config import TrainConfig

    allowed = sorted(set(TrainConfig.__dataclass_fields__) - set(GRID_OWNED))
    for k in opts:
        if k in GRID_OWNED:
            raise c.fail(f"{prefix}{k}", "set by the study grid, not in this table", k,
                         "Use the top-level lists (methods, budgets, lora_ranks, learning_rates, epochs, seeds).")
        if k in shared:
            raise c.fail(f"{prefix}{k}", "given once", k, f"It is also a top-level key; keep `{k}` there.")
    c.unknown(opts, allowed, prefix)


def _validate_train(options: dict[str, Any], c: _Checker) -> None:
    """Let the training configuration check the values (accountant names, engines, ranges)."""
    from privtune.training.config import TrainConfig

    try:
        TrainConfig.from_dict({**options, "data": "."}).validate()
    except ConfigError as e:
        raise ConfigError(f"{e} (in {c.where})") from None


def _method_options(raw: Any, c: _Checker, methods: list[str], train: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``[method_options.<method>]``: training options for one method, over the shared ones."""
    if not isinstance(raw, dict):
        raise c.fail("method_options", "a table of per-method tables", raw)
    out = {}
    for m, opts in raw.items():
        if m not in methods:
            raise c.fail(f"method_options.{m}", f"one of the study's methods ({', '.join(methods)})", m,
                         _did_you_mean(m, methods))
        if not isinstance(opts, dict):
            raise c.fail(f"method_options.{m}", "a table of training options", opts)
        _check_train_keys(opts, c, f"method_options.{m}.", shared=())
        _validate_train({**train, **opts}, c)
        out[m] = dict(opts)
    return out


def _check_eval_options(ev: dict[str, Any], c: _Checker) -> None:
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
