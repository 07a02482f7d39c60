import json

import pytest

from privtune.cli import main
from privtune.data.schema import (DatasetInfo, Record, Span, load_dataset, normalize_spans, read_jsonl,
                                  write_dataset)
from privtune.errors import ConfigError, DataError


def rec(i=0, text="My name is Ada Lovelace.", spans=((11, 23, "PERSON"),), **kw):
    return Record(id=f"r-{i}", text=text, spans=[Span(*s) for s in spans], **kw)


def test_roundtrip(tmp_path):
    info = DatasetInfo(name="t", source="test", seed=1)
    out = write_dataset(tmp_path / "ds", {"train": [rec(0), rec(1)], "test": [rec(2)]}, info)
    ds = load_dataset(out)
    assert [r.id for r in ds.train] == ["r-0", "r-1"]
    assert ds.train[0].span_text(ds.train[0].spans[0]) == "Ada Lovelace"
    assert ds.info.counts == {"train": 2, "test": 1}
    assert ds.info.labels == {"PERSON": 3}
    assert len(ds.info.content_hash) == 64


@pytest.mark.parametrize("spans, msg", [
    (((11, 40, "PERSON"),), "inside the text"),
    (((11, 11, "PERSON"),), "non-empty"),
    (((11, 23, "person"),), "upper case"),
    (((11, 23, "PERSON"), (15, 20, "PHONE")), "non-overlapping"),
    (((15, 20, "PHONE"), (11, 14, "PERSON")), "sorted"),
])
def test_bad_spans(spans, msg):
    with pytest.raises(DataError, match=msg):
        rec(spans=spans).validate()


def test_read_errors_name_file_and_line(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text('{"id": "a", "text": "hi", "spans": []}\n{not json}\n')
    with pytest.raises(DataError, match=r"train.jsonl:2: malformed JSON"):
        read_jsonl(p)
    p.write_bytes(b'{"id": "a", "text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"train.jsonl:1: .*not UTF-8"):
        read_jsonl(p)
    p.write_text('{"id": "a", "text": "hi"}\n{"id": "a", "text": "ho"}\n')
    with pytest.raises(DataError, match="appears twice"):
        read_jsonl(p)


def test_existing_different_dataset_refused_and_untouched(tmp_path):
    info = DatasetInfo(name="t", source="test")
    out = write_dataset(tmp_path / "ds", {"train": [rec(0)]}, info)
    before = (out / "train.jsonl").read_text()
    # same content again: a no-op
    write_dataset(out, {"train": [rec(0)]}, DatasetInfo(name="t", source="test"))
    with pytest.raises(ConfigError, match="different dataset"):
        write_dataset(out, {"train": [rec(5)]}, DatasetInfo(name="t", source="test"))
    assert (out / "train.jsonl").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temporary leftovers


def test_invalid_record_leaves_no_output(tmp_path):
    with pytest.raises(DataError):
        write_dataset(tmp_path / "ds", {"train": [rec(0), rec(1, spans=((0, 99, "PERSON"),))]},
                      DatasetInfo(name="t", source="test"))
    assert list(tmp_path.iterdir()) == []


def test_empty_dataset_refused(tmp_path):
    with pytest.raises(DataError, match="empty dataset"):
        write_dataset(tmp_path / "ds", {"train": []}, DatasetInfo(name="t", source="test"))


def test_hash_detects_edits(tmp_path):
    out = write_dataset(tmp_path / "ds", {"train": [rec(0)]}, DatasetInfo(name="t", source="test"))
    with open(out / "train.jsonl", "a") as f:
        f.write(json.dumps(rec(9).to_dict()) + "\n")
    with pytest.raises(DataError, match="hash"):
        load_dataset(out)
    assert len(load_dataset(out, verify_hash=False).train) == 2


def test_normalize_spans_merges_same_label_and_drops_cross_label_overlap():
    spans = [Span(5, 9, "PHONE"), Span(0, 4, "PERSON"), Span(2, 6, "PERSON"), Span(8, 12, "DATE")]
    assert normalize_spans(spans) == [Span(0, 6, "PERSON"), Span(8, 12, "DATE")]


def test_cli_validate_error_is_one_line(tmp_path, capsys):
    (tmp_path / "ds").mkdir()
    with pytest.raises(SystemExit) as e:
        main(["data", "validate", str(tmp_path / "ds")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "dataset.json" in err and "\n" not in err and "Traceback" not in err


def test_outputs_have_normal_permissions(tmp_path):
    import os
    import stat

    out = write_dataset(tmp_path / "ds", {"train": [rec(0)]}, DatasetInfo(name="t", source="test"))
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE((out / "dataset.json").stat().st_mode) == 0o666 & ~mask


def test_malformed_json_messages_read_once(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text('{"id": "a", "text": "unterminated}')  # no newline: it would be a control character
    with pytest.raises(DataError, match=r"\(Unterminated string starting at: column 21\)") as e:
        read_jsonl(p)
    assert "at at" not in str(e.value)
    (tmp_path / "dataset.json").write_text('{"name": "x')
    with pytest.raises(DataError, match=r"\(Unterminated string starting at: line 1\)") as e:
        load_dataset(tmp_path)
    assert "at at" not in str(e.value)
