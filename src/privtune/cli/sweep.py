"""`privtune sweep`: run every configuration of a study (train + eval), resumably, into a study directory."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from privtune.utils.progress import console


def _backends() -> str:
    from privtune.experiments.backends import BACKENDS

    return ", ".join(BACKENDS.names())


def sweep_cmd(
    study: Path = typer.Argument(..., help="Study TOML file (see docs/experiments.md)."),
    out: Path = typer.Option(..., "--out", "-o", help="Study directory (created, or resumed when it exists)."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", help="local: configurations run at a time "
                                          "(default 1), each in a fresh process with cores/N torch threads; 0 runs "
                                          "them in this process (debugging). ray: runs submitted at once (default "
                                          "all; Ray queues them until resources free up)."),
    backend: str = typer.Option("local", "--backend", help=f"Where runs execute: {_backends()} (local: this "
                                "machine; ray: a Ray cluster, with privtune's ray extra installed). See "
                                "docs/experiments.md."),
    address: Optional[str] = typer.Option(None, "--address", help="--backend ray: the cluster to join (auto, "
                                          "HOST:PORT or ray://HOST:PORT); default: start a local Ray instance."),
    skip_failed: bool = typer.Option(False, "--skip-failed", help="Keep runs that failed in an earlier sweep as "
                                     "failed instead of retrying them."),
) -> None:
    """Run a study; completed runs are skipped, interrupted ones resumed. Exit status 1 if any run failed."""
    from privtune.experiments.sweep import run_sweep

    res = run_sweep(study, out=out, workers=workers, retry_failed=not skip_failed, backend=backend,
                    address=address)
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
