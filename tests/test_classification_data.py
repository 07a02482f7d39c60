"""Classification data: the offline `sentiment` generator, and text+label import from JSONL, CSV and GLUE-style TSV."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from privtune.data.importers import import_dataset
from privtune.data.schema import load_dataset
from privtune.data.synth import generate, synth_dataset
from privtune.errors import ConfigError, DataError

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_sentiment_generator_is_balanced_varied_and_labelled():
    splits, info = generate("sentiment", n_train=600, n_test=50, seed=1)
    train = splits["train"]
    assert info.task == "classification" and info.class_labels == ["negative", "positive"]
    counts = Counter(r.label for r in train)
    assert set(counts) == {"negative", "positive"} and min(counts.values()) > 240
    assert len({r.text for r in train}) > 590                        # hardly any duplicate review
    assert 0.3 < sum(r.meta["mixed"] for r in train) / len(train) < 0.6  # contrastive sentences are common
    assert 0 < sum(r.meta["label_noise"] for r in train) / len(train) < 0.1
    with_spans = [r for r in train if r.spans]
    assert with_spans and {s.label for r in with_spans for s in r.spans} <= {"PERSON", "ADDRESS", "ORDER_ID"}
    assert not any(r.meta.get("canary") for r in train)              # no label-less canary records
    again, _ = generate("sentiment", n_train=600, n_test=50, seed=1)
    assert [r.text for r in again["train"]] == [r.text for r in train]


def test_sentiment_refuses_canaries_and_writes_a_dataset(tmp_path):
    with pytest.raises(ConfigError, match="canary"):
        generate("sentiment", n_train=10, n_test=2, canary_repeats=3)
    ds = load_dataset(synth_dataset("sentiment", out=tmp_path / "s", n_train=40, n_test=10))
    assert ds.info.task == "classification" and len(ds.test) == 10


def test_jsonl_with_a_label_key(tmp_path):
    src = tmp_path / "r.jsonl"
    src.write_text("\n".join(json.dumps({"text": f"text {i}", "stars": "good" if i % 2 else "bad"}) for i in range(10)))
    ds = load_dataset(import_dataset(src, out=tmp_path / "d", label_column="stars", test_fraction=0.2))
    assert ds.info.task == "classification" and ds.info.class_labels == ["bad", "good"]
    assert len(ds.test) == 2 and all(r.label in ("bad", "good") for r in ds.train)


def test_glue_style_tsv_single_sentence_and_pair(tmp_path):
    sst = tmp_path / "train.tsv"
    sst.write_text('sentence\tlabel\nit \'s a "charming" film \t1\n"unbalanced quote at the start\t0\n'
                   "flat and dull\t0\nwarm , funny\t1\n")
    ds = load_dataset(import_dataset(sst, out=tmp_path / "sst", text_column="sentence", label_column="label",
                                     test_fraction=0))
    assert ds.info.class_labels == [0, 1] and [r.label for r in ds.train] == [1, 0, 0, 1]
    assert ds.train[1].text == '"unbalanced quote at the start'
    qnli = tmp_path / "qnli.tsv"
    qnli.write_text("index\tquestion\tsentence\tlabel\n0\tWho?\tAda did.\tentailment\n"
                    "1\tWhen?\tNobody knows.\tnot_entailment\n")
    ds = load_dataset(import_dataset(qnli, out=tmp_path / "qnli", text_column="question,sentence",
                                     label_column="label", test_fraction=0))
    assert ds.train[0].text == "Who?\nAda did." and ds.info.class_labels == ["entailment", "not_entailment"]


@pytest.mark.parametrize("name,content,label_column,match", [
    ("a.csv", "text,label\na,1\nb,1\nc,1\n", "label", "at least two classes"),
    ("a.csv", "text,stars\na,1\nb,0\n", "label", "must name a column"),
    ("a.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n', "label", "must be present on every record"),
    ("a.jsonl", '{"text": "a", "label": 1.5}\n{"text": "b", "label": 0}\n', "label", "integer or a string"),
    ("a.jsonl", '{"text": "a", "label": [1]}\n{"text": "b", "label": 0}\n', "label", "integer or a string"),
    ("a.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": "neg"}\n', "label", "all integers or all"),
    ("a.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n', "stars", "`stars` must be present"),
])
def test_bad_labels_give_one_line_errors_and_write_nothing(tmp_path, name, content, label_column, match):
    src = tmp_path / name
    src.write_text(content)
    with pytest.raises(DataError, match=match) as e:
        import_dataset(src, out=tmp_path / "out", label_column=label_column, test_fraction=0)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_cli_import_error_is_one_line(tmp_path):
    src = tmp_path / "a.csv"
    src.write_text("text,label\na,x\nb,x\n")
    p = subprocess.run([sys.executable, "-m", "privtune", "data", "import", str(src), "--label-column", "label",
                        "--out", str(tmp_path / "out")], capture_output=True, text=True,
                       env={"PYTHONPATH": SRC, "PRIVTUNE_PROGRESS": "0", "PATH": "/usr/bin:/bin"})
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "two classes" in p.stderr
    assert not (tmp_path / "out").exists()
