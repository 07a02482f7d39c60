"""A damaged results.sqlite is a one-line error naming the file and the way back; `privtune results --rebuild`
rebuilds it from study.toml and the run directories (issue 18)."""

import json

import pytest

from _exp_helpers import eval_json, run_json
from privtune.experiments import load_study
from privtune.experiments.store import ResultStore
from privtune.experiments.sweep import SWEEP_FILE, Sweep
from _cli_helpers import run

STUDY = """
name = "tiny"
models = ["tiny:gpt_neox"]
methods = ["fft", "lora", "dp-lora"]
budgets = [1, 8]
epochs = [1]
[datasets.cs]
generator = "customersim"
train = 8
test = 4
[eval]
only = ["privacy", "utility"]
"""


@pytest.fixture
def study_dir(tmp_path):
    """A study directory as a sweep leaves it: run directories (one failed, one never started) and its store."""
    p = tmp_path / "tiny.toml"
    p.write_text(STUDY)
    study = load_study(p)
    out = tmp_path / "my study"
    sw = Sweep(study, out)
    (out / "runs").mkdir(parents=True)
    (out / "study.toml").write_text(study.source)
    statuses = {}
    for i, rc in enumerate(sw.configs):
        d = sw.run_dir(rc)
        if i == len(sw.configs) - 1:        # never started
            statuses[rc.run_id] = ("pending", None, None)
            continue
        d.mkdir()
        rec = {**run_json(rc.method, eps=rc.epsilon, wall=10.0 + i), "config": {}}
        if i == 1:
            rec.update(status="failed", error="TrainingError: loss is not finite")
            statuses[rc.run_id] = ("failed", "train", rec["error"])
        else:
            (d / "eval.json").write_text(json.dumps({"dataset": {"content_hash": "h"},
                                                     **eval_json(nll_train=2.0 + i / 10, util=2.5)}))
            (d / SWEEP_FILE).write_text(json.dumps({"run_id": rc.run_id, "grid": rc.grid(),
                                                    "eval_options": study.eval}))
            statuses[rc.run_id] = ("completed", None, None)
        (d / "run.json").write_text(json.dumps(rec))
    with ResultStore(out) as s:
        s.put_study({"name": study.name, "config": study.to_dict(), "toml": study.source})
        for rc in sw.configs:
            s.upsert(sw._row(rc, *statuses[rc.run_id]))
    return out


def rows(d):
    with ResultStore(d, create=False) as s:
        return [{k: v for k, v in r.items() if k != "updated"} for r in s.rows()], s.study()["name"]


def _damage(path, how):
    if how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(b"not a database at all" * 100)
    else:  # truncated mid-file
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("how", ["empty", "garbage", "truncated"])
def test_damaged_store_is_a_one_line_error(study_dir, how, capsys):
    store = study_dir / "results.sqlite"
    for extra in ("results.sqlite-wal", "results.sqlite-shm"):
        (study_dir / extra).unlink(missing_ok=True)
    _damage(store, how)
    damaged = store.read_bytes()
    for cmd in (["report", str(study_dir)], ["results", str(study_dir)],
                ["results", str(study_dir), "--csv", str(study_dir / "x.csv")]):
        code, out, err = run(cmd, capsys)
        assert code == 2, (cmd, out, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert "results.sqlite" in err and "--rebuild" in err
    assert store.read_bytes() == damaged and not (study_dir / "report.html").exists()


@pytest.mark.parametrize("how", ["empty", "garbage", "truncated", "lost"])
def test_rebuild_gives_back_every_row(study_dir, how, capsys):
    before = rows(study_dir)
    store = study_dir / "results.sqlite"
    for extra in ("results.sqlite-wal", "results.sqlite-shm"):
        (study_dir / extra).unlink(missing_ok=True)
    if how == "lost":
        store.unlink()
    else:
        _damage(store, how)
    code, _, err = run(["results", str(study_dir), "--rebuild"], capsys)
    assert code == 0, err
    assert rows(study_dir) == before
    kept = sorted(p.name for p in study_dir.glob("results.sqlite.old-*"))
    assert (len(kept) == 1) == (how != "lost")          # the damaged file is kept, never deleted
    assert (study_dir / "results.csv").is_file()


def test_rebuild_names_an_unnamed_study_after_the_store_or_directory(study_dir):
    from privtune.experiments.sweep import rebuild_store

    (study_dir / "study.toml").write_text(STUDY.replace('name = "tiny"\n', ""))
    rebuild_store(study_dir)
    assert rows(study_dir)[1] == "tiny"                 # from the previous store
    (study_dir / "results.sqlite").write_bytes(b"")
    rebuild_store(study_dir)
    assert rows(study_dir)[1] == "my_study"             # from the directory's name


def test_rebuild_needs_study_toml(tmp_path, capsys):
    (tmp_path / "s").mkdir()
    code, _, err = run(["results", str(tmp_path / "s"), "--rebuild"], capsys)
    assert code == 2 and "study.toml" in err
