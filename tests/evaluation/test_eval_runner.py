import json
import subprocess
import sys

import pytest

from eval_helpers import other_tokenizer
from privtune.data.schema import Dataset, DatasetInfo, Record
from privtune.errors import ConfigError, DataError, ModelLoadError
from privtune.evaluation.evaluate import EvalConfig, evaluate_models, evaluate_run, parse_only

CONTRACT = ["privacy.sensitive_train_nll", "privacy.sensitive_train_nll_base", "privacy.sensitive_test_nll",
            "utility.nonsensitive_test_nll", "utility.nonsensitive_test_nll_base", "exposure.exposure_bits",
            "exposure.max_exposure_bits", "mia.loss.auc", "mia.loss.tpr_at_1pct_fpr", "mia.reference.auc",
            "mia.zlib.auc", "mia.min_k.auc", "mia.loss_sensitive.auc"]


def dataset(toy, *, canary=True, audit=True, spans=True):
    c = toy.canary
    train = list(toy.train)
    info = DatasetInfo(name="toy", source="test", seed=0)
    if canary:
        text, span = c.spec.render(c.secret)
        meta = {"canary": True, "canary_kind": "main"}
        train += [Record(f"canary-{k}", text, [span], meta) for k in range(4)]
        info.canary = {**c.spec.to_dict(), "secret": c.secret, "repeats": 4}
    if audit:
        a = toy.audit
        train += [Record(f"audit-{i}", r.text, r.spans,
                         {"canary": True, "canary_kind": "audit", "audit_index": i})
                  for i, (r, inc) in enumerate(zip(a.records(), a.included)) if inc]
        info.audit = {"template": a.template, "secrets": list(a.secrets), "included": list(a.included)}
    test = list(toy.test)
    if not spans:
        train = [Record(r.id, r.text) for r in train]
        test = [Record(r.id, r.text) for r in test]
    return Dataset(info=info, splits={"train": train, "test": test})


def strings(obj):
    """Every key and string value in a JSON-like object."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield str(k)
            yield from strings(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from strings(v)
    elif isinstance(obj, str):
        yield obj


def get(d, dotted):
    for k in dotted.split("."):
        d = d[k]
    return d


@pytest.fixture(scope="module")
def full(toy):
    return evaluate_models(toy.ft, toy.base, toy.tokenizer, dataset(toy),
                           run_info={"epsilon": None, "delta": None},
                           config=EvalConfig(max_records=None))


def test_every_stage_with_the_contract_keys(full, toy):
    for key in CONTRACT:
        assert get(full, key) is not None, key
    for section in ("privacy", "utility", "exposure", "mia", "extraction", "audit"):
        assert full[section]["definition"], section
    assert full["privacy"]["sensitive_train_nll"] < full["privacy"]["sensitive_train_nll_base"]
    # canaries are left out of the split-level measures
    assert full["records"] == {"train": 24, "test": 24, "truncated": {"train": 0, "test": 0}}
    assert full["exposure"]["rank"] == 1 and full["exposure"]["exposure_bits_base"] < 8
    assert full["mia"]["loss"]["auc"] > 0.9
    assert full["audit"]["epsilon_lower_bound"] > 0.5 and full["audit"]["consistent"] is None
    assert set(full["timings_s"]) == set(full["stages"])
    json.dumps(full, allow_nan=False)  # strict JSON
    text = "\n".join(strings(full))  # numbers may contain any digit string: look at text only
    secrets = [toy.canary.secret, *toy.audit.secrets]
    values = [r.text[s.start:s.end] for r in toy.train for s in r.spans]
    assert not [v for v in secrets + values if v in text]


def test_audit_checks_against_the_certified_epsilon(toy):
    res = evaluate_models(toy.ft, toy.base, toy.tokenizer, dataset(toy), only="audit",
                          run_info={"epsilon": 0.2, "delta": 1e-5})
    assert res["audit"]["certified_epsilon"] == 0.2 and res["audit"]["consistent"] is False
    assert res["stages"] == ["audit"]


def test_missing_canary_is_skipped_by_default_and_an_error_when_asked(toy):
    ds = dataset(toy, canary=False, audit=False)
    res = evaluate_models(toy.ft, toy.base, toy.tokenizer, ds, config=EvalConfig(exposure_base=False))
    assert "skipped" in res["exposure"] and "canary" in res["exposure"]["skipped"]
    assert "skipped" in res["audit"]
    with pytest.raises(DataError, match="canary"):
        evaluate_models(toy.ft, toy.base, toy.tokenizer, ds, only="exposure")
    with pytest.raises(DataError, match="audit"):
        evaluate_models(toy.ft, toy.base, toy.tokenizer, ds, only="audit")
    # described in dataset.json but absent from train
    ds2 = dataset(toy, audit=False)
    ds2.splits["train"] = [r for r in ds2.train if not r.is_canary]
    with pytest.raises(DataError, match="canary records"):
        evaluate_models(toy.ft, toy.base, toy.tokenizer, ds2, only="exposure")


def test_dataset_without_spans_points_to_a_tagger(toy):
    with pytest.raises(DataError, match="--tagger regex"):
        evaluate_models(toy.ft, toy.base, toy.tokenizer, dataset(toy, spans=False, canary=False, audit=False))
    plain = dataset(toy, spans=False, canary=False, audit=False)
    res = evaluate_models(toy.ft, toy.base, toy.tokenizer, plain, only="utility")
    assert res["utility"]["nonsensitive_test_tokens"] > 0


def test_tokenizer_mismatch_and_bad_stage_names(toy):
    with pytest.raises(ConfigError, match="tokenizer"):
        evaluate_models(toy.ft, toy.base, toy.tokenizer, dataset(toy), only="utility",
                        base_tokenizer=other_tokenizer())
    with pytest.raises(ConfigError, match="--only"):
        parse_only("privacy,memorisation")
    assert parse_only("mia, audit") == {"mia", "audit"} and parse_only(None) is None


def test_run_dir_without_a_model_is_refused_and_nothing_written(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(ModelLoadError, match="run.json"):
        evaluate_run(run, tmp_path / "data")
    assert not (run / "eval.json").exists()


def test_cli_reports_bad_input_in_one_line(tmp_path):
    env = {"PRIVTUNE_PROGRESS": "0", "PATH": "/usr/bin:/bin", "PYTHONPATH": "src"}
    p = subprocess.run([sys.executable, "-m", "privtune", "eval", str(tmp_path), "--data", str(tmp_path),
                        "--only", "privacy,nope"], capture_output=True, text=True, env=env)
    assert p.returncode == 2
    assert "--only" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_non_finite_numbers_become_null():
    import numpy as np

    from privtune.evaluation.evaluate import _finite
    assert _finite({"a": float("nan"), "b": [np.float32(1.5), np.inf, np.int64(3), np.bool_(True)]}) == \
        {"a": None, "b": [1.5, None, 3, True]}


def test_partial_evaluations_merge_into_the_previous_file(tmp_path):
    from privtune.evaluation.evaluate import merge_previous

    path = tmp_path / "eval.json"
    old = {"dataset": {"content_hash": "h"}, "run": {"method": "lora", "path": "a"},
           "stages": ["privacy", "mia"], "timings_s": {"privacy": 1.0, "mia": 2.0}, "privacy": {"x": 1},
           "mia": {"y": 2}}
    path.write_text(json.dumps(old))
    new = {"dataset": {"content_hash": "h"}, "run": {"method": "lora", "path": "b"}, "stages": ["mia"],
           "timings_s": {"mia": 3.0}, "mia": {"y": 5}}
    merged = merge_previous(path, new)
    assert merged["privacy"] == {"x": 1} and merged["mia"] == {"y": 5}
    assert merged["stages"] == ["privacy", "mia"]
    assert merged["timings_s"] == {"privacy": 1.0, "mia": 3.0}
    other = {**new, "dataset": {"content_hash": "other"}}
    with pytest.raises(ConfigError, match="another run or dataset"):   # never dropped silently (issue 18)
        merge_previous(path, other)
    assert merge_previous(tmp_path / "missing.json", new) == new


def test_summary_names_attacks_only(full, capsys):
    from privtune.evaluation.evaluate import print_summary
    from privtune.utils.progress import console

    with console.capture() as cap:
        print_summary(full)
    text = cap.get()
    assert "loss AUC" in text and "reference_sensitive AUC" in text and "definition" not in text
    assert "exposure 13.29 of 13.29 bits" in text and "estimate" in text
