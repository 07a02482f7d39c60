"""The per-token scoring engine every measure reads: one batched, no-grad pass of a causal LM over records.

For a record tokenized as ``x_0 .. x_{T-1}`` the model predicts token ``x_t`` from ``x_{<t}``, so a record
yields ``T - 1`` *predicted tokens* ``t = 1 .. T-1`` (tokenizers that prepend a BOS token make every real
token predicted). For each predicted token we keep

- ``nll_t = -ln p_θ(x_t | x_{<t})`` in nats,
- ``correct_t = [argmax_v p_θ(v | x_{<t}) = x_t]`` (top-1 exact prediction),
- ``sensitive_t`` and the span label of ``x_t``: the token's character range overlaps a span of the record
  (the rule of :mod:`privtune.data.masks`; special tokens never are).

Compute it once per (model, split) and hand the same :class:`TokenScores` to every measure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from privtune.data.masks import encode_records
from privtune.data.schema import Record
from privtune.errors import ConfigError, fmt
from privtune.utils.progress import track

#: Float32 logits (batch x positions x vocabulary) held at once: bounds memory for large vocabularies.
LOGIT_BUDGET = 2 ** 25


@dataclass
class TokenScores:
    """Per-token scores of a list of records under one model, concatenated over records.

    Record ``i`` owns the predicted tokens ``offsets[i]:offsets[i+1]`` of the flat arrays.
    """

    record_ids: list[str]
    offsets: np.ndarray                 # int64, len n_records + 1
    nll: np.ndarray                     # float64 nats, -ln p(x_t | x_<t)
    correct: np.ndarray                 # bool, top-1 prediction equals x_t
    sensitive: np.ndarray               # bool, x_t overlaps a span
    label: np.ndarray                   # int32 index into ``labels``; -1 for non-sensitive tokens
    labels: tuple[str, ...] = ()
    n_truncated: int = 0                # records cut at max_length
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.record_ids)

    @property
    def n_tokens(self) -> int:
        return int(self.nll.size)

    @property
    def record_index(self) -> np.ndarray:
        """For each predicted token, the index of its record."""
        return np.repeat(np.arange(len(self)), np.diff(self.offsets))

    def label_mask(self, name: str) -> np.ndarray:
        if name not in self.labels:
            return np.zeros_like(self.sensitive)
        return self.label == self.labels.index(name)

    def per_record_mean(self, values: np.ndarray | None = None, mask: np.ndarray | None = None) -> np.ndarray:
        """Mean of ``values`` (default: NLL) over each record's tokens in ``mask``; NaN where none."""
        v = self.nll if values is None else values
        m = np.ones(v.shape, bool) if mask is None else mask
        idx = self.record_index
        s = np.bincount(idx, weights=np.where(m, v, 0.0), minlength=len(self))
        c = np.bincount(idx, weights=m.astype(float), minlength=len(self))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(c > 0, s / np.maximum(c, 1), np.nan)

    def per_record_count(self, mask: np.ndarray | None = None) -> np.ndarray:
        m = np.ones(self.nll.shape, bool) if mask is None else mask
        return np.bincount(self.record_index, weights=m.astype(float), minlength=len(self)).astype(int)

    def record(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def select(self, indices: Sequence[int]) -> "TokenScores":
        """The scores of a subset of records, in the given order."""
        idx = np.asarray(indices, dtype=int)
        parts = [np.arange(self.offsets[i], self.offsets[i + 1]) for i in idx]
        take = np.concatenate(parts) if parts else np.zeros(0, int)
        lens = np.diff(self.offsets)[idx] if idx.size else np.zeros(0, int)
        offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        return TokenScores([self.record_ids[i] for i in idx], offsets,
                           self.nll[take], self.correct[take], self.sensitive[take], self.label[take],
                           self.labels, self.n_truncated, dict(self.meta))


def model_vocab_size(model: Any) -> int:
    emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if emb is not None and hasattr(emb, "out_features"):
        return int(emb.out_features)
    return int(model.config.vocab_size)


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


def encode(tokenizer: Any, records: Sequence[Record], *, max_length: int | None) -> list[Any]:
    """Tokenize records with per-token sensitive flags (:func:`privtune.data.masks.encode_records`)."""
    return encode_records(tokenizer, records, max_length=max_length)


def _batches(lengths: np.ndarray, budget: int) -> list[np.ndarray]:
    """Group record indices (longest first) so that batch_size x longest <= budget tokens."""
    order = np.argsort(-lengths, kind="stable")
    out, cur, longest = [], [], 0
    for i in order:
        L = max(int(lengths[i]), 1)
        if cur and (len(cur) + 1) * max(longest, L) > budget:
            out.append(np.array(cur))
            cur, longest = [], 0
        cur.append(int(i))
        longest = max(longest, L)
    if cur:
        out.append(np.array(cur))
    return out


def score_records(model: Any, tokenizer: Any, records: Sequence[Record], *, max_length: int | None = 512,
                  encoded: Sequence[Any] | None = None, batch_tokens: int | None = None,
                  description: str | None = "scoring tokens") -> TokenScores:
    """Score every predicted token of ``records`` under ``model`` (see the module docstring).

    Batches are padded on the right (a causal model's outputs at real positions do not see right padding, so
    no attention mask is needed), sorted by length to waste little compute, and sized so that the float32
    logits stay under :data:`LOGIT_BUDGET` elements. ``encoded`` reuses a tokenization (the same records under
    a fine-tuned and a base model share it). ``description=None``: no progress bar of its own (inside another
    live display, e.g. training's).
    """
    enc = list(encoded) if encoded is not None else encode(tokenizer, records, max_length=max_length)
    if len(enc) != len(records):
        raise ConfigError(fmt("encoded", f"one encoding per record ({len(records)})", len(enc)))
    vocab = model_vocab_size(model)
    lengths = np.array([len(e.input_ids) for e in enc], dtype=np.int64)
    top = max((max(e.input_ids) for e in enc if e.input_ids), default=0)
    if top >= vocab:
        raise ConfigError(fmt("tokenizer", f"one whose ids fit the model's vocabulary ({vocab})",
                              f"token id {top}", "The tokenizer does not belong to this model: evaluate "
                              "with the tokenizer saved beside the model."))
    budget = batch_tokens or int(np.clip(LOGIT_BUDGET // vocab, 128, 16384))
    label_names = sorted({lab for e in enc for lab in e.span_label if lab is not None})
    lab_index = {n: i for i, n in enumerate(label_names)}
    n_pred = np.maximum(lengths - 1, 0)
    offsets = np.concatenate([[0], np.cumsum(n_pred)]).astype(np.int64)
    total = int(offsets[-1])
    nll = np.zeros(total, np.float64)
    correct = np.zeros(total, bool)
    sensitive = np.zeros(total, bool)
    label = np.full(total, -1, np.int32)
    for i, e in enumerate(enc):
        sl = slice(offsets[i], offsets[i + 1])
        sensitive[sl] = np.asarray(e.sensitive[1:], bool)
        label[sl] = [lab_index[x] if x is not None else -1 for x in e.span_label[1:]]

    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            groups = _batches(lengths, budget)
            for batch in (track(groups, description) if description is not None else groups):
                T = int(lengths[batch].max())
                if T < 2:
                    continue
                ids = torch.zeros((len(batch), T), dtype=torch.long)
                for j, i in enumerate(batch):
                    ids[j, :lengths[i]] = torch.tensor(enc[i].input_ids)
                ids = ids.to(device)
                # No attention mask: in a causal model a real position never sees the padding to its right,
                # and the unmasked call takes the fast causal attention path. Outputs at real positions are
                # identical.
                logits = model(input_ids=ids).logits
                tgt = ids[:, 1:, None]
                lp = torch.log_softmax(logits.float(), dim=-1)[:, :-1]
                tok_nll = (-lp.gather(-1, tgt)[..., 0]).double().cpu().numpy()
                tok_ok = (logits[:, :-1].argmax(-1, keepdim=True) == tgt)[..., 0].cpu().numpy()
                for j, i in enumerate(batch):
                    sl = slice(offsets[i], offsets[i + 1])
                    nll[sl] = tok_nll[j, :n_pred[i]]
                    correct[sl] = tok_ok[j, :n_pred[i]]
    finally:
        model.train(was_training)
    return TokenScores(record_ids=[r.id for r in records], offsets=offsets, nll=nll, correct=correct,
                       sensitive=sensitive, label=label, labels=tuple(label_names),
                       n_truncated=sum(bool(getattr(e, "truncated", False)) for e in enc))
