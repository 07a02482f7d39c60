"""`privtune sweep`: run every configuration of a study (train + eval), resumably, into a study directory."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from privtune.utils.progress import console


def sweep_cmd(
    study: Path = typer.Argument(..., help="Study TOML file (see docs/experiments.md)."),
    out: Path = typer.Option(..., "--out", "-o", help="Study directory (created, or resumed when it exists)."),
    workers: int = typer.Option(1, "--workers", "-w", help="Configurations run at a time, each in a fresh process "
                                "with cores/N torch threads; 0 runs them in this process (debugging)."),
    skip_failed: bool = typer.Option(False, "--skip-failed", help="Keep runs that failed in an earlier sweep as "
                                     "failed instead of retrying them."),
) -> None:
    """Run a study; completed runs are skipped, interrupted ones resumed. Exit status 1 if any run failed."""
    from privtune.experiments.sweep import run_sweep

    res = run_sweep(study, out=out, workers=workers, retry_failed=not skip_failed)
    console.print(f"[bold]{escape(str(out))}[/]: " + escape(
        f"{res.count('completed')} run(s) done now, {res.count('skipped')} already done, {len(res.failed)} failed, "
        f"in {res.wall_s:.0f} s. Results: {out / 'results.sqlite'}, {out / 'results.csv'}. Report: privtune report "
        f"{out}"), highlight=False)
    for o in res.failed:
        console.print(f"  [red]failed[/] {escape(f'{o.run_id} at {o.stage}: {o.error}')}", highlight=False,
                      soft_wrap=True)
    if res.failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_cmd)
