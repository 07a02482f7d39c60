"""Nothing lost: `--overwrite` replaces only privtune's own directories, `sweep --out` writes only into its own study
directory, and of two `train --out` on one directory exactly one runs (issue 18, data loss and replaced results)."""

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _train_helpers import lm_dataset
from privtune.errors import ConfigError
from _cli_helpers import run

SRC = Path(__file__).resolve().parents[1] / "src"
PII = "Karen 350-692-6021\n"


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def src(tmp_path):
    d = tmp_path / "t"
    d.mkdir()
    (d / "a.txt").write_text(PII)
    return d


# -- data import / synth --overwrite ------------------------------------------------------------------------------
@pytest.mark.parametrize("source, out", [
    ("t", "t"),            # the source folder itself (the example)
    ("t/a.txt", "t"),      # the folder holding the source file
    ("t/a.txt", "."),      # an ancestor of the source (tmp_path)
])
def test_overwrite_never_replaces_the_import_source_or_its_parents(src, tmp_path, capsys, source, out):
    before = tree(tmp_path)
    code, _, err = run(["data", "import", str(tmp_path / source), "--out", str(tmp_path / out), "-t", "regex",
                        "--overwrite"], capsys)
    assert code == 2 and "import source" in err and len(err.strip().splitlines()) == 1
    assert tree(tmp_path) == before and (src / "a.txt").read_text() == PII
    assert "350-692" not in err


def test_overwrite_never_replaces_the_test_source(src, tmp_path, capsys):
    other = tmp_path / "other.jsonl"
    other.write_text('{"text": "hello"}\n')
    code, _, err = run(["data", "import", str(other), "--test", str(src / "a.txt"), "--out", str(src),
                        "--overwrite"], capsys)
    assert code == 2 and "--test source" in err
    assert (src / "a.txt").read_text() == PII


@pytest.mark.parametrize("command", [["data", "synth", "customersim", "--train", "5", "--test", "2"],
                                     ["data", "import", "SRC", "-t", "regex"]])
def test_overwrite_refuses_a_folder_privtune_did_not_write(tmp_path, capsys, command):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    (tmp_path / "in.jsonl").write_text('{"text": "Call 555-123-4567."}\n' * 3)
    argv = [str(tmp_path / "in.jsonl") if a == "SRC" else a for a in command]
    code, _, err = run([*argv, "--out", str(foreign), "--overwrite"], capsys)
    assert code == 2 and "privtune did not write" in err and len(err.strip().splitlines()) == 1
    assert tree(foreign) == {"notes.txt": b"keep me"}


def test_out_dot_is_a_one_line_error_in_a_subprocess(src, tmp_path):
    """`--out .` (the current directory) with --overwrite: an error line, exit 2, no traceback, nothing lost."""
    work = tmp_path / "w"
    work.mkdir()
    (work / "keep.txt").write_text("x")
    env = {**os.environ, "PYTHONPATH": str(SRC), "PRIVTUNE_PROGRESS": "0"}
    p = subprocess.run([sys.executable, "-m", "privtune", "data", "import", str(src), "--out", ".", "-t", "regex",
                        "--overwrite"], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert "current directory" in p.stderr
    assert tree(work) == {"keep.txt": b"x"}


def test_out_home_or_cwd_parent_is_refused_even_when_recognised(tmp_path, monkeypatch, capsys):
    """A dataset directory that is also the cwd's parent, or home, is never replaced."""
    from privtune.data.synth import synth_dataset

    ds = tmp_path / "ds"
    synth_dataset("customersim", out=ds, n_train=5, n_test=2)
    (ds / "sub").mkdir()
    monkeypatch.chdir(ds / "sub")
    with pytest.raises(ConfigError, match="a parent of the current directory"):
        synth_dataset("customersim", out=ds, overwrite=True, n_train=6, n_test=2)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(ds))
    with pytest.raises(ConfigError, match="home directory"):
        synth_dataset("customersim", out=ds, overwrite=True, n_train=6, n_test=2)
    assert json.loads((ds / "dataset.json").read_text())["counts"]["train"] == 5 + 10  # 5 records + 10 canaries


def test_overwrite_replaces_privtunes_own_dataset_but_not_one_with_foreign_files(tmp_path, capsys):
    out = tmp_path / "cs"
    base = ["data", "synth", "customersim", "--train", "5", "--test", "2", "--out", str(out)]
    assert run([*base, "--seed", "1"], capsys)[0] == 0
    code, _, err = run([*base, "--seed", "2"], capsys)
    assert code == 2 and "--overwrite" in err                      # a different dataset: refused without it
    assert run([*base, "--seed", "2", "--overwrite"], capsys)[0] == 0
    assert json.loads((out / "dataset.json").read_text())["seed"] == 2
    (out / "my-notes.txt").write_text("mine")
    code, _, err = run([*base, "--seed", "3", "--overwrite"], capsys)
    assert code == 2 and "my-notes.txt" in err
    assert (out / "my-notes.txt").read_text() == "mine" and json.loads((out / "dataset.json").read_text())["seed"] == 2


def test_recognition_of_privtunes_directories(tmp_path):
    from privtune.utils.owned import recognise, strangers

    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "dataset.json").write_text(json.dumps({"name": "x", "source": "y", "content_hash": "h"}))
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "dataset.json").write_text(json.dumps({"something": "else"}))   # not privtune's fields
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(json.dumps({"method": "lora", "status": "completed", "config": {}}))
    (tmp_path / "run" / ".lock").write_text("")
    (tmp_path / "run" / ".eval.json.abc123").write_text("")       # an atomic write's temporary
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "study.toml").write_text("")
    (tmp_path / "study" / ".git").mkdir()
    (tmp_path / "study" / ".running").mkdir()                        # the ray backend's running-task files
    (tmp_path / "study" / "results.sqlite.old-20261202-120000").write_text("")   # kept by `results --rebuild`
    assert [recognise(tmp_path / n) for n in ("ds", "fake", "run", "study")] == ["dataset", None, "run", "study"]
    assert strangers(tmp_path / "run", "run") == [] and strangers(tmp_path / "study", "study") == [".git"]


# -- sweep --out --------------------------------------------------------------------------------------------------
STUDY = """
name = "tiny"
models = ["tiny:gpt_neox"]
methods = ["lora"]
epochs = [1]
[datasets.cs]
generator = "customersim"
train = 8
test = 4
"""


@pytest.fixture
def study_file(tmp_path):
    p = tmp_path / "tiny.toml"
    p.write_text(STUDY)
    return p


@pytest.mark.parametrize("kind", ["foreign", "dataset", "other-study", "file"])
def test_sweep_refuses_a_directory_that_is_not_its_own(tmp_path, study_file, monkeypatch, kind):
    from privtune.data.synth import synth_dataset
    from privtune.experiments import run_sweep
    from privtune.experiments.store import ResultStore
    from privtune.experiments.sweep import Sweep

    started = []
    monkeypatch.setattr(Sweep, "_run", lambda self: started.append(self.dir))   # no training in this test
    out = tmp_path / "out"
    if kind == "foreign":
        out.mkdir()
        (out / "thesis.tex").write_text("mine")
    elif kind == "dataset":
        synth_dataset("customersim", out=out, n_train=5, n_test=2)
    elif kind == "other-study":
        with ResultStore(out) as s:
            s.put_study({"name": "another"})
    else:
        out.write_text("a file")
    before = tree(out) if out.is_dir() else None
    with pytest.raises(ConfigError, match="--out"):
        run_sweep(study_file, out=out)
    assert started == []
    if before is not None:   # (SQLite may add its shared-memory index beside a store it reads)
        assert {k: v for k, v in tree(out).items() if not k.endswith(("-shm", "-wal"))} == before
        assert not (out / ".sweep.lock").exists()


@pytest.mark.parametrize("kind", ["new", "empty", "own"])
def test_sweep_accepts_a_new_empty_or_its_own_directory(tmp_path, study_file, monkeypatch, kind):
    from privtune.experiments import run_sweep
    from privtune.experiments.store import ResultStore
    from privtune.experiments.sweep import Sweep

    started = []
    monkeypatch.setattr(Sweep, "_run", lambda self: started.append(self.dir))
    out = tmp_path / "out"
    if kind != "new":
        out.mkdir()
    if kind == "own":
        with ResultStore(out) as s:
            s.put_study({"name": "tiny"})
        (out / "report.html").write_text("<html>")
    run_sweep(study_file, out=out)
    assert started == [out]


# -- train --out --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return lm_dataset(tmp_path_factory.mktemp("d") / "cs")


FAST = dict(model="tiny:gpt_neox", steps=2, batch_size=4, max_length=32, checkpoint_every=1)


def _held_elsewhere(lock: Path) -> bool:
    """Whether another open file (another process, or another claim) holds the flock on ``lock``."""
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def test_train_claims_out_before_the_model_loads(data, tmp_path, monkeypatch):
    """While the model loads (where two runs used to race), --out already exists and is locked: a second
    `privtune train --out` fails at once instead of swapping its directory over this one."""
    import privtune.training.run as run_mod

    out = tmp_path / "run"
    seen = {}
    real = run_mod.build_session

    def spy(plan):
        seen["exists"] = out.is_dir()
        seen["locked"] = out.is_dir() and _held_elsewhere(out / ".lock")
        return real(plan)

    monkeypatch.setattr(run_mod, "build_session", spy)
    rec = run_mod.train(data=str(data), method="lora", out=out, **FAST).record
    assert seen == {"exists": True, "locked": True}
    assert rec["status"] == "completed" and not _held_elsewhere(out / ".lock")


def test_a_second_train_on_a_claimed_out_fails_at_once(data, tmp_path):
    import privtune.training.run as run_mod

    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "w") as f:                 # another process's claim
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="not in use by another privtune process"):
            run_mod.train(data=str(data), method="lora", out=out, **FAST)
    assert [p.name for p in out.iterdir()] == [".lock"]     # the other claim is left alone


def test_a_failed_start_leaves_nothing_and_a_killed_claim_is_reusable(data, tmp_path, monkeypatch):
    import privtune.training.run as run_mod

    out = tmp_path / "run"

    def boom(plan):
        raise OSError("disk on fire")

    monkeypatch.setattr(run_mod, "build_session", boom)
    with pytest.raises(OSError):
        run_mod.train(data=str(data), method="lora", out=out, **FAST)
    assert not out.exists()
    monkeypatch.undo()
    out.mkdir()
    (out / ".lock").write_text("")    # left by a process killed while loading its model: its lock died with it
    assert run_mod.train(data=str(data), method="lora", out=out, **FAST).status == "completed"


def test_train_out_existing_suggests_resume_not_overwrite(data, tmp_path, capsys):
    """`train` has no --overwrite: its error must not suggest it (issue 18, smaller)."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text("{}")
    code, _, err = run(["train", "--data", str(data), "--method", "lora", "--model", "tiny:gpt_neox", "--steps", "1",
                        "--out", str(out)], capsys)
    assert code == 2 and "--out" in err and "--resume" in err and "--overwrite" not in err


@pytest.mark.slow
def test_two_trains_on_one_out_exactly_one_wins(data, tmp_path):
    """Two `privtune train` processes started together on one --out: one completes, the other fails with a
    one-line error, and the directory holds the winner's run."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(SRC), "PRIVTUNE_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "privtune", "train", "--data", str(data), "--method", "lora", "--model",
           "tiny:gpt_neox", "--steps", "2", "--batch-size", "4", "--max-length", "32", "--out", str(out)]
    procs = [subprocess.Popen([*cmd, "--seed", str(s)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for s in (1, 2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    assert codes == [0, 2], results
    winner = next(s for (c, _), s in zip(results, (1, 2)) if c == 0)
    loser_err = next(e for c, e in results if c == 2)
    assert "Traceback" not in loser_err and "--out" in loser_err or "in use" in loser_err
    rec = json.loads((out / "run.json").read_text())
    assert rec["status"] == "completed" and rec["seed"] == winner
