"""On-disk cache of the base model's results: every run of a sweep starts from the same base model, so its
token scores and its canary exposure are computed once per (base model, tokenizer, records) and reused.

Keys hash the model's weights (names, shapes, dtypes and bytes), the tokenizer's vocabulary and the exact
records or canary scored, so a cached entry can only be returned for identical inputs. Entries hold numbers
only — token NLLs and flags, never text. Location: ``cache_dir()/eval``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from privtune import __version__
from privtune.data.schema import Record
from privtune.evaluation.tokens import TokenScores
from privtune.paths import cache_dir

_FINGERPRINTS: dict[int, tuple[Any, str]] = {}


def model_fingerprint(model: Any) -> str:
    """sha256 over the model's parameters and buffers (name, dtype, shape, bytes); memoised per object."""
    hit = _FINGERPRINTS.get(id(model))
    if hit is not None and hit[0] is model:
        return hit[1]
    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in sorted(model.state_dict().items()):
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    _FINGERPRINTS[id(model)] = (model, h.hexdigest())
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    probe = tokenizer("privtune 0123 Ab", add_special_tokens=True)["input_ids"]  # special-token template too
    return hashlib.sha256(json.dumps([vocab, list(probe)]).encode()).hexdigest()


def records_fingerprint(records: Sequence[Record]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(r.to_dict(), sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def key(kind: str, **parts: Any) -> str:
    return hashlib.sha256(json.dumps({"kind": kind, "v": __version__, **parts}, sort_keys=True,
                                     default=str).encode()).hexdigest()[:32]


def _dir() -> Path:
    d = cache_dir() / "eval"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _atomic_save(path: Path, write: Callable[[Any], None], suffix: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_scores(path: Path, ts: TokenScores) -> None:
    """Write ``ts`` to ``path`` (``.npz``, atomically): numbers and record ids only, never text."""
    meta = json.dumps({"record_ids": ts.record_ids, "labels": list(ts.labels), "n_truncated": ts.n_truncated})
    arrays = dict(offsets=ts.offsets, nll=ts.nll, correct=ts.correct, sensitive=ts.sensitive, label=ts.label)
    _atomic_save(Path(path), lambda tmp: np.savez(tmp, **arrays, meta=np.array(meta)), ".npz")


def load_scores(path: Path) -> TokenScores | None:
    """The TokenScores saved at ``path``, or None when there is none or it cannot be read (then it is removed)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        z = np.load(path, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        return TokenScores(meta["record_ids"], z["offsets"], z["nll"], z["correct"], z["sensitive"],
                           z["label"], tuple(meta["labels"]), meta["n_truncated"])
    except (OSError, ValueError, KeyError):
        path.unlink(missing_ok=True)  # unreadable entry: recompute
        return None


def cached_scores(k: str, compute: Callable[[], TokenScores]) -> TokenScores:
    """The TokenScores stored under ``k``, or ``compute()`` stored there."""
    path = _dir() / f"scores-{k}.npz"
    hit = load_scores(path)
    if hit is not None:
        return hit
    ts = compute()
    save_scores(path, ts)
    return ts


def cached_json(k: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A JSON-able result stored under ``k``, or ``compute()`` stored there."""
    path = _dir() / f"result-{k}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
    out = compute()
    _atomic_save(path, lambda tmp: Path(tmp).write_text(json.dumps(out), "utf-8"), ".json")
    return out
