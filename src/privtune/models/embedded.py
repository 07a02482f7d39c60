"""The embedded default base model: a small GPT-NeoX (Pythia architecture) that privtune pre-trains itself.

Pre-training text is public synthetic data — customersim dialogs and synbio biographies drawn from the *public*
identity pool (``pool="public"``), whose names, phones and addresses never occur in any fine-tuning set — so the base
model knows the form of the data and none of its secrets. A byte-level BPE tokenizer is trained on the same text.

Training: documents are joined with ``<|endoftext|>`` and packed into sequences of ``seq_len`` tokens; AdamW with
linear warm-up and cosine decay; the loss is the mean next-token negative log-likelihood (nats). The held-out loss is
the same quantity on public documents the model did not train on.

The built model is cached in ``cache_dir()/models/embedded-<size>-<hash>``; the hash covers the size config (seeds
included), the recipe version and the content of the pre-training text, so a change to the data generators that
changes their output rebuilds the model, and one that does not reuses it. ``privtune model build`` builds ahead of
time; ``--model embedded`` builds on first use.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from privtune import __version__
from privtune.errors import ConfigError, ModelLoadError, fmt
from privtune.paths import cache_dir
from privtune.utils.fsio import atomic_dir, atomic_write_json, blocking_lock

BUILD_FILE = "embedded.json"


@dataclass(frozen=True)
class EmbeddedConfig:
    """Size and pre-training recipe of an embedded base model."""

    layers: int
    hidden: int
    heads: int
    mlp: int
    vocab: int
    seq_len: int
    dialogs: int          # public customersim documents for pre-training
    bios: int             # public synbio documents
    heldout: int          # public documents of each generator held out for the held-out loss
    steps: int
    batch_size: int
    lr: float
    warmup: int
    seed: int = 1234


SIZES: dict[str, EmbeddedConfig] = {
    # About 4.2M parameters; about 2-3 minutes on 2 CPU cores (0.5 s per step at batch 16). Enough language for
    # fine-tuning effects (memorisation of training PII vs the base) to show; see design.md sizing facts.
    "default": EmbeddedConfig(layers=4, hidden=256, heads=4, mlp=1024, vocab=2048, seq_len=128, dialogs=6000,
                              bios=1500, heldout=200, steps=300, batch_size=16, lr=2e-3, warmup=20),
    # For tests: seconds.
    "tiny": EmbeddedConfig(layers=2, hidden=64, heads=2, mlp=128, vocab=512, seq_len=64, dialogs=200, bios=60,
                           heldout=20, steps=20, batch_size=8, lr=3e-3, warmup=2),
}


@dataclass
class BuildResult:
    """What a build produced (also written to ``embedded.json`` in the model directory)."""

    path: Path
    size: str
    key: str
    built: bool                      # False: reused from the cache
    build_time_s: float
    heldout_loss: float
    train_loss: float
    params: int
    train_tokens: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def size_config(size: str) -> EmbeddedConfig:
    if size not in SIZES:
        raise ConfigError(fmt("embedded size", f"one of {', '.join(SIZES)}", size, "Use --model embedded:default."))
    return SIZES[size]


#: Bump when the pre-training recipe changes in a way the size config does not show (packing, optimizer, ...).
RECIPE_VERSION = 1


def _generator_fingerprint() -> str:
    """Hash of the data generators' source and banks, and of Faker's version (its draws feed the identities)."""
    import faker

    import privtune.data.synth as synth

    h = hashlib.sha256(faker.VERSION.encode())
    root = Path(synth.__file__).parent
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in (".py", ".toml", ".json", ".txt"):
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _text_hash(train: list[str], held: list[str]) -> str:
    h = hashlib.sha256()
    for t in (*train, "\0held\0", *held):
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()


def pretraining_text_hash(size: str, *, texts: tuple[list[str], list[str]] | None = None) -> str:
    """Content hash of the pre-training text of ``size``.

    Generating the text takes seconds, so the hash is memoised per generator-source fingerprint: a change to the
    generators' code that leaves their output unchanged does not trigger a rebuild of the model.
    """
    cfg = size_config(size)
    memo_path = cache_dir() / "models" / f".embedded-text-{size}.json"
    src = hashlib.sha256(json.dumps({"g": _generator_fingerprint(), "c": asdict(cfg)}, sort_keys=True)
                         .encode()).hexdigest()
    try:
        memo = json.loads(memo_path.read_text("utf-8"))
    except (OSError, ValueError):
        memo = {}
    if src in memo and texts is None:
        return memo[src]
    h = _text_hash(*(texts or _public_texts(cfg)))
    memo[src] = h
    atomic_write_json(memo_path, memo)
    return h


def cache_key(size: str, *, texts: tuple[list[str], list[str]] | None = None) -> str:
    """Hash of the size config, the recipe version and the pre-training text (see the module docstring)."""
    cfg = size_config(size)
    blob = json.dumps({"size": size, "config": asdict(cfg), "recipe": RECIPE_VERSION,
                       "text": pretraining_text_hash(size, texts=texts)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def embedded_dir(size: str = "default", *, texts: tuple[list[str], list[str]] | None = None) -> Path:
    return cache_dir() / "models" / f"embedded-{size}-{cache_key(size, texts=texts)}"


def embedded_path(size: str = "default", *, build: bool = True) -> Path:
    """Directory of the embedded model ``size``, building it first if it is not cached (and ``build``)."""
    path = embedded_dir(size)
    if (path / BUILD_FILE).is_file():
        return path
    if not build:
        raise ModelLoadError(fmt("--model", "a built embedded model", f"embedded:{size}",
                                 f"Build it with `privtune model build --size {size}`."))
    return build_embedded(size).path


def read_build_info(size: str = "default") -> dict[str, Any] | None:
    path = embedded_dir(size) / BUILD_FILE
    return json.loads(path.read_text("utf-8")) if path.is_file() else None


def _public_texts(cfg: EmbeddedConfig) -> tuple[list[str], list[str]]:
    from privtune.data.synth import generate

    train, held = [], []
    for name, n, seed in (("customersim", cfg.dialogs, cfg.seed), ("synbio", cfg.bios, cfg.seed + 1)):
        splits, _ = generate(name, n_train=n, n_test=cfg.heldout, seed=seed, pool="public")
        train += [r.text for r in splits["train"]]
        held += [r.text for r in splits["test"]]
    return train, held


def _pack(tokenizer: Any, texts: list[str], seq_len: int, *, seed: int) -> "Any":
    """Shuffle documents, join them with the end-of-text token and cut into rows of ``seq_len`` tokens."""
    import random

    import torch

    docs = list(texts)
    random.Random(seed).shuffle(docs)
    eot = tokenizer.eos_token_id
    ids = tokenizer(docs, add_special_tokens=False)["input_ids"]
    stream = [t for doc in ids for t in (eot, *doc)]
    n = len(stream) // seq_len
    return torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len)


def build_embedded(size: str = "default", *, force: bool = False) -> BuildResult:
    """Pre-train the embedded model ``size`` on public synthetic text and cache it (see the module docstring)."""
    cfg = size_config(size)
    dest = embedded_dir(size)
    # two processes asking for the same model build it once: the second waits, then reuses it
    with blocking_lock(dest.parent / f".{dest.name}.lock"):
        if (dest / BUILD_FILE).is_file() and not force:
            info = json.loads((dest / BUILD_FILE).read_text("utf-8"))
            return BuildResult(**{**info["result"], "path": dest, "built": False})
        t0 = time.perf_counter()
        texts = _public_texts(cfg)
        dest = embedded_dir(size, texts=texts)  # the key of the text actually generated
        return _build(size, cfg, dest, texts, t0)


def _build(size: str, cfg: EmbeddedConfig, dest: Path, texts: tuple[list[str], list[str]], t0: float) -> BuildResult:
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from privtune.models.loading import quiet_transformers
    from privtune.models.tokenizer import train_bpe
    from privtune.utils.progress import make_progress
    from rich.progress import TextColumn

    quiet_transformers()
    train_texts, held_texts = texts
    tok = train_bpe(train_texts, vocab_size=cfg.vocab)
    rows, held = _pack(tok, train_texts, cfg.seq_len, seed=cfg.seed), _pack(tok, held_texts, cfg.seq_len, seed=0)
    config = GPTNeoXConfig(vocab_size=len(tok), hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
                           num_attention_heads=cfg.heads, intermediate_size=cfg.mlp,
                           max_position_embeddings=max(512, cfg.seq_len), rotary_pct=0.25, use_parallel_residual=True,
                           tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = GPTNeoXForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / cfg.steps))))
    model.train()
    losses: list[float] = []
    with make_progress(TextColumn("loss {task.fields[loss]}")) as progress:
        task = progress.add_task(f"pre-train embedded:{size}", total=cfg.steps, loss="-")
        for step in range(cfg.steps):
            batch = rows[torch.randint(0, len(rows), (cfg.batch_size,), generator=gen)]
            loss = model(input_ids=batch, labels=batch, use_cache=False).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            progress.update(task, advance=1, loss=f"{losses[-1]:.3f}")
    heldout = heldout_loss(model, held)
    result = BuildResult(path=dest, size=size, key=dest.name.rsplit("-", 1)[-1], built=True,
                         build_time_s=round(time.perf_counter() - t0, 1), heldout_loss=round(heldout, 4),
                         train_loss=round(sum(losses[-20:]) / len(losses[-20:]), 4),
                         params=sum(p.numel() for p in model.parameters()),
                         train_tokens=cfg.steps * cfg.batch_size * cfg.seq_len)
    with atomic_dir(dest, overwrite=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        atomic_write_json(tmp / BUILD_FILE, {"privtune_version": __version__, "config": asdict(cfg),
                                             "result": {k: v for k, v in result.to_dict().items()
                                                        if k not in ("path", "built")},
                                             "pretraining_data": "public-pool customersim dialogs + synbio "
                                                                 "biographies (no fine-tuning identities)"})
    return result


def heldout_loss(model: Any, rows: Any, batch_size: int = 32) -> float:
    """Mean next-token NLL (nats) of ``model`` over packed rows."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            b = rows[i:i + batch_size]
            n = b[:, 1:].numel()
            total += float(model(input_ids=b, labels=b, use_cache=False).loss) * n
            count += n
    return total / max(count, 1)
