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

    privacy_unit = ["record", "user"]   # DP methods: what ε protects (one record, or all of one user's)

    [datasets.cs]
    generator = "customersim"
    train = 1000
    test = 200
    records_per_user = 4          # repeat customers (generator option)

    [train]                       # any other `privtune train` option, for every run
    max_grad_norm = 1.0

    [method_options.dp-fft]       # options for one method only (DP likes larger batches)
    batch_size = 64

    [unit_options.user]           # options for the DP runs of one privacy unit (user-level: batch_size counts users)
    batch_size = 16

    [eval]                        # options of `evaluate_run`
    only = ["privacy", "utility", "exposure", "mia"]

    [variants.dp-rgp-ewtune]      # a named variant: a method plus its own options, listed in `methods` by name
    method = "dp-rgp"
    noise_calibration = "edgeworth-estimate"

    [resources]                   # what one run needs where a backend places runs (Ray); not part of run ids
    cpus = 1
    [resources.dp-fft]            # per method or variant, over the shared values
    gpus = 1

Every configuration gets a stable id, ``<readable slug>-<8 hex>``: the hash covers everything that determines the
run (dataset spec, model, method, every training option), so a resumed sweep recognises finished runs and a changed
option gives a new run instead of silently reusing an old one.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privtune.errors import ConfigError, fmt
from privtune.experiments import validate
from privtune.experiments.job import Resources
from privtune.experiments.validate import RESOURCE_KEYS, Checker, did_you_mean, known_methods, method_traits

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: Top-level keys of a study file.
STUDY_KEYS = ("name", "description", "datasets", "models", "methods", "budgets", "lora_ranks", "learning_rates",
              "epochs", "seeds", "batch_size", "max_length", "delta", "accountant", "train", "method_options",
              "eval", "variants", "resources", "privacy_unit", "unit_options")
#: Keys of a generated dataset (the options of `privtune data synth`).
GENERATOR_KEYS = ("generator", "train", "test", "seed", "canary_repeats", "canary_digits", "audit_canaries",
                  "records_per_user")
#: What a DP run protects (`privtune train --privacy-unit`): one record, or all records of one user.
PRIVACY_UNITS = ("record", "user")


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
    base_method: str | None = None     # set when ``method`` names a variant: the registered method it runs
    privacy_unit: str | None = None    # DP runs of a study with ``privacy_unit``: "record" or "user"

    def grid(self) -> dict[str, Any]:
        """The values that vary across the study (stored with every result row)."""
        g = {"dataset": self.dataset, "model": self.model, "method": self.method, "epsilon": self.epsilon,
             "lora_r": self.lora_r, "lr": self.lr, "epochs": self.epochs, "seed": self.seed}
        if self.privacy_unit is not None:
            g["privacy_unit"] = self.privacy_unit
        return g

    def train_config(self, data_dir: str | Path) -> dict[str, Any]:
        """Keyword arguments for :class:`privtune.training.config.TrainConfig`."""
        cfg = {**self.train_options, "data": str(data_dir), "model": self.model,
               "method": self.base_method or self.method,
               "epochs": self.epochs, "seed": self.seed}
        if self.epsilon is not None:
            cfg["epsilon"] = self.epsilon
        if self.lora_r is not None:
            cfg["lora_r"] = self.lora_r
        if self.lr is not None:
            cfg["lr"] = self.lr
        if self.privacy_unit is not None:
            cfg["privacy_unit"] = self.privacy_unit
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, **self.grid(), "train_options": dict(self.train_options),
                **({"base_method": self.base_method} if self.base_method else {})}


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
    variants: dict[str, validate.MethodVariant] = field(default_factory=dict)  # named variants listed in methods
    resources: dict[str, Any] = field(default_factory=dict)  # [resources] as validated: cpus, gpus, per-method tables
    privacy_units: list[str | None] = field(default_factory=lambda: [None])  # DP runs only; [None]: not set
    unit_options: dict[str, dict[str, Any]] = field(default_factory=dict)    # per privacy unit, over the method's
    description: str = ""
    source: str = ""                                # the TOML text, stored with the results
    path: str | None = None

    def expand(self) -> list[RunConfig]:
        """Every run configuration, in a fixed order (file order of datasets, then the lists as written)."""
        runs: list[RunConfig] = []
        for ds in self.datasets.values():
            for model in self.models:
                for method in self.methods:
                    private, adapter = method_traits(self.base_method(method))
                    for eps in (self.budgets if private else [None]):
                        for unit in (self.privacy_units if private else [None]):
                            for r in (self.lora_ranks if adapter else [None]):
                                for lr in self.learning_rates.get(method, [None]):
                                    for ep in self.epochs:
                                        for seed in self.seeds:
                                            runs.append(self._run(ds, model, method, eps, r, lr, ep, seed,
                                                                  private, adapter, unit))
        return runs

    def base_method(self, method: str) -> str:
        """The registered method behind a name of ``methods`` (itself, or a variant's method)."""
        return self.variants[method].method if method in self.variants else method

    def options_of(self, method: str) -> dict[str, Any]:
        """Training options of ``method``: shared ones, then the method's; for a variant, its method's, the
        variant's ``[method_options]`` and its own (last wins)."""
        if method not in self.variants:
            return {**self.train, **self.method_options.get(method, {})}
        var = self.variants[method]
        return {**self.train, **self.method_options.get(var.method, {}), **self.method_options.get(method, {}),
                **var.options}

    def resources_of(self, method: str) -> Resources:
        """What one run of ``method`` asks of the backend: the defaults, ``[resources]``, then the method's table
        (for a variant: its method's, then its own). Where a run executes does not change what it is, so resources
        are not part of run ids."""
        shared = {k: v for k, v in self.resources.items() if k in RESOURCE_KEYS}
        chain = [shared, self.resources.get(self.base_method(method), {}) if method in self.variants else {},
                 self.resources.get(method, {})]
        return Resources(**{k: v for table in chain for k, v in table.items()})

    def _run(self, ds: DatasetSpec, model: str, method: str, eps: float | None, r: int | None, lr: float | None,
             ep: float, seed: int, private: bool, adapter: bool, unit: str | None = None) -> RunConfig:
        options = dict(sorted({**self.options_of(method), **self.unit_options.get(unit or "", {})}.items()))
        if not private:
            options = {k: v for k, v in options.items() if k not in ("delta", "accountant")}
        ident = {"dataset": ds.identity(), "model": model, "method": method, "epsilon": eps, "lora_r": r, "lr": lr,
                 "epochs": ep, "seed": seed, "train": options}
        if unit is not None:   # only then: the ids of studies without `privacy_unit` stay as they were
            ident["privacy_unit"] = unit
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:8]
        parts = [ds.name, model_slug(model), method]
        if eps is not None:
            parts.append(f"eps{_num(eps)}")
        if unit is not None:
            parts.append(unit)
        if r is not None:
            parts.append(f"r{r}")
        if lr is not None:
            parts.append(f"lr{_num(lr)}")
        parts += [f"ep{_num(ep)}", f"s{seed}"]
        slug = re.sub(r"[^a-z0-9._-]+", "_", "-".join(parts).lower())
        return RunConfig(run_id=f"{slug}-{digest}", dataset=ds.name, model=model, method=method, epsilon=eps,
                         lora_r=r, lr=lr, epochs=ep, seed=seed, train_options=options, private=private,
                         adapter=adapter, base_method=self.variants[method].method if method in self.variants
                         else None, privacy_unit=unit)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "datasets": {k: v.to_dict() for k, v in self.datasets.items()}, "models": self.models,
                "methods": self.methods, "budgets": self.budgets, "lora_ranks": self.lora_ranks,
                "learning_rates": self.learning_rates, "epochs": self.epochs, "seeds": self.seeds,
                "train": self.train, "method_options": self.method_options, "eval": self.eval,
                **({"variants": {k: v.to_dict() for k, v in self.variants.items()}} if self.variants else {}),
                **({"resources": self.resources} if self.resources else {}),
                **({"privacy_unit": self.privacy_units} if self.privacy_units != [None] else {}),
                **({"unit_options": self.unit_options} if self.unit_options else {})}


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


def parse_study(data: dict[str, Any], *, base_dir: str | Path = ".", where: str = "study",
                check_paths: bool = True) -> Study:
    """Validate a study given as a dict (the parsed TOML); see :func:`load_study`. ``check_paths=False`` accepts
    dataset paths that do not resolve from ``base_dir`` (re-reading a study's copy in its study directory: the
    configurations and run ids are the same)."""
    c = Checker(where)
    c.unknown(data, STUDY_KEYS, "")
    name = data.get("name", Path(where).stem if where != "study" else "study")
    if not isinstance(name, str) or not re.fullmatch(r"[\w.-]+", name):
        raise c.fail("name", "a name of letters, digits, '.', '_' or '-'", name)
    datasets = _datasets(data.get("datasets"), c, Path(base_dir), check_paths)
    models = c.str_list(data, "models", ["embedded"])
    methods = c.str_list(data, "methods", ["fft", "lora", "dp-fft", "dp-lora"])
    train = validate.train_options(data, c)
    variants = validate.variants(data.get("variants", {}), c, train)
    names = known_methods() + list(variants)
    for m in methods:
        if m not in names:
            raise c.fail("methods", f"a list of known methods or variants ({', '.join(names)})", m,
                         did_you_mean(m, names))
    traits = {m: method_traits(variants[m].method if m in variants else m) for m in methods}
    budgets = c.number_list(data, "budgets", [], allow_empty=True)
    if any(p for p, _ in traits.values()) and not budgets:
        raise c.fail("budgets", "a non-empty list of ε when a DP method is in `methods`", budgets,
                     "Add e.g. budgets = [1, 8].")
    lora_ranks = c.number_list(data, "lora_ranks", [8], integer=True)
    learning_rates = validate.learning_rates(data.get("learning_rates"), c, methods)
    epochs = c.number_list(data, "epochs", [3.0])
    seeds = c.number_list(data, "seeds", [0], integer=True, positive=False)
    method_options = validate.method_options(data.get("method_options", {}), c, methods, train)
    for vname, var in variants.items():  # the variant's options over everything it inherits must be valid
        validate.validate_train({**train, **method_options.get(var.method, {}), **method_options.get(vname, {}),
                                 **var.options, "method": var.method}, c)
    ev = data.get("eval", {})
    if not isinstance(ev, dict):
        raise c.fail("eval", "a table of evaluation options", ev)
    validate.check_eval_options(ev, c)
    resources = validate.resources(data.get("resources", {}), c, methods)
    units = _privacy_units(data, c)
    unit_options = _unit_options(data.get("unit_options", {}), c, units, train)
    desc = data.get("description", "")
    if not isinstance(desc, str):
        raise c.fail("description", "a string", desc)
    return Study(name=name, description=desc, datasets=datasets, models=models, methods=methods, budgets=budgets,
                 lora_ranks=lora_ranks, learning_rates=learning_rates, epochs=epochs, seeds=seeds, train=train,
                 eval=dict(ev), method_options=method_options, variants=variants, resources=resources,
                 privacy_units=units, unit_options=unit_options)


def _privacy_units(data: dict[str, Any], c: Checker) -> list[str | None]:
    """``privacy_unit = "user"`` or ``["record", "user"]``: a grid dimension of the DP methods (passed to training as
    ``privacy_unit``); absent: ``[None]``, training's own default (record)."""
    if "privacy_unit" not in data:
        return [None]
    raw = data["privacy_unit"]
    units = raw if isinstance(raw, list) else [raw]
    if not units or any(u not in PRIVACY_UNITS for u in units) or len(set(units)) != len(units):
        raise c.fail("privacy_unit", f"one of {', '.join(PRIVACY_UNITS)} or a list of them without duplicates", raw,
                     'E.g. privacy_unit = ["record", "user"].')
    return list(units)


def _unit_options(raw: Any, c: Checker, units: list[str | None], train: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``[unit_options.<unit>]``: training options for the DP runs of one privacy unit, over the method's (e.g. a
    user-level ``batch_size`` in users, so that both units sample at the same rate)."""
    if not isinstance(raw, dict):
        raise c.fail("unit_options", "a table of per-unit tables", raw)
    out = {}
    for unit, opts in raw.items():
        if unit not in units:
            raise c.fail(f"unit_options.{unit}", f"one of the study's privacy units ({', '.join(map(str, units))})",
                         unit, "List it in `privacy_unit` first.")
        if not isinstance(opts, dict):
            raise c.fail(f"unit_options.{unit}", "a table of training options", opts)
        validate.check_train_keys(opts, c, f"unit_options.{unit}.", shared=())
        validate.validate_train({**train, **opts}, c)
        out[unit] = dict(opts)
    return out


def _datasets(raw: Any, c: Checker, base_dir: Path, check_paths: bool = True) -> dict[str, DatasetSpec]:
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
            if not check_paths and isinstance(p, str):
                out[name] = DatasetSpec(name=name, path=p)
                continue
            if resolved is None or not (resolved / "dataset.json").is_file():
                raise c.fail(f"{key}.path", "a dataset directory (with dataset.json)", p,
                             "Create it with `privtune data synth` or `privtune data import`.")
            out[name] = DatasetSpec(name=name, path=p, resolved=str(resolved))
            continue
        c.unknown(spec, GENERATOR_KEYS, f"{key}.")
        gen = spec["generator"]
        if gen not in GENERATORS:
            raise c.fail(f"{key}.generator", f"one of {', '.join(GENERATORS.names())}", gen,
                         did_you_mean(gen, GENERATORS.names()))
        opts = {k: v for k, v in spec.items() if k != "generator"}
        for k, v in opts.items():
            lo = 1 if k in ("train", "canary_digits") else 0
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise c.fail(f"{key}.{k}", "a positive integer" if lo else "a non-negative integer", v)
        out[name] = DatasetSpec(name=name, generator=gen, options=dict(sorted(opts.items())))
    return out


