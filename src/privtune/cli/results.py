"""`privtune results`: export a study's results (CSV, Parquet) or print its summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from privtune.utils.progress import console


def results_cmd(
    study_dir: Path = typer.Argument(..., help="Study directory (holds results.sqlite)."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Write every column of every run to this CSV file."),
    parquet: Optional[Path] = typer.Option(None, "--parquet", help=escape("Write them to this Parquet file (needs "
                                                       "the `parquet` extra: pip install 'privtune[parquet]').")),
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild results.sqlite and results.csv from study.toml "
                                 "and the run directories (a damaged or lost store); the old file is kept beside "
                                 "it as results.sqlite.old-TIME."),
) -> None:
    """Export the results store, or without --csv/--parquet print the summary table."""
    if rebuild:
        from privtune.experiments.sweep import rebuild_store

        moved = rebuild_store(study_dir)
        if moved is not None:
            console.print(f"[yellow]kept[/] the previous store as {escape(str(moved))}", highlight=False)
        console.print(f"[green]rebuilt[/] {escape(str(study_dir / 'results.sqlite'))} from {escape(str(study_dir / 'runs'))}", highlight=False)
    if csv is None and parquet is None:
        from privtune.cli.report import print_markdown
        from privtune.experiments.analysis import views
        from privtune.experiments.report import markdown_summary
        from privtune.experiments.store import open_store

        with open_store(study_dir) as store:
            rows, name = store.rows(), store.study().get("name", "study")
        print_markdown(markdown_summary(name, views(rows), []).split("\n## Findings")[0] + "\n")
        return
    from privtune.experiments.store import export_results

    for p in export_results(study_dir, csv=csv, parquet=parquet):
        console.print(f"[green]wrote[/] {escape(str(p))}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("results")(results_cmd)
