"""Errors about bad data never print record content: every bad-input path of the data layer, fed records and values
made of known secrets, raises a one-line error in which none of the secrets (nor any word of them) appears."""

import json

import pytest

from privtune.cli import main
from privtune.data.headers import is_column_name, is_header
from privtune.data.importers import import_dataset
from privtune.data.schema import read_jsonl
from privtune.data.taggers.values import read_values
from privtune.errors import DataError

NAME, PHONE, EMAIL = "Karen Davis", "350-692-6024", "karen.davis@example.org"
SECRETS = (NAME, PHONE, EMAIL)
#: fragments a careless message could carry: each word, and label-ised forms (KAREN_DAVIS, COL_350_692_6024)
FRAGMENTS = ("Karen", "Davis", "350", "692", "6024", "example.org")
HEADERLESS = f"{NAME},{PHONE},{EMAIL}\nJohn Smith,555-010-2030,john@example.org\n"
TEXT = f"USR: I am {NAME}, call {PHONE}."


def _clean(message: str) -> None:
    assert "\n" not in message.strip()
    for s in (*SECRETS, *FRAGMENTS):
        assert s.lower() not in message.lower(), (s, message)


def _record(**kw):
    return {"id": "r1", "text": TEXT, **kw}


JSONL_CASES = {
    "span is a string": _record(spans=[NAME]),
    "span without label": _record(spans=[{"start": 10, "end": 21, "text": NAME}]),
    "span label is the value": _record(spans=[{"start": 10, "end": 21, "label": NAME}]),
    "lower-case label": _record(spans=[{"start": 10, "end": 21, "label": "karen davis"}]),
    "offsets are text": _record(spans=[{"start": NAME, "end": PHONE, "label": "PERSON"}]),
    "span outside the text, label a value": _record(spans=[{"start": 10, "end": 999, "label": PHONE}]),
    "overlapping spans, label a value": _record(spans=[{"start": 10, "end": 21, "label": "PERSON"},
                                                       {"start": 15, "end": 25, "label": EMAIL}]),
    "id is an object": {"id": {"name": NAME}, "text": TEXT},
    "label is an object": _record(label={"who": NAME}),
    "unknown key is a value": _record(**{NAME: PHONE}),
    "no text, keys are values": {NAME: PHONE, EMAIL: 1},
}


@pytest.mark.parametrize("case", sorted(JSONL_CASES))
def test_record_errors_name_no_content(tmp_path, case):
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps(JSONL_CASES[case]) + "\n")
    with pytest.raises(DataError) as e:
        read_jsonl(src)
    _clean(str(e.value))
    assert "bad.jsonl:1:" in str(e.value)          # still located: file and line


def test_import_errors_name_no_content(tmp_path):
    headerless = tmp_path / "crm.csv"
    headerless.write_text(HEADERLESS)
    cases = [
        (headerless, {}),                                                       # no `text` column
        (headerless, {"text_column": "text", "label_column": "label"}),
    ]
    mixed = tmp_path / "mixed.jsonl"   # class labels that are values: one an integer, one a name
    mixed.write_text(json.dumps({"text": "a", "label": 6024}) + "\n" + json.dumps({"text": "b", "label": NAME}) + "\n")
    one = tmp_path / "one.jsonl"
    one.write_text("".join(json.dumps({"text": t, "label": NAME}) + "\n" for t in "abc"))
    nolabel = tmp_path / "nolabel.jsonl"
    nolabel.write_text(json.dumps({"text": "a", NAME: PHONE}) + "\n")
    cases += [(mixed, {"label_column": "label"}), (one, {"label_column": "label"}),
              (nolabel, {"label_column": "label"})]
    for src, kw in cases:
        with pytest.raises(DataError) as e:
            import_dataset(src, out=tmp_path / "out", test_fraction=0, **kw)
        _clean(str(e.value))
    assert not (tmp_path / "out").exists()


def test_headerless_csv_import_names_the_width_not_the_row(tmp_path):
    src = tmp_path / "crm.csv"
    src.write_text(HEADERLESS)
    with pytest.raises(DataError, match=r"crm.csv:1: `--text-column` must name a column.*first row \(3 fields\) "
                                        r"does not look like a header.*add a header row"):
        import_dataset(src, out=tmp_path / "out", test_fraction=0)
    ok = tmp_path / "ok.csv"                  # a real header is still quoted: it helps and holds no record
    ok.write_text("id,body,label\n1,hello,0\n")
    with pytest.raises(DataError, match=r"columns are \['id', 'body', 'label'\]"):
        import_dataset(ok, out=tmp_path / "out", test_fraction=0)


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
def test_headerless_values_file_is_refused_without_echo(tmp_path, suffix, sep):
    """Read as a header, the first row's secrets would become labels (KAREN_DAVIS, COL_350_692_6024) and travel into
    stats, eval.json, the store and placeholders; the file is refused, and the error quotes none of it."""
    src = tmp_path / f"crm{suffix}"
    src.write_text(HEADERLESS.replace(",", sep))
    with pytest.raises(DataError, match=r"must start with a header row naming its labels.*column 1, 2, 3 of 3.*"
                                        r"PERSON,PHONE") as e:
        read_values(src)
    _clean(str(e.value))
    single = tmp_path / f"names{suffix}"       # one column of names, Title Case: a value, not a column name
    single.write_text(f"{NAME}\nJohn Smith\n")
    with pytest.raises(DataError) as e:
        read_values(single)
    _clean(str(e.value))


def test_values_file_with_a_header_keeps_working(tmp_path):
    src = tmp_path / "crm.csv"
    src.write_text(f"Full name,phone,E-mail\n{NAME},{PHONE},{EMAIL}\n")
    assert read_values(src) == {NAME: "FULL_NAME", PHONE: "PHONE", EMAIL: "E_MAIL"}


@pytest.mark.parametrize("cell, ok", [
    ("PERSON", True), ("phone", True), ("full_name", True), ("Full name", True), ("E-mail", True),
    ("Phone Number", True), ("Name", True), ("Karen Davis", False), ("Karen", False), ("350-692-6024", False),
    ("karen@example.org", False), ("AB12345", False), ("sentence1", False), ("", False), (" ", False),
])
def test_column_name_rule(cell, ok):
    assert is_column_name(cell) is ok
    assert is_header(["PERSON", cell]) is ok


def test_data_import_cli_prints_no_record(tmp_path, capsys):
    """The issue's case: `data import` of a headerless CSV printed the first row in its error."""
    src = tmp_path / "crm.csv"
    src.write_text(HEADERLESS)
    crm = tmp_path / "values.csv"
    crm.write_text(HEADERLESS)
    for args in (["data", "import", str(src), "--out", str(tmp_path / "o")],
                 ["data", "import", str(tmp_path / "c.jsonl"), "--tagger", f"values:{crm}", "--out", str(tmp_path / "o")]):
        (tmp_path / "c.jsonl").write_text(json.dumps({"text": TEXT}) + "\n")
        with pytest.raises(SystemExit) as e:
            main(args)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.strip()
        _clean(" ".join(err.split()))
    assert not (tmp_path / "o").exists()
