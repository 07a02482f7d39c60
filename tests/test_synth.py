"""Generators: reproducibility, exact spans, phrasing variety, disjoint people and pools, canaries."""

import re
import string

import pytest

from privtune.data.schema import load_dataset
from privtune.data.synth import GENERATORS, CanarySpec, generate, in_pool, synth_dataset
from privtune.data.synth.base import load_bank
from privtune.data.synth.identities import canonical
from privtune.errors import ConfigError

LM_GENERATORS = ["customersim", "synbio"]


@pytest.fixture(scope="module")
def small():
    return {name: generate(name, n_train=150, n_test=30, seed=3) for name in LM_GENERATORS}


def values(splits, label, *, split=None):
    return {r.span_text(s) for name, recs in splits.items() if split in (None, name) for r in recs
            for s in r.spans if s.label == label and not r.is_canary}


def test_registry_lists_generators():
    assert {"customersim", "synbio"} <= set(GENERATORS.names())
    with pytest.raises(ConfigError, match="generator.*customersim"):
        generate("nope", n_train=1)


@pytest.mark.parametrize("name", LM_GENERATORS)
def test_banks_have_30_variants_per_slot_and_known_fields(name):
    bank = load_bank(name)
    fields = {"company", "name", "first", "order", "phone", "address", "tracking", "ship_date", "eta", "job",
              "a_job", "He", "he", "His", "his", "him", "birth_date", "birth_place", "email", "employer",
              "university", "subject", "hobby"}
    for slot, tpls in bank.items():
        assert len({t.source for t in tpls}) >= 30, slot
        for t in tpls:
            assert t.fields <= fields, (slot, t.source)


def test_customersim_slots_carry_their_value():
    bank = load_bank("customersim")
    need = {"usr_give_name": "name", "usr_give_order": "order", "usr_give_phone": "phone",
            "usr_give_address": "address", "sys_tracking": "tracking", "sys_greeting": None}
    for slot, field in need.items():
        assert all(field is None or field in t.fields for t in bank[slot]), slot
    assert all({"ship_date", "eta"} & t.fields for t in bank["sys_dates"])


@pytest.mark.parametrize("name", LM_GENERATORS)
def test_reproducible_and_seed_dependent(name, small):
    splits, info = small[name]
    again, info2 = generate(name, n_train=150, n_test=30, seed=3)
    assert [r.to_dict() for r in again["train"]] == [r.to_dict() for r in splits["train"]]
    assert info.canary == info2.canary
    other, _ = generate(name, n_train=150, n_test=30, seed=4)
    assert [r.text for r in other["train"]] != [r.text for r in splits["train"]]
    # the train split does not depend on the size of the test split
    fewer, _ = generate(name, n_train=150, n_test=5, seed=3)
    assert [r.text for r in fewer["train"]] == [r.text for r in splits["train"]]


@pytest.mark.parametrize("name", LM_GENERATORS)
def test_every_sensitive_value_has_an_exact_span(name, small):
    splits, _ = small[name]
    for recs in splits.values():
        for r in recs:
            r.validate()
            if r.is_canary:
                continue
            assert r.spans
            rest = "".join(r.text[a:b] for a, b in _gaps(r))
            # the banks contain no digits: any digit outside a span would be an untagged value
            assert not re.search(r"\d", rest), (r.id, rest)
            for s in r.spans:
                v = r.span_text(s)
                assert v == v.strip() and v
                if s.label == "PERSON":
                    for part in v.split():
                        assert not re.search(rf"\b{re.escape(part)}\b", rest), (r.id, part)
                if s.label in ("EMAIL", "PHONE", "ADDRESS", "ORDER_ID", "TRACKING_ID"):
                    assert v not in rest


def _gaps(r):
    pos = 0
    for s in r.spans:
        yield pos, s.start
        pos = s.end
    yield pos, len(r.text)


def test_customersim_form(small):
    splits, info = small["customersim"]
    assert info.name == "customersim" and info.task == "lm"
    for r in splits["train"]:
        if r.is_canary:
            continue
        lines = r.text.split("\n")
        assert lines[0].startswith("SYS: ") and all(re.match(r"^(SYS|USR): \S", ln) for ln in lines)
        labels = {s.label for s in r.spans}
        assert {"PERSON", "ORDER_ID", "TRACKING_ID", "DATE"} <= labels
    assert all(re.fullmatch(r"\d{3}-\d{5}-\d{4}", v) for v in values(splits, "ORDER_ID"))
    assert all(re.fullmatch(r"[A-Z0-9]{10}", v) for v in values(splits, "TRACKING_ID"))
    openings = {r.text.split("\n")[0] for r in splits["train"] if not r.is_canary}
    assert len(openings) > 40  # varied openings (32 greetings x 8 carriers)


def test_synbio_form(small):
    splits, info = small["synbio"]
    labels = set(info.labels) if info.labels else {s.label for r in splits["train"] for s in r.spans}
    assert {"PERSON", "DATE", "LOCATION", "ADDRESS", "PHONE", "EMAIL", "ORGANIZATION"} <= labels
    for r in splits["train"][:50]:
        if not r.is_canary:
            assert r.spans[0].label == "PERSON" and " " in r.span_text(r.spans[0])


@pytest.mark.parametrize("name", LM_GENERATORS)
def test_train_and_test_people_disjoint(name, small):
    splits, _ = small[name]
    for label in ("PHONE", "EMAIL", "ADDRESS", "ORDER_ID", "TRACKING_ID"):
        assert not values(splits, label, split="train") & values(splits, label, split="test"), label
    full = {label: {v for v in values(splits, "PERSON", split=label) if " " in v} for label in ("train", "test")}
    assert full["train"] and not full["train"] & full["test"]


@pytest.mark.parametrize("name", LM_GENERATORS)
def test_public_pool_is_disjoint_from_private(name):
    priv = [generate(name, n_train=120, n_test=0, seed=s)[0] for s in (0, 1)]
    pub = [generate(name, n_train=120, n_test=0, seed=s, pool="public")[0] for s in (0, 1)]
    kinds = {"PHONE": "phone", "EMAIL": "email", "ADDRESS": "address", "ORDER_ID": "order_id",
             "TRACKING_ID": "tracking_id", "LOCATION": "city"}
    for pool, datasets in (("private", priv), ("public", pub)):
        for splits in datasets:
            if pool == "public":
                assert not any(r.is_canary for r in splits["train"])
            for v in values(splits, "PERSON"):
                assert all(in_pool("name", part, pool) for part in v.split()), (pool, v)
            for label, kind in kinds.items():
                assert all(in_pool(kind, v, pool) for v in values(splits, label)), (pool, label)
    for label in ("PHONE", "EMAIL", "ADDRESS", "ORDER_ID", "TRACKING_ID", "ORGANIZATION", "LOCATION"):
        a = {canonical(kinds.get(label, "x"), v) for s in priv for v in values(s, label)}
        b = {canonical(kinds.get(label, "x"), v) for s in pub for v in values(s, label)}
        assert not a & b, label
    names = lambda ds: {p for s in ds for v in values(s, "PERSON") for p in v.split()}  # noqa: E731
    assert names(priv) and not names(priv) & names(pub)


def test_public_pool_refuses_canaries():
    splits, info = generate("customersim", n_train=20, n_test=0, seed=0, pool="public")
    assert info.canary is None and info.name == "customersim-public" and "test" not in splits
    with pytest.raises(ConfigError, match="pool"):
        generate("customersim", n_train=20, seed=0, pool="public", canary="123456")
    with pytest.raises(ConfigError, match="pool"):
        generate("customersim", n_train=20, seed=0, pool="secret")


def test_canary_default_given_and_disabled():
    splits, info = generate("customersim", n_train=40, n_test=10, seed=5)
    c = info.canary
    assert c["repeats"] == 10 and c["candidates"] == 10 ** 6 and c["template"] == "My ID is {secret}."
    assert len(c["secret"]) == 6 and c["secret"].isdigit()
    canaries = [r for r in splits["train"] if r.is_canary]
    assert len(canaries) == 10 and len(splits["train"]) == 50
    assert sorted(r.id for r in canaries) == sorted(c["record_ids"])
    for r in canaries:
        assert r.text == c["template"].format(secret=c["secret"]) and r.meta["canary_kind"] == "main"
        [span] = r.spans
        assert span.label == "CANARY" and r.span_text(span) == c["secret"]
    assert splits["train"][-10:] != canaries  # spread through the split, not appended
    assert not any(r.is_canary for r in splits["test"])

    given, info = generate("customersim", n_train=40, n_test=0, seed=5, canary="341752", canary_repeats=3)
    assert info.canary["secret"] == "341752" and sum(r.is_canary for r in given["train"]) == 3
    none, info = generate("customersim", n_train=40, n_test=0, seed=5, canary_repeats=0)
    assert info.canary is None and not any(r.is_canary for r in none["train"])
    with pytest.raises(ConfigError, match="canary") as e:
        generate("customersim", n_train=5, canary="12a456")
    assert "12a456" not in str(e.value)  # the secret is never echoed


def test_audit_canaries():
    splits, info = generate("synbio", n_train=30, n_test=0, seed=2, audit_canaries=40)
    a = info.audit
    assert len(a["secrets"]) == len(set(a["secrets"])) == 40 and len(a["included"]) == 40
    assert 5 < sum(a["included"]) < 35 and a["inclusion_probability"] == 0.5 and a["seed"] == 2
    audit = [r for r in splits["train"] if r.meta.get("canary_kind") == "audit"]
    assert len(audit) == sum(a["included"])
    spec = CanarySpec.from_dict(a)
    for r in audit:
        i = r.meta["audit_index"]
        assert a["included"][i] and r.is_canary and (r.text, r.spans[0]) == spec.render(a["secrets"][i])
    again = generate("synbio", n_train=30, n_test=0, seed=2, audit_canaries=40)[1].audit
    assert again == a


def test_canary_spec():
    spec = CanarySpec(alphabet=string.digits, length=3)
    assert spec.candidates == 1000 and spec.secret_at(7) == "007" and spec.secret_at(999) == "999"
    text, span = spec.render("042")
    assert text == "My ID is 042." and text[span.start:span.end] == "042"
    with pytest.raises(ConfigError):
        CanarySpec(template="no placeholder")


def test_synth_dataset_writes_and_is_idempotent(tmp_path):
    out = tmp_path / "cs"
    synth_dataset("customersim", out=out, n_train=30, n_test=5, seed=1)
    ds = load_dataset(out)
    assert ds.info.counts == {"train": 40, "test": 5} and ds.info.canary["repeats"] == 10
    assert ds.info.params["pool"] == "private" and ds.info.labels["CANARY"] == 10
    mtime = (out / "dataset.json").stat().st_mtime_ns
    synth_dataset("customersim", out=out, n_train=30, n_test=5, seed=1)
    assert (out / "dataset.json").stat().st_mtime_ns == mtime
    with pytest.raises(ConfigError, match="different dataset"):
        synth_dataset("customersim", out=out, n_train=30, n_test=5, seed=2)
    assert load_dataset(out).info.seed == 1  # untouched


@pytest.mark.parametrize("kw, match", [({"n_train": 0}, "n_train"), ({"n_test": -1}, "n_test"),
                                       ({"canary": "123456", "canary_repeats": 0}, "canary_repeats"),
                                       ({"audit_canaries": -1}, "audit_canaries")])
def test_bad_arguments(kw, match):
    with pytest.raises(ConfigError, match=match):
        generate("customersim", **{"n_train": 5, "n_test": 0, **kw})


@pytest.mark.parametrize("name", GENERATORS.names())
def test_generator_contract(name):
    """Every registered generator (including future ones) yields valid, labelled, reproducible records."""
    gen = GENERATORS.get(name)
    splits, info = generate(name, n_train=20, n_test=5, seed=0, canary_repeats=0)
    assert info.task == gen.task and info.source == name
    assert all(r.id.startswith(f"{gen.id_prefix}-") for r in splits["train"])
    if gen.task == "classification":
        assert all(r.label in gen.class_labels for rs in splits.values() for r in rs)
    assert [r.to_dict() for r in generate(name, n_train=20, n_test=5, seed=0, canary_repeats=0)[0]["train"]] \
        == [r.to_dict() for r in splits["train"]]
