"""The evaluation runner: every measure of a fine-tuned model against its base model, into ``eval.json``.

``evaluate_models`` works on model objects (any Hugging Face causal LM, a peft model included);
``evaluate_run`` loads a run directory and its base model, evaluates, and writes ``RUN/eval.json`` atomically
— all stages are computed before anything is written, so a failure leaves no partial file.

Per-token scores are computed once per (model, split) and shared by the privacy, utility and membership
stages.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from rich.markup import escape

from privtune import __version__
from privtune.data.schema import Dataset, Record, load_dataset
from privtune.errors import ConfigError, DataError, ModelLoadError, fmt
from privtune.evaluation import cache
from privtune.evaluation.audit import AuditSpec, audit_scores, one_run_audit
from privtune.evaluation.exposure import Canary, canary_exposure
from privtune.evaluation.extraction import ExtractionConfig, extraction_measures
from privtune.evaluation.memorization import privacy_measures, utility_measures
from privtune.evaluation.mia import membership_inference
from privtune.evaluation import users as per_user
from privtune.evaluation.tokens import TokenScores, encode, score_records
from privtune.utils.fsio import atomic_write_json
from privtune.utils.progress import console

EVAL_FILE = "eval.json"
STAGES = ("privacy", "utility", "exposure", "mia", "extraction", "audit", "users")
NEEDS_SPANS = {"privacy", "extraction", "users"}
RUN_KEYS = ("method", "model", "epsilon", "delta", "accountant")   # run.json keys copied into eval.json's `run`
OTHER_DIR = "eval-other"   # evaluations on data the run was not trained on (see evaluate_run)
DEFAULT_AUDIT_DELTA = 1e-5


@dataclass
class EvalConfig:
    """What to evaluate and how hard (every figure in eval.json records the config it came from)."""

    max_length: int = 512                 # tokens per record (longer ones are truncated and counted)
    max_records: int | None = 2000        # per split, a seeded subsample beyond this (None: all)
    exposure_method: str = "auto"         # auto | exact | extrapolated
    exposure_max_exact: int = 2_000_000
    exposure_samples: int = 10_000
    exposure_base: bool = True            # also the base model's exposure (the chance level)
    audit_confidence: float = 0.95
    audit_delta: float | None = None      # default: the run's delta, else 1e-5
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    cache_base: bool = True               # reuse the base model's scores across runs (.cache)
    user_key: str | None = None           # meta field naming each record's owner (None: run.json's, else "user")
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_only(only: str | Iterable[str] | None) -> set[str] | None:
    """``"privacy,mia"`` or an iterable of stage names -> a validated set (None = every stage)."""
    if only is None:
        return None
    names = [s.strip() for s in (only.split(",") if isinstance(only, str) else only) if s.strip()]
    bad = sorted(set(names) - set(STAGES))
    if bad or not names:
        raise ConfigError(fmt("--only", f"a comma-separated subset of {','.join(STAGES)}",
                              ",".join(bad) or only))
    return set(names)


def _is_canary(r: Record) -> bool:
    return r.is_canary or bool(r.meta.get("audit"))


def _subsample(records: list[Record], n: int | None, seed: int) -> list[Record]:
    if n is None or len(records) <= n:
        return records
    idx = np.sort(np.random.default_rng(seed).choice(len(records), n, replace=False))
    return [records[i] for i in idx]


def check_tokenizers(tokenizer: Any, base_tokenizer: Any | None) -> None:
    """The fine-tuned and the base model must read the same token ids (an added padding token aside)."""
    if base_tokenizer is None or base_tokenizer is tokenizer:
        return
    fv, bv = tokenizer.get_vocab(), base_tokenizer.get_vocab()
    differ = [t for t, i in bv.items() if fv.get(t) != i]
    extra = set(fv) - set(bv) - {tokenizer.pad_token}
    if differ or extra:
        raise ConfigError(fmt("tokenizer", "the same for the fine-tuned and the base model",
                              f"{len(differ) + len(extra)} of {len(fv)} tokens that differ",
                              "Evaluate the run against the base model it was trained from."))


class _Scores:
    """Lazily computed per-token scores, one per (model, split), sharing one tokenization per split; the base
    model's come from the on-disk cache when ``cache_base``."""

    def __init__(self, models: dict[str, Any], tokenizer: Any, splits: dict[str, list[Record]],
                 max_length: int, cache_base: bool):
        self.models, self.tokenizer, self.splits, self.max_length = models, tokenizer, splits, max_length
        self.cache_base = cache_base
        self._enc: dict[str, list[Any]] = {}
        self._scores: dict[tuple[str, str], TokenScores] = {}

    def _compute(self, model: str, split: str) -> TokenScores:
        recs = self.splits[split]
        if split not in self._enc:
            self._enc[split] = encode(self.tokenizer, recs, max_length=self.max_length)
        return score_records(self.models[model], self.tokenizer, recs, encoded=self._enc[split],
                             max_length=self.max_length, description=f"{split} tokens ({model})")

    def __call__(self, model: str, split: str) -> TokenScores:
        if (model, split) not in self._scores:
            if model == "base" and self.cache_base:
                k = cache.key("scores", model=cache.model_fingerprint(self.models[model]),
                              tokenizer=cache.tokenizer_fingerprint(self.tokenizer),
                              records=cache.records_fingerprint(self.splits[split]),
                              max_length=self.max_length)
                self._scores[model, split] = cache.cached_scores(k, lambda: self._compute(model, split))
            else:
                self._scores[model, split] = self._compute(model, split)
        return self._scores[model, split]

    @property
    def truncated(self) -> dict[str, int]:
        return {split: ts.n_truncated for (m, split), ts in self._scores.items() if m == "fine-tuned"}


def evaluate_models(model: Any, base_model: Any, tokenizer: Any, dataset: Dataset, *,
                    only: str | Iterable[str] | None = None, config: EvalConfig | None = None,
                    run_info: dict[str, Any] | None = None, base_tokenizer: Any | None = None,
                    on_stage: Callable[[str, float], None] | None = None,
                    previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate ``model`` (fine-tuned) against ``base_model`` on ``dataset``; returns the eval.json object.

    ``only`` picks stages (default: all). Without ``only``, stages whose inputs the dataset lacks (a canary,
    audit canaries) are skipped with a note; asked for explicitly, they are an error. ``run_info`` (run.json)
    supplies the certified ε and δ for the audit. ``previous`` (the eval file an ``only`` run updates) supplies the
    exposure the ``users`` stage reads when ``exposure`` is not among the stages.
    """
    cfg = config or EvalConfig()
    stages = parse_only(only)
    explicit = stages is not None
    stages = stages or set(STAGES)
    run_info = run_info or {}
    check_tokenizers(tokenizer, base_tokenizer)
    if stages & NEEDS_SPANS or "mia" in stages:
        if not dataset.has_spans:
            raise DataError(fmt("dataset", "tagged with sensitive spans (privacy measures need them)",
                                "no span in any record",
                                "Tag it, e.g. `privtune data import DIR --tagger regex --out DATA`."))
    canary = audit = None
    out: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    if "exposure" in stages:
        try:
            canary = Canary.from_info(dataset.info.canary)
            if not any(r.is_canary and r.meta.get("canary_kind", "main") == "main" for r in dataset.train):
                raise DataError(fmt("train split", "holding the canary records dataset.json describes",
                                    "none", "Regenerate the dataset with canaries."))
        except DataError as e:
            if explicit:
                raise
            skipped["exposure"] = f"skipped: {e}"
    if "audit" in stages:
        try:
            audit = AuditSpec.from_info(dataset.info.audit or {})
        except DataError as e:
            if explicit:
                raise
            skipped["audit"] = f"skipped: {e}"

    user_key = per_user.user_key_of(cfg.user_key, run_info)
    train = [r for r in dataset.train if not _is_canary(r)]
    test = [r for r in dataset.split("test") if not _is_canary(r)]
    try:
        owners = per_user.find_owners({"train": train, "test": test}, user_key)
    except DataError:
        if "users" in stages:
            raise
        owners = None   # the same subsample as without owners; only the users stage needs them all named
    if owners is None:
        train = _subsample(train, cfg.max_records, cfg.seed)
        test = _subsample(test, cfg.max_records, cfg.seed + 1)
    else:  # whole people: a person's records are evaluated together or not at all
        for split, recs, seed in (("train", train, cfg.seed), ("test", test, cfg.seed + 1)):
            keep = per_user.subsample_by_user(owners[split], cfg.max_records, seed)
            recs[:] = [recs[i] for i in keep]
            owners[split] = [owners[split][i] for i in keep]
    scores = _Scores({"fine-tuned": model, "base": base_model}, tokenizer, {"train": train, "test": test},
                     cfg.max_length, cfg.cache_base)
    timings: dict[str, float] = {}

    def stage(name: str, fn: Callable[[], dict[str, Any]]) -> None:
        if name not in stages or name in skipped:
            return
        t0 = time.perf_counter()
        out[name] = fn()
        timings[name] = round(time.perf_counter() - t0, 3)
        if on_stage:
            on_stage(name, timings[name])

    # where the data names owners, intervals resample people (a person's records share their secrets)
    stage("privacy", lambda: privacy_measures(
        train=scores("fine-tuned", "train"), train_base=scores("base", "train"),
        test=scores("fine-tuned", "test"), test_base=scores("base", "test"), owners=owners).to_dict())
    stage("utility", lambda: utility_measures(test=scores("fine-tuned", "test"),
                                              test_base=scores("base", "test"), owners=owners).to_dict())

    def _exposure() -> dict[str, Any]:
        kw = dict(method=cfg.exposure_method, max_exact=cfg.exposure_max_exact,
                  n_samples=cfg.exposure_samples, seed=cfg.seed)
        res = canary_exposure(model, tokenizer, canary, description="exposure", **kw)
        if cfg.exposure_base:
            base_exposure = lambda: canary_exposure(base_model, tokenizer, canary,  # noqa: E731
                                                    description="exposure (base)", **kw).to_dict()
            if cfg.cache_base:
                k = cache.key("exposure", model=cache.model_fingerprint(base_model),
                              tokenizer=cache.tokenizer_fingerprint(tokenizer),
                              canary=[canary.spec.to_dict(), canary.secret], **kw)
                res.exposure_bits_base = cache.cached_json(k, base_exposure)["exposure_bits"]
            else:
                res.exposure_bits_base = base_exposure()["exposure_bits"]
        d = res.to_dict()
        d["repeats"] = dataset.info.canary.get("repeats")
        return d

    stage("exposure", _exposure)
    stage("mia", lambda: membership_inference(
        members=train, nonmembers=test, members_ft=scores("fine-tuned", "train"),
        nonmembers_ft=scores("fine-tuned", "test"), members_base=scores("base", "train"),
        nonmembers_base=scores("base", "test")).to_dict())
    stage("extraction", lambda: extraction_measures(model, base_model, tokenizer, train=train, others=test,
                                                    cfg=cfg.extraction, max_length=cfg.max_length).to_dict())

    def _audit() -> dict[str, Any]:
        certified = run_info.get("epsilon")
        delta = cfg.audit_delta if cfg.audit_delta is not None else run_info.get("delta")
        delta = delta if delta is not None else DEFAULT_AUDIT_DELTA
        s = audit_scores(model, base_model, tokenizer, audit, max_length=cfg.max_length)
        return one_run_audit(s, audit.included, delta=float(delta), confidence=cfg.audit_confidence,
                             certified_epsilon=None if certified is None else float(certified)).to_dict()

    stage("audit", _audit)
    stage("users", lambda: per_user.users_section(
        key=user_key, train=train, test=test, owners=owners, scores=scores, canary_train=dataset.train,
        exposure=out.get("exposure") or (previous or {}).get("exposure")))
    for name, note in skipped.items():
        out[name] = {"skipped": note}
    header = {"privtune_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "dataset": {"name": dataset.info.name, "content_hash": dataset.info.content_hash,
                          "path": str(dataset.path) if dataset.path else None},
              "run": {k: run_info.get(k) for k in RUN_KEYS
                      if k in run_info},
              "records": {"train": len(train), "test": len(test), "truncated": scores.truncated},
              "stages": [s for s in STAGES if s in out], "timings_s": timings, "config": cfg.to_dict()}
    return _finite({**header, **{s: out[s] for s in STAGES if s in out}})


def _finite(obj: Any) -> Any:
    """NaN and infinities (e.g. an AUC with no non-member) become null: eval.json stays strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def evaluate_run(run_dir: str | Path, data_dir: str | Path, *, only: str | Iterable[str] | None = None,
                 config: EvalConfig | None = None, write: bool = True, other_data: bool = False,
                 on_stage: Callable[[str, float], None] | None = None) -> dict[str, Any]:
    """Evaluate a run directory on a dataset and write ``RUN/eval.json`` (atomically) unless ``write=False``.

    The dataset must be the one the run was trained on (its content hash is in run.json): measures of
    memorisation compare training records with test records, and on other data they mean something else. With
    ``other_data=True`` another dataset is evaluated anyway and the result goes beside eval.json, to
    ``RUN/eval-other/<name>-<hash>.json`` (see :func:`eval_path`), with ``dataset.trained_on: false`` and the run's
    own ``dataset.run_dataset_hash``; eval.json is left as it is.

    With ``only``, the stages asked for replace theirs in the existing file and the others are kept, so stages
    can be (re)computed one at a time; a file that cannot be read, or that describes another run or dataset, is
    refused before anything is computed rather than replaced (run without ``only`` to rewrite it whole).
    """
    from privtune.training.run import read_record, trained_dataset_hash

    run_dir = Path(run_dir)
    parse_only(only)  # fail on a typo or a missing run before loading anything
    if not (run_dir / "run.json").is_file():
        raise ModelLoadError(fmt("RUN", "a run directory written by `privtune train` (with run.json)",
                                 str(run_dir), "Train one with `privtune train --data DATA --out RUN`."))
    dataset = load_dataset(data_dir)
    record = read_record(run_dir)
    trained_on = _check_dataset(record, trained_dataset_hash(run_dir, record), dataset, data_dir,
                                other_data=other_data)
    path = eval_path(run_dir, dataset.info.name, dataset.info.content_hash, trained_on=trained_on)
    if "users" in (parse_only(only) or set(STAGES)):   # a key missing on some records fails before any loading
        per_user.find_owners({s: [r for r in dataset.split(s) if not _is_canary(r)] for s in ("train", "test")},
                             per_user.user_key_of((config or EvalConfig()).user_key, record))
    old = None
    if only is not None:
        old = _previous(path, dataset.info.content_hash, _run_header(record))  # refuse now, not after the work
    model, tokenizer, info, base, base_tok = _load_run(run_dir)
    result = evaluate_models(model, base, tokenizer, dataset, only=only, config=config, run_info=info,
                             base_tokenizer=base_tok, on_stage=on_stage, previous=old)
    result["run"]["path"] = str(run_dir)
    result["dataset"]["trained_on"] = trained_on
    if not trained_on:
        result["dataset"]["run_dataset_hash"] = record.get("dataset_hash")
    if only is not None:
        result = merge_previous(path, result)
    if write:
        atomic_write_json(path, result)
    return result


def eval_path(run_dir: str | Path, dataset_name: str, content_hash: str | None, *, trained_on: bool) -> Path:
    """``RUN/eval.json`` for the run's own dataset; ``RUN/eval-other/<name>-<hash[:12]>.json`` for another."""
    if trained_on:
        return Path(run_dir) / EVAL_FILE
    slug = re.sub(r"[^\w.-]+", "_", dataset_name or "dataset")
    return Path(run_dir) / OTHER_DIR / f"{slug}-{(content_hash or 'nohash')[:12]}.json"


def _check_dataset(record: dict[str, Any], want: str | None, dataset: Dataset, data_dir: str | Path, *,
                   other_data: bool) -> bool:
    """Whether ``dataset`` is the one the run was trained on (content hash ``want``); a ConfigError when it is not
    and ``other_data`` is not set. Runs that predate the hash count as trained on it."""
    have = dataset.info.content_hash
    if want is None or want == have:
        return True
    if not other_data:
        raise ConfigError(fmt("--data", f"the dataset the run was trained on (content hash {want[:12]}, "
                              f"{record.get('dataset', '?')})", f"{data_dir} (content hash {(have or '?')[:12]})",
                              "Pass --other-data to evaluate on it anyway (written to RUN/eval-other/, eval.json "
                              "is kept)."))
    return False


def _run_header(record: dict[str, Any]) -> dict[str, Any]:
    """The ``run`` section of eval.json (without its path), from run.json."""
    return {k: record.get(k) for k in RUN_KEYS if k in record}


def _previous(path: Path, content_hash: str | None, run: dict[str, Any]) -> dict[str, Any] | None:
    """The eval file at ``path`` for a partial update, or None when there is none; a ConfigError when it cannot
    be read or describes another run or dataset (its stages would be lost, or mixed with these)."""
    if not path.exists():
        return None
    fix = "Move it aside, or re-run `privtune eval` without --only to rewrite it whole."
    try:
        old = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(fmt(str(path), "readable JSON to update with --only", f"{type(e).__name__}", fix)) \
            from None
    if not isinstance(old, dict) or not isinstance(old.get("dataset"), dict) or not isinstance(old.get("run"), dict):
        raise ConfigError(fmt(str(path), "an eval.json written by privtune to update with --only",
                              "another kind of file", fix))
    if old["dataset"].get("content_hash") != content_hash or \
            {k: v for k, v in old["run"].items() if k != "path"} != run:
        raise ConfigError(fmt(str(path), "results of this run on this dataset to update with --only",
                              "results of another run or dataset", fix))
    return old


def merge_previous(path: Path, result: dict[str, Any]) -> dict[str, Any]:
    """``result`` completed with the other stages of the eval file at ``path`` (``result`` alone when there is
    none); a ConfigError rather than dropping them when it cannot be read or describes another run or dataset."""
    old = _previous(path, result["dataset"]["content_hash"],
                    {k: v for k, v in result["run"].items() if k != "path"})
    if old is None:
        return result
    merged = {**old, **result}
    merged["stages"] = [s for s in STAGES if s in merged]
    merged["timings_s"] = {**old.get("timings_s", {}), **result["timings_s"]}
    return merged


def _load_run(run_dir: Path) -> tuple[Any, Any, dict[str, Any], Any, Any]:
    """Fine-tuned model, tokenizer, run.json, base model and the base's own tokenizer."""
    from privtune.models.loading import load_tokenizer, resolve_spec
    from privtune.training.run import load_trained

    run = load_trained(run_dir)
    info = dict(run.record)
    if info.get("task", "lm") != "lm":
        raise ConfigError(fmt("RUN", "a causal language-model run (the measures score next-token "
                              "predictions)", f"task {info.get('task')!r}",
                              "Evaluate classification runs with their accuracy."))
    base = run.load_base()
    spec = str(info["model"])
    return run.model, run.tokenizer, info, base, load_tokenizer(resolve_spec(spec, build=False), spec=spec)


def print_summary(result: dict[str, Any]) -> None:
    """A few headline figures on stderr (no raw PII: the result holds redacted examples only)."""
    def f(x: Any) -> str:
        return "n/a" if x is None else (f"{x:.4g}" if isinstance(x, float) else str(x))

    def ci(x: Any) -> str:  # "[lo, hi]" of a 95% bootstrap interval (escaped: rich reads brackets as markup)
        return "" if not x else escape(f" [{x[0]:.4g}, {x[1]:.4g}]")

    p, u, e, m, a = (result.get(k, {}) for k in ("privacy", "utility", "exposure", "mia", "audit"))
    if p:
        console.print(f"privacy  sensitive train NLL {f(p['sensitive_train_nll'])} (base "
                      f"{f(p['sensitive_train_nll_base'])}), test {f(p['sensitive_test_nll'])} (base "
                      f"{f(p['sensitive_test_nll_base'])}) nats; memorization "
                      f"{f(p['memorization_nats'])}{ci(p.get('memorization_nats_ci'))} nats (95% intervals over "
                      f"{'people' if 'people' in str((p.get('interval') or {}).get('method')) else 'records'})")
    if u:
        console.print(f"utility  non-sensitive test NLL {f(u['nonsensitive_test_nll'])}"
                      f"{ci(u.get('nonsensitive_test_nll_ci'))} (base "
                      f"{f(u['nonsensitive_test_nll_base'])}), perplexity {f(u['nonsensitive_test_ppl'])}")
    if e:
        console.print(f"exposure {escape(e['skipped'])}" if "skipped" in e else
                      f"exposure {f(e['exposure_bits'])} of {f(e['max_exposure_bits'])} bits ({e['method']}"
                      f"{', estimate' if e.get('estimate') else ''}; base {f(e.get('exposure_bits_base'))})")
    if m:
        aucs = [f"{k} AUC {f(v['auc'])}" for k, v in m.items()
                if k != "definition" and isinstance(v, dict) and "auc" in v]
        console.print("mia      " + ", ".join(aucs))
    us = result.get("users") or {}
    if us.get("available"):
        g, mu = us.get("sensitive_gain_per_user") or {}, us.get("mia_user") or {}
        best = max(((k, v["auc"]) for k, v in mu.items() if isinstance(v, dict) and v.get("auc") is not None),
                   key=lambda t: t[1], default=None)
        console.print(f"users    {us['n_train_users']} train / {us['n_test_users']} test people; gain per person "
                      f"train {f(g.get('train'))}, test {f(g.get('test'))} nats; user-level MIA "
                      + (f"{best[0]} AUC {f(best[1])}" if best else "n/a"))
    elif us:
        console.print(f"users    {escape(str(us.get('reason')))}")
    if a:
        console.print(f"audit    {escape(a['skipped'])}" if "skipped" in a else
                      f"audit    ε ≥ {f(a['epsilon_lower_bound'])} (estimate: empirical lower bound at "
                      f"{a['confidence']:.0%}) vs "
                      f"certified ε {f(a['certified_epsilon'])}")
