"""Mean pooling for sequence classification with encoders that were trained to be read that way.

A Hugging Face BERT-style classifier reads one vector per text, the *pooler output*: ``tanh(W h_0 + b)`` of the
first token's final hidden state ``h_0`` ([CLS]). Sentence-transformers encoders such as all-MiniLM-L6-v2 were
trained to be read by the *mean* of their token states instead (their ``1_Pooling/config.json`` says
``pooling_mode_mean_tokens``), and their [CLS] state carries almost nothing: for all-MiniLM-L6-v2 cut to two layers
its standard deviation across texts is 1e-3 of its norm, and a linear probe on it is at chance on the sentiment
task, against 0.91 on the mean. Fine-tuning without noise re-learns a usable [CLS] within a few dozen steps;
DP-SGD at epsilon = 8 does not (measured: every DP method stays at chance), so reading such an encoder through
[CLS] would measure the encoder's read-out, not the privacy method.

For those encoders privtune replaces the pooler by :class:`MeanPooling`, the masked mean over real tokens

    m = sum_t mask_t h_t / sum_t mask_t          (padding excluded, so the result does not depend on batching)

which the classifier head reads as it read the pooler output. Which encoders: a model whose config carries
``privtune_pooling = "mean"`` (privtune writes it into every model it saves this way, so a fine-tuned run loads back
with the same read-out), or a sentence-transformers export whose ``1_Pooling/config.json`` selects mean pooling
alone. It applies where the classifier reads the base model's ``pooler`` (BERT, ALBERT, ERNIE, ...); RoBERTa-style
heads that read the first token directly keep their own head (EW-Tune's RoBERTa is one of them). The pretrained
pooler weights are dropped, so the saved model has none; a plain ``AutoModelForSequenceClassification`` load of it
would re-create a random pooler — load it with :func:`privtune.training.run.load_trained`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

POOLING_KEY = "privtune_pooling"
POOLINGS = ("mean",)


class MeanPooling(nn.Module):
    """Parameter-free stand-in for a BERT pooler: the masked mean of the final hidden states (batch, hidden)."""

    def __init__(self) -> None:
        super().__init__()
        self.mask: torch.Tensor | None = None  # the current forward's attention mask, set by the encoder's hook

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        mask = self.mask
        if mask is None or mask.shape != hidden_states.shape[:2]:
            return hidden_states.mean(dim=1)  # no mask given: every position is a token
        m = mask.to(hidden_states.dtype).unsqueeze(-1)
        return (hidden_states * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


def _capture_mask(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
    """Forward pre-hook of the encoder: hand this forward's attention mask to its pooler. The pooler is looked up on
    the module each time (not captured), so a deep copy of the model pools with its own mask."""
    pooler = getattr(module, "pooler", None)
    if not isinstance(pooler, MeanPooling):
        return
    mask = kwargs.get("attention_mask")
    if mask is None and len(args) > 1:
        mask = args[1]  # BertModel.forward(input_ids, attention_mask, ...)
    pooler.mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None


def declared_pooling(source: str | Path, config: Any) -> str | None:
    """``"mean"`` when ``config`` carries it or ``source`` is a sentence-transformers export pooling by mean alone."""
    value = getattr(config, POOLING_KEY, None)
    if value in POOLINGS:
        return value
    path = Path(str(source)) / "1_Pooling" / "config.json"
    try:
        st = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    modes = [k for k, v in st.items() if k.startswith("pooling_mode_") and v is True]
    return "mean" if modes == ["pooling_mode_mean_tokens"] else None


def apply_pooling(model: nn.Module, pooling: str | None) -> bool:
    """Read ``model``'s classifier input by ``pooling``; True when applied (the model has a BERT-style pooler)."""
    if pooling is None:
        return False
    base = getattr(model, "base_model", None)
    if base is None or base is model or not isinstance(getattr(base, "pooler", None), nn.Module):
        return False
    if not isinstance(base.pooler, MeanPooling):
        base.pooler = MeanPooling()
        base.register_forward_pre_hook(_capture_mask, with_kwargs=True)
    setattr(model.config, POOLING_KEY, pooling)  # saved with the model: a fine-tuned run loads back the same way
    return True
