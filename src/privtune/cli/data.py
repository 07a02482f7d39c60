"""`privtune data ...`: generate, import, inspect and validate datasets."""

from __future__ import annotations

from pathlib import Path

import typer

from privtune.utils.progress import console

data_app = typer.Typer(no_args_is_help=True, help="Generate, import, inspect and validate private-text datasets.")


@data_app.command("validate")
def validate(path: Path = typer.Argument(..., help="Dataset directory.")) -> None:
    """Check a dataset directory against the contract (records, spans, hash)."""
    from privtune.data.schema import load_dataset

    ds = load_dataset(path)
    counts = ", ".join(f"{k} {len(v)}" for k, v in ds.splits.items())
    console.print(f"[green]ok[/] {path}: {counts}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
