"""Exact log-probabilities of many token sequences that share a context, by walking their prefix tree.

Scoring 10^6 candidate secrets one sequence at a time repeats the same work: every candidate starts with the
same context, and candidates that agree on their first ``d`` tokens need the model's next-token distribution
at that prefix only once. We therefore

1. run the shared context (plus any tokens all sequences begin with) once and keep its key/value cache;
2. sort the sequences lexicographically, so that sequences sharing a prefix are adjacent;
3. for each depth ``d``: find the distinct prefixes of length ``d`` (the tree's nodes at that depth) among the
   sequences that have a token at position ``d``; run the model on those prefixes in batches, on top of the
   cached context; and add ``ln p(s_d | context, s_{<d})`` to every sequence below each node.

The result is ``Σ_t ln p(s_t | context, s_{<t})`` for every sequence — the same number a plain forward pass
over ``context + s`` gives (up to float rounding), at a cost of one model row per tree node instead of one per
sequence. With one token per digit and 10^6 six-digit secrets that is 111,111 rows instead of 10^6.
"""

from __future__ import annotations

import copy
import inspect
import itertools
from typing import Any, Sequence

import numpy as np
import torch

from privtune.evaluation.tokens import model_device, model_vocab_size
from privtune.utils.progress import make_progress

PAD = -1
#: Bytes of key/value cache gathered per batch of tree nodes (one batch is alive per tree depth).
KV_BUDGET = 2 ** 27
LOGIT_BUDGET = 2 ** 23


def pad_sequences(seqs: Sequence[Sequence[int]]) -> np.ndarray:
    """Token sequences as an ``(N, L)`` int64 array, right-padded with ``PAD`` (-1)."""
    lens = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    out = np.full((len(seqs), int(lens.max(initial=0))), PAD, dtype=np.int64)
    flat = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64, count=int(lens.sum()))
    out[np.arange(out.shape[1]) < lens[:, None]] = flat
    return out


def _kv_bytes_per_token(model: Any) -> int:
    cfg = getattr(model, "config", None)
    layers = getattr(cfg, "num_hidden_layers", 12)
    hidden = getattr(cfg, "hidden_size", 768)
    return max(1, layers * 2 * hidden * 4)


def _select_cache(cache: Any, index: torch.Tensor) -> Any:
    """A new cache holding rows ``index`` of ``cache`` (which is left untouched)."""
    layers = getattr(cache, "layers", None)
    if layers and all(isinstance(getattr(layer, "keys", None), torch.Tensor) for layer in layers):
        new = copy.copy(cache)
        new.layers = []
        for layer in layers:
            sel = copy.copy(layer)
            sel.keys, sel.values = layer.keys[index], layer.values[index]
            new.layers.append(sel)
        return new
    new = copy.deepcopy(cache)  # pragma: no cover - cache types without plain per-layer tensors
    new.batch_select_indices(index)
    return new


def _cache_kwarg(model: Any) -> str:
    """The forward argument that takes the KV cache: ``cache`` in newer transformers (which deprecate
    ``past_key_values`` with a warning per call), ``past_key_values`` before."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft wraps with **kwargs
    return "cache" if "cache" in inspect.signature(type(inner).forward).parameters else "past_key_values"


def _step(model: Any, tokens: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
    """Feed one token per row on top of ``cache``; return next-token log-probabilities and the cache."""
    kwargs: dict[str, Any] = {"input_ids": tokens[:, None], _cache_kwarg(model): cache, "use_cache": True}
    try:
        out = model(**kwargs, logits_to_keep=1)
    except TypeError:  # pragma: no cover - models without logits_to_keep
        out = model(**kwargs)
    return torch.log_softmax(out.logits[:, -1].float(), dim=-1), _returned_cache(out)


def _returned_cache(out: Any) -> Any:
    """The KV cache a forward pass returned: the ``cache`` field in newer transformers (where reading
    ``past_key_values`` still works but logs a deprecation warning), ``past_key_values`` before."""
    return out["cache"] if "cache" in out.keys() else out.past_key_values


class _Walker:
    """Depth-first walk over the prefix tree of sorted sequences ``S`` (see the module docstring)."""

    def __init__(self, model: Any, S: np.ndarray, lens: np.ndarray, n_ctx: int, batch_size: int | None,
                 progress: Any, task: Any):
        self.model, self.S, self.lens, self.n_ctx = model, S, lens, n_ctx
        self.device = model_device(model)
        self.batch_size, self.progress, self.task = batch_size, progress, task
        self.per_token = _kv_bytes_per_token(model)
        self.vocab_cap = max(16, LOGIT_BUDGET // model_vocab_size(model))
        self.scores = np.zeros(S.shape[0], np.float64)

    def _batch(self, depth: int) -> int:
        if self.batch_size:
            return self.batch_size
        return max(16, min(KV_BUDGET // (self.per_token * (self.n_ctx + depth + 1)), self.vocab_cap, 4096))

    def expand(self, lp: torch.Tensor, cache: Any, node_first: np.ndarray, r0: int, r1: int, d: int) -> None:
        """``lp[i]`` is the next-token distribution at node ``i`` (depth ``d``, first row
        ``node_first[i]``), whose rows span ``[r0, r1)`` together; score the edges at position ``d`` and
        recurse into the children that have children."""
        rows = np.arange(r0, r1)
        node = np.searchsorted(node_first, rows, side="right") - 1
        has = self.lens[r0:r1] > d
        tok = self.S[rows[has], d]
        gi = torch.from_numpy(node[has]).to(self.device)
        self.scores[rows[has]] += lp[gi, torch.from_numpy(tok).to(self.device)].double().cpu().numpy()
        inner = self.lens[r0:r1] > d + 1  # rows that continue below a child: the child needs its own forward
        if not inner.any():
            return
        irows, inode = rows[inner], node[inner]
        itok = self.S[irows, d]
        new = np.r_[True, (inode[1:] != inode[:-1]) | (itok[1:] != itok[:-1])]
        child_first = irows[new]
        child_parent, child_tok = inode[new], itok[new]
        child_end = np.r_[child_first[1:], r1]
        B = self._batch(d + 1)
        for c0 in range(0, child_first.size, B):
            c1 = min(c0 + B, child_first.size)
            sub = _select_cache(cache, torch.from_numpy(child_parent[c0:c1]).to(self.device))
            clp, ccache = _step(self.model, torch.from_numpy(child_tok[c0:c1]).to(self.device), sub)
            self.progress.advance(self.task, c1 - c0)
            self.expand(clp, ccache, child_first[c0:c1], int(child_first[c0]), int(child_end[c1 - 1]), d + 1)


def count_inner_nodes(S: np.ndarray, lens: np.ndarray, start: int) -> int:
    """Number of tree nodes below the root that need a forward pass (those with children)."""
    total = 0
    for d in range(start + 1, int(lens.max(initial=0))):
        pre = S[lens > d, start:d]
        if pre.shape[0]:
            total += 1 + int((pre[1:] != pre[:-1]).any(axis=1).sum())
    return total


def sequence_logprobs(model: Any, *, context_ids: Sequence[int], sequences: np.ndarray,
                      batch_size: int | None = None, description: str = "prefix tree") -> np.ndarray:
    """``Σ_t ln p(s_t | context, s_{<t})`` in nats for each row ``s`` of ``sequences`` (``PAD``-padded ids).

    ``context_ids`` must be non-empty (the first token of a text has no prediction without one: pass the BOS
    token). Every tree node with children costs one model row of one token on top of its parent's cached keys
    and values; the walk is depth-first in batches so that memory stays bounded by the tree's depth.
    """
    if len(context_ids) == 0:
        raise ValueError("context_ids must hold at least one token (e.g. the BOS token)")
    seqs = np.asarray(sequences, dtype=np.int64)
    N = seqs.shape[0]
    if N == 0:
        return np.zeros(0, np.float64)
    lens = (seqs != PAD).sum(axis=1)
    if lens.min() == 0:
        raise ValueError("every sequence must hold at least one token")
    # tokens every sequence starts with join the context (their log-probability is shared)
    common = 0
    while common < lens.min() and (seqs[:, common] == seqs[0, common]).all():
        common += 1
    order = np.lexsort(seqs[:, ::-1].T)  # sorted by column 0, then 1, ...: shared prefixes are adjacent
    S, Ls = seqs[order], lens[order]
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), make_progress() as progress:
            task = progress.add_task(description, total=count_inner_nodes(S, Ls, common))
            ctx = torch.tensor([list(context_ids) + S[0, :common].tolist()], device=device)
            out = model(input_ids=ctx, use_cache=True)
            lp_ctx = torch.log_softmax(out.logits[0].float(), dim=-1)
            n_ctx = len(context_ids)
            shared = sum(float(lp_ctx[n_ctx - 1 + k, int(S[0, k])]) for k in range(common))
            walker = _Walker(model, S, Ls, n_ctx + common, batch_size, progress, task)
            walker.expand(lp_ctx[-1:], _returned_cache(out), np.zeros(1, np.int64), 0, N, common)
    finally:
        model.train(was_training)
    scores = np.empty(N, np.float64)
    scores[order] = walker.scores + shared
    return scores
