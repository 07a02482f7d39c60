"""Scores of a fine-tuned model on the test split, recorded in run.json (the full evaluation is privtune.evaluation).

- ``test_loss``: mean per-example loss (nats; per-example means as in :mod:`.losses`).
- ``test_accuracy`` (classification): share of test records whose arg-max class is the label.
- ``macro_f1`` (classification): unweighted mean over classes c of F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)
  (a class absent from both labels and predictions is skipped).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from privtune.models.loading import autocast
from privtune.training.data import Encoded
from privtune.training.losses import per_example_loss


def macro_f1(y_true: list[int], y_pred: list[int], n_classes: int) -> float:
    scores = []
    for c in range(n_classes):
        tp = sum(1 for t, p in zip(y_true, y_pred) if t == c and p == c)
        fp = sum(1 for t, p in zip(y_true, y_pred) if t != c and p == c)
        fn = sum(1 for t, p in zip(y_true, y_pred) if t == c and p != c)
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(sum(scores) / len(scores)) if scores else 0.0


@torch.no_grad()
def evaluate_split(model: nn.Module, data: Encoded, *, task: str, device: torch.device, batch_size: int = 32,
                   n_classes: int | None = None) -> dict[str, Any]:
    model.eval()
    losses: list[float] = []
    preds: list[int] = []
    for lo in range(0, len(data), batch_size):
        idx = list(range(lo, min(lo + batch_size, len(data))))
        batch = data.collate(idx, device)
        with autocast(device):
            if task == "classification":
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
                losses += F.cross_entropy(logits, batch["labels"], reduction="none").tolist()
                preds += logits.argmax(-1).tolist()
            else:
                losses += per_example_loss(model, batch, task=task).tolist()
    out: dict[str, Any] = {"test_loss": sum(losses) / len(losses) if losses else None, "n_test": len(data)}
    if task == "classification" and data.labels is not None:
        out["test_accuracy"] = sum(int(p == y) for p, y in zip(preds, data.labels)) / len(preds) if preds else None
        out["macro_f1"] = macro_f1(data.labels, preds, n_classes or (max(data.labels) + 1))
    return out
