"""Small datasets for training tests (imported by test modules; not a test file)."""

from __future__ import annotations

from pathlib import Path

from privtune.data.schema import DatasetInfo, Record, write_dataset


def lm_dataset(out: Path, *, n_train: int = 24, n_test: int = 8, seed: int = 0) -> Path:
    """A customersim dialog dataset (no canary), small enough for a few steps on a tiny model."""
    from privtune.data.synth import generate

    splits, info = generate("customersim", n_train=n_train, n_test=n_test, seed=seed, canary_repeats=0)
    write_dataset(out, splits, info)
    return out


def classification_dataset(out: Path, *, n_train: int = 24, n_test: int = 8) -> Path:
    """Two classes that a model can tell apart from the first word."""
    words = {"neg": ["awful", "broken", "late", "rude"], "pos": ["great", "fast", "kind", "perfect"]}
    def rec(i: int, split: str) -> Record:
        label = "pos" if i % 2 else "neg"
        w = words[label][i % 4]
        return Record(id=f"{split}-{i}", text=f"{w} service, order {i:04d} was {w}.", label=label)
    splits = {"train": [rec(i, "train") for i in range(n_train)], "test": [rec(i, "test") for i in range(n_test)]}
    write_dataset(out, splits, DatasetInfo(name="toy-cls", source="test", task="classification",
                                           class_labels=["neg", "pos"]))
    return out
