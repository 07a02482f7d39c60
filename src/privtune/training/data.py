"""Training examples as token ids, and micro-batches as padded tensors.

Causal LM: each record's text is tokenized with the tokenizer's own special-token template (as the evaluators do)
and truncated to ``max_length``, tokenizing only a bounded head of a long text
(:func:`privtune.data.masks.tokenize_head`); an EOS token ends sequences that were not truncated, so the model
learns to stop.
Classification: the text plus the class index of its label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from privtune.data.masks import tokenize_head
from privtune.data.schema import Dataset, Record
from privtune.errors import ConfigError, DataError, fmt


@dataclass
class Encoded:
    """Token ids of one split (ragged), with class indices for classification."""

    input_ids: list[list[int]]
    labels: list[int] | None
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    def n_tokens(self, indices: Sequence[int]) -> int:
        return int(sum(len(self.input_ids[i]) for i in indices))

    def collate(self, indices: Sequence[int] | np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids``/``attention_mask`` (padded to the longest sequence of the micro-batch)."""
        seqs = [self.input_ids[int(i)] for i in indices]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for k, s in enumerate(seqs):
            ids[k, :len(s)] = torch.tensor(s, dtype=torch.long)
            mask[k, :len(s)] = 1
        batch = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        if self.labels is not None:
            batch["labels"] = torch.tensor([self.labels[int(i)] for i in indices], dtype=torch.long, device=device)
        return batch


def class_labels(ds: Dataset) -> list[Any]:
    """The label set of a classification dataset, in index order (``dataset.json`` ``class_labels`` or sorted)."""
    if ds.info.class_labels:
        return list(ds.info.class_labels)
    found = {r.label for recs in ds.splits.values() for r in recs if r.label is not None}
    if not found:
        raise DataError(fmt("label", "present on records of a classification dataset", None,
                            "Add a `label` to each record or use --task lm."))
    return sorted(found, key=lambda v: (isinstance(v, str), v))


def encode(tokenizer: Any, records: Sequence[Record], *, max_length: int, task: str,
           labels: Sequence[Any] | None = None) -> Encoded:
    """Tokenize ``records`` for training (see the module docstring)."""
    if max_length < 2:
        raise ConfigError(fmt("--max-length", "at least 2 tokens", max_length))
    # a bounded head of each text, never a whole long record, is tokenized (a 20 MB record took 3.6 GB)
    enc = tokenize_head(tokenizer, [r.text for r in records], max_length=max_length, add_special_tokens=True)
    ids = [list(x) for x in enc["input_ids"]]
    y = None
    if task == "lm":
        eos = tokenizer.eos_token_id
        if eos is not None:
            for s in ids:
                if len(s) < max_length and (not s or s[-1] != eos):
                    s.append(eos)
    else:
        index = {v: k for k, v in enumerate(labels or [])}
        y = []
        for r in records:
            if r.label not in index:
                raise DataError(fmt("label", f"one of {list(index)}", r.label, f"Record {r.id!r} has an unknown label."))
            y.append(index[r.label])
    return Encoded(input_ids=ids, labels=y, pad_id=tokenizer.pad_token_id)
