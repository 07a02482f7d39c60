import pytest

from privtune.errors import ConfigError

from privtune.experiments.config import load_study, model_slug, parse_study

STUDY = """
name = "t"
models = ["embedded:tiny", "EleutherAI/pythia-70m"]
methods = ["fft", "lora", "dp-fft", "dp-lora"]
budgets = [1, 8]
lora_ranks = [4, 8]
epochs = [1]
seeds = [0, 1]
batch_size = 8

[datasets.cs]
generator = "customersim"
train = 50
test = 10

[train]
max_grad_norm = 0.5
weight_decay = 0.01
"""


def write(tmp_path, text, name="study.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_expansion_counts_and_rules(tmp_path):
    study = load_study(write(tmp_path, STUDY))
    runs = study.expand()
    # per model and seed: fft 1 + lora 2 ranks + dp-fft 2 budgets + dp-lora 2 x 2 = 9
    assert len(runs) == 9 * 2 * 2
    assert {r.epsilon for r in runs if r.method in ("fft", "lora")} == {None}
    assert {r.lora_r for r in runs if r.method in ("fft", "dp-fft")} == {None}
    assert {r.epsilon for r in runs if r.method == "dp-lora"} == {1, 8}
    assert len({r.run_id for r in runs}) == len(runs)
    rc = next(r for r in runs if r.method == "dp-lora" and r.epsilon == 8 and r.lora_r == 4)
    cfg = rc.train_config("/data/cs")
    assert cfg["epsilon"] == 8 and cfg["lora_r"] == 4 and cfg["max_grad_norm"] == 0.5 and cfg["batch_size"] == 8
    assert cfg["data"] == "/data/cs" and "lr" not in cfg
    # non-DP runs do not carry DP-only options (so changing delta does not rename them)
    fft = next(r for r in runs if r.method == "fft")
    assert "delta" not in fft.train_config("/d") and "accountant" not in fft.train_config("/d")


def test_ids_are_deterministic_and_readable(tmp_path):
    a = [r.run_id for r in load_study(write(tmp_path, STUDY)).expand()]
    b = [r.run_id for r in load_study(write(tmp_path, STUDY, "again.toml")).expand()]
    assert a == b
    assert a[0].startswith("cs-embedded_tiny-fft-ep1-s0-") and len(a[0].rsplit("-", 1)[1]) == 8
    # key order inside a table does not matter
    swapped = STUDY.replace("max_grad_norm = 0.5\nweight_decay = 0.01", "weight_decay = 0.01\nmax_grad_norm = 0.5")
    assert [r.run_id for r in load_study(write(tmp_path, swapped, "s.toml")).expand()] == a
    # a changed training option is a different run; a DP-only option leaves non-DP runs alone
    changed = [r.run_id for r in load_study(write(tmp_path, STUDY.replace("batch_size = 8", "batch_size = 4"),
                                                  "c.toml")).expand()]
    assert not set(changed) & set(a)
    delta = load_study(write(tmp_path, STUDY.replace("batch_size = 8", "batch_size = 8\ndelta = 1e-6"), "d.toml"))
    d_ids = {r.run_id: r for r in delta.expand()}
    assert {i for i in a if i in d_ids} == {r.run_id for r in load_study(write(tmp_path, STUDY)).expand()
                                            if not r.private}


def test_method_options_apply_to_one_method(tmp_path):
    text = STUDY.replace("[train]", "[method_options.dp-fft]\nbatch_size = 32\n\n[train]")
    runs = load_study(write(tmp_path, text)).expand()
    assert {r.train_options["batch_size"] for r in runs if r.method == "dp-fft"} == {32}
    assert {r.train_options["batch_size"] for r in runs if r.method != "dp-fft"} == {8}
    base = {r.run_id for r in load_study(write(tmp_path, STUDY, "b.toml")).expand()}
    assert {r.run_id for r in runs if r.method != "dp-fft"} <= base
    assert not {r.run_id for r in runs if r.method == "dp-fft"} & base


def test_model_slug():
    assert model_slug("EleutherAI/pythia-70m") == "pythia-70m"
    assert model_slug("embedded:tiny") == "embedded_tiny"
    assert model_slug("/models/mine/") == "mine"


@pytest.mark.parametrize("edit, expected", [
    (("epochs = [1]", "epoch = [1]"), "Did you mean `epochs`?"),
    (("methods = [", "methods = [\"dp-loraa\", "), "Did you mean `dp-lora`?"),
    (("budgets = [1, 8]", "budgets = [-1, 8]"), "`budgets` must be a list of positive numbers"),
    (("budgets = [1, 8]", "budgets = []"), "`budgets` must be a non-empty list of ε when a DP method"),
    (("lora_ranks = [4, 8]", "lora_ranks = [0]"), "`lora_ranks` must be a non-empty list of positive integers"),
    (("lora_ranks = [4, 8]", "lora_ranks = [4, 4]"), "`lora_ranks` must be a list without duplicates"),
    (("batch_size = 8", "batch_size = 0"), "`batch_size` must be a positive integer"),
    (("batch_size = 8", "batch_size = 8\ndelta = 2"), "`delta` must be a number in (0, 1)"),
    (("generator = \"customersim\"", "generator = \"customersimm\""), "Did you mean `customersim`?"),
    (("train = 50", "trian = 50"), "Did you mean `train`?"),
    (("max_grad_norm = 0.5", "max_grad_norm = 0.5\nepsilon = 3"), "`train.epsilon` must be set by the study grid"),
    (("[train]", "[method_options.dp-lroa]\nbatch_size = 4\n[train]"), "Did you mean `dp-lora`?"),
    (("[train]", "[method_options.dp-lora]\nbatch_size = -4\n[train]"), "batch-size"),
    (("[train]", "[method_options.dp-lora]\nlora_r = 4\n[train]"), "`method_options.dp-lora.lora_r` must be set by"),
    (("max_grad_norm = 0.5", "max_grad_norm = 0.5\nlora_alhpa = 3"), "Did you mean `lora_alpha`?"),
    (("max_grad_norm = 0.5", "max_grad_norm = -1"), "max-grad-norm"),
    (("[train]", "[resources]\ncpus = 0\n[train]"), "`resources.cpus` must be a positive number"),
    (("[train]", "[resources]\ngpus = 1.5\n[train]"), "`resources.gpus` must be a non-negative number, whole above 1"),
    (("[train]", "[resources]\ngpu = 1\n[train]"), "Did you mean `gpus`?"),
    (("[train]", "[resources.dp-lroa]\ngpus = 1\n[train]"), "Did you mean `dp-lora`?"),
    (("[train]", "[resources.dp-lora]\nmemory = 1\n[train]"), "`resources.dp-lora.memory` must be a known key"),
    (("[train]", "[resources]\ncpus = true\n[train]"), "`resources.cpus` must be a positive number"),
])
def test_one_line_errors(tmp_path, edit, expected):
    bad = STUDY.replace(*edit)
    assert bad != STUDY
    with pytest.raises(ConfigError) as e:
        load_study(write(tmp_path, bad))
    msg = str(e.value)
    assert expected in msg and "\n" not in msg and "study.toml" in msg


def test_dataset_paths(tmp_path):
    from privtune.data.synth import synth_dataset

    with pytest.raises(ConfigError, match="dataset directory"):
        parse_study({"datasets": {"mine": {"path": "nowhere"}}, "methods": ["fft"]}, base_dir=tmp_path)
    synth_dataset("customersim", out=tmp_path / "data" / "cs", n_train=5, n_test=2)
    s = parse_study({"datasets": {"mine": {"path": "data/cs"}}, "methods": ["fft"]}, base_dir=tmp_path)
    ds = s.datasets["mine"]
    assert ds.location("/elsewhere") == (tmp_path / "data" / "cs").resolve()
    assert ds.identity() == {"path": "data/cs"}   # ids do not depend on where the study lives
    with pytest.raises(ConfigError, match="exactly one of `generator` or `path`"):
        parse_study({"datasets": {"x": {"path": "data/cs", "generator": "customersim"}}, "methods": ["fft"]},
                    base_dir=tmp_path)
    with pytest.raises(ConfigError, match="`datasets` must be a table"):
        parse_study({"methods": ["fft"]})


def test_learning_rates_per_method(tmp_path):
    s = parse_study({"datasets": {"cs": {"generator": "customersim"}}, "methods": ["fft", "lora"],
                     "learning_rates": {"lora": [1e-3, 2e-3]}})
    runs = s.expand()
    assert [(r.method, r.lr) for r in runs] == [("fft", None), ("lora", 1e-3), ("lora", 2e-3)]
    with pytest.raises(ConfigError, match="Did you mean `lora`"):
        parse_study({"datasets": {"cs": {"generator": "customersim"}}, "methods": ["fft", "lora"],
                     "learning_rates": {"loar": [1e-3]}})


def test_resources_per_method_and_variant_leave_run_ids_alone(tmp_path):
    from privtune.experiments.job import Resources

    base = {"datasets": {"cs": {"generator": "customersim"}}, "methods": ["fft", "dp-lora", "dp-rgp-x"],
            "budgets": [8], "variants": {"dp-rgp-x": {"method": "dp-rgp", "rgp_rank": 2}}}
    plain = parse_study(base)
    assert plain.resources_of("fft") == Resources(cpus=1, gpus=0) and "resources" not in plain.to_dict()
    s = parse_study({**base, "resources": {"cpus": 2, "dp-lora": {"gpus": 1}, "dp-rgp-x": {"gpus": 0.5}}})
    assert s.resources_of("fft") == Resources(cpus=2, gpus=0)
    assert s.resources_of("dp-lora") == Resources(cpus=2, gpus=1)
    assert s.resources_of("dp-rgp-x") == Resources(cpus=2, gpus=0.5)
    assert s.to_dict()["resources"] == {"cpus": 2, "dp-lora": {"gpus": 1}, "dp-rgp-x": {"gpus": 0.5}}
    # where a run executes is not what it is: the same ids with or without [resources]
    assert [r.run_id for r in s.expand()] == [r.run_id for r in plain.expand()]
    # a variant inherits its registered method's table when that method is in the study too
    v = parse_study({**base, "methods": ["dp-rgp", "dp-rgp-x"], "resources": {"dp-rgp": {"gpus": 1, "cpus": 4}}})
    assert v.resources_of("dp-rgp-x") == Resources(cpus=4, gpus=1)
