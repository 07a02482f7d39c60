import json

import pytest

from privtune.errors import ConfigError
from privtune.evaluation.extraction import (ExtractionConfig, extraction_measures, reconstruction,
                                            sampling_extraction)


def test_sampling_extraction_finds_memorised_phones_and_base_finds_none(toy):
    res = sampling_extraction(toy.ft, toy.base, toy.tokenizer, toy.train, ExtractionConfig(seed=1))
    assert res["n_prompts"] == 48  # a PERSON and a PHONE slot per record
    phone = res["per_label"]["PHONE"]
    assert phone["recall"] > 0.8 and phone["recall_base"] == 0.0
    assert res["recall"] > res["recall_base"]
    assert res["excess_extracted"] == res["extracted"] - res["extracted_base"]
    assert 0 < res["precision"] <= 1 and res["precision_base"] == 0.0
    # examples (they reach eval.json and the results store) keep no character of a secret: placeholders only
    assert res["examples"] and all(ex["value"] == f"[{ex['label']}]" for ex in res["examples"])
    shown = json.dumps(res["examples"])
    assert not any(r.text[s.start:s.end] in shown for r in toy.train for s in r.spans)


def test_sampling_decoding_is_seeded(toy):
    cfg = ExtractionConfig(decoding="sample", n_samples=2, n_prompts=10, seed=3)
    a = sampling_extraction(toy.ft, toy.base, toy.tokenizer, toy.train, cfg)
    b = sampling_extraction(toy.ft, toy.base, toy.tokenizer, toy.train, cfg)
    assert a == b and a["generations_per_prompt"] == 2 and a["n_prompts"] == 10


def test_reconstruction_ranks_true_values_first(toy):
    cfg = ExtractionConfig(k_distractors=5, seed=0)
    res = reconstruction(toy.ft, toy.base, toy.tokenizer, toy.train, toy.test, cfg)
    assert res["chance"] == pytest.approx(1 / 6)
    assert res["top1_accuracy"] > 0.9 and res["top1_accuracy_base"] < 0.6
    assert res["n_records"] == 48 and set(res["per_label"]) == {"PERSON", "PHONE"}
    assert res["mean_rank"] < res["mean_rank_base"]


def test_output_holds_no_raw_pii(toy):
    res = extraction_measures(toy.ft, toy.base, toy.tokenizer, train=toy.train, others=toy.test,
                              cfg=ExtractionConfig(k_distractors=3)).to_dict()
    text = json.dumps(res)
    values = {r.text[s.start:s.end] for r in toy.train + toy.test for s in r.spans}
    assert not [v for v in values if v in text]
    assert "definition" in res


def test_bad_config():
    with pytest.raises(ConfigError, match="decoding"):
        ExtractionConfig(decoding="beam")
