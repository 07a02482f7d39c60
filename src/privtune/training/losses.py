"""Per-example losses: the unit DP-SGD clips.

Causal LM: the loss of example ``i`` is the mean next-token negative log-likelihood over its own predicted
tokens, ``L_i = (1/|T_i|) * sum_{t in T_i} -log p(x_t | x_<t)`` in nats, where ``T_i`` are positions 2..len of the
unpadded sequence. Averaging within a sequence (not over the batch's tokens) keeps every example's weight in the
update equal, as per-example clipping assumes. Classification: cross-entropy of the label.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn


def _accepts_position_ids(model: nn.Module) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "position_ids" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def per_example_loss(model: nn.Module, batch: dict[str, torch.Tensor], *, task: str) -> torch.Tensor:
    """Vector of per-example losses (shape ``[batch]``), computed in float32.

    Position ids are passed explicitly, one row per example: models that otherwise build a single ``[1, T]`` row
    for the whole batch (BERT, GPT-2 learned position embeddings) would give per-example gradient hooks an input
    without a batch dimension.
    """
    ids = batch["input_ids"]
    kwargs = {"input_ids": ids, "attention_mask": batch["attention_mask"]}
    if _accepts_position_ids(model):
        kwargs["position_ids"] = torch.arange(ids.shape[1], device=ids.device).expand_as(ids).contiguous()
    if task == "classification":
        logits = model(**kwargs).logits.float()
        return F.cross_entropy(logits, batch["labels"], reduction="none")
    logits = model(**kwargs, use_cache=False).logits[:, :-1].float()
    target = batch["input_ids"][:, 1:]
    mask = batch["attention_mask"][:, 1:].to(logits.dtype)
    nll = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")
    return (nll * mask).sum(1) / mask.sum(1).clamp(min=1.0)
