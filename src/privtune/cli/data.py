"""`privtune data ...`: generate, import, inspect and validate datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from privtune.data.synth import GENERATORS
from privtune.utils.progress import console

data_app = typer.Typer(no_args_is_help=True, help="Generate, import, inspect and validate private-text datasets.")


def _summary(path: Path) -> None:
    """Print what a dataset directory holds, with canary secrets redacted."""
    from rich.table import Table

    from privtune.data.schema import load_dataset

    ds = load_dataset(path)
    info = ds.info
    counts = ", ".join(f"{k} {v}" for k, v in info.counts.items())
    console.print(f"[green]wrote[/] {path}: {info.name} ({counts})", highlight=False)
    if info.labels:
        t = Table("label", "spans", box=None, pad_edge=False)
        for label, n in info.labels.items():
            t.add_row(label, str(n))
        console.print(t)
    if info.canary:
        c = info.canary
        console.print(f"canary: {c['template'].replace('{secret}', '[CANARY]')} x{c['repeats']} "
                      f"({c['candidates']:,} candidates; secret in dataset.json)", highlight=False)
    if info.audit:
        a = info.audit
        console.print(f"audit canaries: {len(a['secrets'])} ({sum(a['included'])} in train)", highlight=False)


@data_app.command("synth")
def synth(
    generator: str = typer.Argument(..., help=f"Generator: {', '.join(GENERATORS.names())}."),
    out: Path = typer.Option(..., "--out", "-o", help="Output dataset directory (created atomically)."),
    train: Optional[int] = typer.Option(None, "--train", help="Training records (default: the generator's, "
                                        "10,000 for customersim, 5,000 for synbio)."),
    test: Optional[int] = typer.Option(None, "--test", help="Test records (default 1,000 / 500)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; same seed and options give the same data."),
    canary: Optional[str] = typer.Option(None, "--canary", help="The canary secret (digits); default: 6 random "
                                         "digits from the seed. Never printed."),
    canary_repeats: Optional[int] = typer.Option(None, "--canary-repeats",
                                                 help="Copies of the canary in train (default 10; 0 disables)."),
    audit_canaries: int = typer.Option(0, "--audit-canaries", help="One-run audit canaries (Steinke et al. "
                                       "2023), each in train with probability 1/2."),
    pool: str = typer.Option("private", "--pool", help="Identity pool: private, or public (disjoint identities, "
                             "no canaries: for pre-training a base model)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a different dataset at --out."),
) -> None:
    """Generate a synthetic private-text dataset with exact sensitive spans."""
    from privtune.data.synth import synth_dataset

    path = synth_dataset(generator, out=out, overwrite=overwrite, n_train=train, n_test=test, seed=seed,
                         canary=canary, canary_repeats=canary_repeats, audit_canaries=audit_canaries, pool=pool)
    _summary(path)


@data_app.command("validate")
def validate(path: Path = typer.Argument(..., help="Dataset directory.")) -> None:
    """Check a dataset directory against the contract (records, spans, hash)."""
    from privtune.data.schema import load_dataset

    ds = load_dataset(path)
    counts = ", ".join(f"{k} {len(v)}" for k, v in ds.splits.items())
    console.print(f"[green]ok[/] {path}: {counts}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
