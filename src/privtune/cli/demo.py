"""`privtune demo`: the whole pipeline on the embedded default model (or `--model SPEC`), offline, with a report at
the end."""

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
    scale: Optional[str] = typer.Option(None, "--scale", help="default; tiny (a seconds-sized model, for tests); "
                                        "real (sizes for a ~135M-parameter pretrained model, the default with "
                                        "--model other than embedded)."),
    model: Optional[str] = typer.Option(None, "--model", help="Base model spec instead of the scale's (e.g. "
                                        "smollm2-135m: Das et al.'s comparison on a real pretrained model)."),
) -> None:
    """Build the embedded base model (or --model), fine-tune it with fft, lora, dp-fft and dp-lora (ε = 8),
    evaluate, report."""
    from privtune.cli.report import print_markdown
    from privtune.experiments.demo import run_demo

    res = run_demo(out=out, scale=scale, workers=workers, model=model)
    print_markdown(res.markdown)
    t = res.timings_s
    base = {True: "built", False: "cached"}.get(t.get("base_model_built"), "ready")
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
