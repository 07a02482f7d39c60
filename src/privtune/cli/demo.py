"""`privtune demo`: the whole pipeline on the embedded default model, offline, with a report at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from privtune.utils.progress import console


def demo_cmd(
    out: Path = typer.Option(Path("demo"), "--out", "-o", help="Study directory (re-running reuses what is done)."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", help="Configurations in parallel processes "
                                          "(default: the demo's measured best)."),
    scale: str = typer.Option("default", "--scale", help="default, or tiny (a seconds-sized model, for tests)."),
) -> None:
    """Build the embedded base model, fine-tune it with fft, lora, dp-fft and dp-lora (ε = 8), evaluate, report."""
    from privtune.cli.report import print_markdown
    from privtune.experiments.demo import run_demo

    res = run_demo(out=out, scale=scale, workers=workers)
    print_markdown(res.markdown)
    t = res.timings_s
    base = "built" if t.get("base_model_built") else "cached"
    console.print(f"time: base model {t['base_model']:.0f} s ({base}), runs {t['sweep']:.0f} s, report "
                  f"{t['report']:.0f} s, total {t['total']:.0f} s", highlight=False)
    for o in res.sweep.failed:
        console.print(f"[red]failed[/] {escape(f'{o.run_id} at {o.stage}: {o.error}')}", highlight=False,
                      soft_wrap=True)
    console.print(f"[bold green]report[/] {escape(str(res.report))}", highlight=False)
    if res.sweep.failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
