import pytest
import torch
from torch import nn

from privtune.errors import ConfigError, ModelLoadError
from privtune.models.loading import (count_params, load_model, lora_target_modules, resolve_device,
                                     resolve_spec)
from privtune.models.tiny import LM_ARCHS, TINY_ARCHS, build_tiny


@pytest.mark.parametrize("arch", list(TINY_ARCHS))
def test_tiny_models_load_offline_with_fast_tokenizer(arch):
    task = TINY_ARCHS[arch][2]
    lm = load_model(f"tiny:{arch}", task=task, num_labels=2, device="cpu")
    assert lm.tokenizer.is_fast and lm.tokenizer.pad_token_id is not None
    assert lm.model.config.pad_token_id == lm.tokenizer.pad_token_id
    enc = lm.tokenizer(["Call me at 555-0100."], return_offsets_mapping=True)
    assert enc["input_ids"][0][0] in (lm.tokenizer.bos_token_id, lm.tokenizer.cls_token_id)
    targets = lora_target_modules(lm.model)
    assert targets
    heads = {"lm_head", "embed_out", "classifier", "score"}
    assert not any(t.rsplit(".", 1)[-1] in heads or "pooler" in t for t in targets)
    # every target is a Linear inside a transformer block
    for name, mod in lm.model.named_modules():
        if any(name == t or name.endswith("." + t) for t in targets):
            assert isinstance(mod, nn.Linear) and "layer" in name


def test_build_tiny_is_cached():
    assert build_tiny("llama") == build_tiny("llama")


@pytest.mark.parametrize("spec", ["EleutherAI/pythia-70m-not-cached", "./no/such/dir", "bad spec!"])
def test_unloadable_models_give_one_line_errors(spec):
    with pytest.raises(ModelLoadError) as e:
        load_model(spec)
    msg = str(e.value)
    assert "\n" not in msg and spec in msg and "--model" in msg


def test_offline_error_says_how_to_fix():
    with pytest.raises(ModelLoadError, match="download it first"):
        load_model("EleutherAI/pythia-70m-not-cached")


def test_directory_without_config(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ModelLoadError, match="config.json"):
        resolve_spec(str(tmp_path))


def test_missing_pad_token_falls_back_to_eos(tmp_path):
    from transformers import AutoTokenizer

    src = build_tiny("gpt_neox")
    tok = AutoTokenizer.from_pretrained(src)
    tok.pad_token = None
    model = load_model("tiny:gpt_neox").model
    model.config.pad_token_id = None
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    lm = load_model(str(tmp_path))
    assert lm.tokenizer.pad_token == lm.tokenizer.eos_token
    assert lm.notes == ["pad token set to the EOS token"]


def test_device_resolution():
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError):
        resolve_device("tpu9")


def test_count_params_counts_tied_weights_once():
    lm = load_model("tiny:gemma")  # Gemma ties its LM head to the embeddings
    n_unique = sum(p.numel() for p in {id(p): p for p in lm.model.parameters()}.values())
    assert count_params(lm.model) == (n_unique, n_unique)
    assert lm.model.get_output_embeddings().weight is lm.model.get_input_embeddings().weight


def test_lm_archs_are_the_four_of_the_issue():
    assert set(LM_ARCHS) == {"gpt_neox", "llama", "gemma", "qwen2", "gemma3"}


def test_load_tokenizer_accepts_specs():
    from privtune.models.loading import load_tokenizer

    assert load_tokenizer("tiny:llama").is_fast
    assert load_tokenizer(str(build_tiny("llama"))).vocab_size == load_tokenizer("tiny:llama").vocab_size
