"""`privtune eval RUN --data DIR`: measure what a fine-tuned model gives away and what it still does well."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from privtune.utils.progress import console


def eval_cmd(
    run: Path = typer.Argument(..., help="Run directory written by `privtune train`."),
    data: Path = typer.Option(..., "--data", help="Dataset directory the run was trained on."),
    only: str = typer.Option(None, "--only", help="Comma-separated stages: privacy,utility,exposure,mia,"
                                                 "extraction,audit,users (default: all; stages the data cannot "
                                                 "support are skipped)."),
    max_records: int = typer.Option(2000, "--max-records", help="Records per split (seeded subsample beyond "
                                                              "this); 0 = all."),
    exposure_method: str = typer.Option("auto", "--exposure-method",
                                        help="auto (exact up to 2e6 candidates), exact, or extrapolated."),
    seed: int = typer.Option(0, "--seed", help="Seed of subsampling, extraction prompts and distractors."),
    other_data: bool = typer.Option(False, "--other-data", help="DATA is not the dataset RUN was trained on, on "
                                    "purpose: write the results to RUN/eval-other/NAME-HASH.json (eval.json is "
                                    "kept). Without it such a dataset is refused."),
    user_key: str = typer.Option(None, "--user-key", help="Record field (meta.KEY) naming each record's owner, for "
                                 "the per-person measures (default: the run's, else `user`). Records without "
                                 "owners get none; a key missing on some records is an error."),
    as_json: bool = typer.Option(False, "--json", help="Also print eval.json to stdout."),
) -> None:
    """Evaluate RUN on DATA and write RUN/eval.json (privacy, utility, exposure, MIA, extraction, audit, per-person)."""
    from privtune.evaluation.evaluate import EvalConfig, eval_path, evaluate_run, print_summary

    cfg = EvalConfig(max_records=max_records or None, exposure_method=exposure_method, seed=seed,
                     user_key=user_key)
    cfg.extraction.seed = seed
    result = evaluate_run(run, data, only=only, config=cfg, other_data=other_data,
                          on_stage=lambda name, s: console.print(f"[green]✓[/] {escape(name)} ({s:.1f} s)"))
    print_summary(result)
    ds = result["dataset"]
    path = eval_path(run, ds["name"], ds["content_hash"], trained_on=ds["trained_on"])
    console.print(f"[green]wrote[/] {escape(str(path))}" + ("" if ds["trained_on"] else " (not the run's training data)"),
                  highlight=False, soft_wrap=True)
    if as_json:
        typer.echo(json.dumps(result, indent=2))


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
