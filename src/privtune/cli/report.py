"""`privtune report`: one self-contained HTML page and a Markdown summary of a study directory."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from privtune.utils.progress import console


def print_markdown(md: str) -> None:
    """Rendered on a terminal; the Markdown text itself when stdout is a file or a pipe (for pull requests)."""
    import sys

    if sys.stdout.isatty():
        from rich.console import Console
        from rich.markdown import Markdown

        Console().print(Markdown(md))
    else:
        typer.echo(md, nl=False)


def report_cmd(
    study_dir: Path = typer.Argument(..., help="Study directory (from `privtune sweep` or `privtune demo`)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file (default DIR/report.html); report.md "
                                       "and plots/ are written beside it."),
) -> None:
    """Write the HTML report and report.md (Pareto front, ε curves, cost, attacks, findings); print the summary."""
    from privtune.experiments.report import write_report

    rep = write_report(study_dir, out=out)
    print_markdown(rep.markdown)
    console.print(f"[green]report[/] {escape(str(rep.html_path))} (summary: {escape(str(rep.markdown_path))})",
                  highlight=False)


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)
