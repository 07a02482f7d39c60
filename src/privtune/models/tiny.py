"""Tiny randomly initialised models with a real tokenizer, saved locally: every method is tested on each.

``build_tiny("llama")`` returns a directory that :func:`privtune.models.loading.load_model` (and
``AutoModelForCausalLM.from_pretrained``) loads offline. Architectures: GPT-NeoX (Pythia), Llama, Gemma, Qwen2 and
Gemma 3 for causal LM, BERT for sequence classification. The weights are random; only shapes, module layout and
code paths matter. Built directories are cached under ``cache_dir()/models`` keyed by a hash of their configuration.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from privtune import __version__
from privtune.errors import ConfigError, fmt
from privtune.paths import cache_dir
from privtune.utils.fsio import atomic_dir

_COMMON = dict(vocab_size=512, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
               max_position_embeddings=512)

#: arch -> (transformers config class name, extra config keys, task)
TINY_ARCHS: dict[str, tuple[str, dict[str, Any], str]] = {
    "gpt_neox": ("GPTNeoXConfig", {}, "lm"),
    "llama": ("LlamaConfig", {"num_key_value_heads": 2}, "lm"),
    "gemma": ("GemmaConfig", {"num_key_value_heads": 1, "head_dim": 8}, "lm"),
    "qwen2": ("Qwen2Config", {"num_key_value_heads": 2}, "lm"),
    # Gemma 3: scaled embedding, four RMSNorms per layer and q/k norms, sliding-window and full attention layers
    "gemma3": ("Gemma3TextConfig", {"num_key_value_heads": 1, "head_dim": 8, "sliding_window": 16,
                                    "layer_types": ["sliding_attention", "full_attention"]}, "lm"),
    "bert": ("BertConfig", {"num_labels": 2}, "classification"),
}
LM_ARCHS = tuple(a for a, (_, _, task) in TINY_ARCHS.items() if task == "lm")


def _corpus() -> list[str]:
    """A fixed, PII-free corpus for the tiny tokenizers: words, digits and punctuation of the kind datasets use."""
    words = ("the order my name is phone number address please call me at thanks agent customer hello you your "
             "tracking id email street city born in works as biography dialog support delivery date was on "
             "and of to a for with from yes no can help today").split()
    lines = []
    for i in range(400):
        w = [words[(i * 7 + k * 13) % len(words)] for k in range(12)]
        lines.append(" ".join(w).capitalize() + f". Number {i * 7919 % 100000:05d}, code {i:03d}-{i * 31 % 997}!")
    return lines


def tiny_config_dict(arch: str) -> dict[str, Any]:
    if arch not in TINY_ARCHS:
        raise ConfigError(fmt("arch", f"one of {', '.join(TINY_ARCHS)}", arch))
    _, extra, _ = TINY_ARCHS[arch]
    return {**_COMMON, **extra}


def build_tiny(arch: str, *, out: str | Path | None = None, seed: int = 0) -> Path:
    """Build (or reuse from the cache) a tiny random ``arch`` model with its tokenizer; return its directory."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from privtune.models.loading import quiet_transformers
    from privtune.models.tokenizer import train_bpe

    quiet_transformers()

    cfg_dict = tiny_config_dict(arch)
    cls_name, _, task = TINY_ARCHS[arch]
    key = hashlib.sha256(json.dumps({"arch": arch, "cfg": cfg_dict, "seed": seed, "v": __version__},
                                    sort_keys=True).encode()).hexdigest()[:12]
    dest = Path(out) if out is not None else cache_dir() / "models" / f"tiny-{arch}-{key}"
    if (dest / "config.json").is_file():
        return dest
    tok = train_bpe(_corpus(), vocab_size=cfg_dict["vocab_size"], encoder=task == "classification")
    config = getattr(transformers, cls_name)(**cfg_dict, pad_token_id=tok.pad_token_id,
                                             bos_token_id=tok.bos_token_id or tok.cls_token_id,
                                             eos_token_id=tok.eos_token_id or tok.sep_token_id)
    torch.manual_seed(seed)
    auto = AutoModelForSequenceClassification if task == "classification" else AutoModelForCausalLM
    model = auto.from_config(config)
    with atomic_dir(dest, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return dest
