"""`privtune account ...`: ε for a training schedule, the noise for a budget, ε against steps (PNG)."""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.markup import escape

from privtune.accounting import ACCOUNTANTS, Ledger
from privtune.accounting import tuning
from privtune.utils.progress import console, make_progress

account_app = typer.Typer(no_args_is_help=True,
                          help="Privacy accounting for DP-SGD (Poisson sampling, add/remove neighbours): "
                               "ε for a schedule, noise for a budget, curves.")

CHOICES = [*ACCOUNTANTS.names(), "all"]
ACCOUNTANT_HELP = (f"One of {', '.join(CHOICES)}. rdp, pld and prv give certified upper bounds; edgeworth "
                   "is an estimate shown beside its certified (PLD) value.")
ORDER_HELP = (f"Edgeworth expansion order 1, 2 or 3 (default {tuning.EDGEWORTH_DEFAULT_ORDER}: the EW-Tune "
              "accountant; higher orders are not uniformly closer to the exact ε).")

# Shared options (typer declares them per command).
SIGMA = typer.Option(..., "--noise-multiplier", help="σ: noise std / clipping norm.")
RATE = typer.Option(None, "--sample-rate", help="q: Poisson inclusion probability (expected batch / N).")
STEPS = typer.Option(None, "--steps", help="Number of DP-SGD steps.")
N = typer.Option(None, "--dataset-size", help="N, instead of --sample-rate (with --batch-size).")
BATCH = typer.Option(None, "--batch-size", help="Expected (logical) batch size B; q = B/N.")
EPOCHS = typer.Option(None, "--epochs", help="Instead of --steps: steps = ceil(epochs·N/B).")
DELTA = typer.Option(1e-5, "--delta", help="Target δ (keep it well below 1/N).")
ACCOUNTANT = typer.Option("pld", "--accountant", help=ACCOUNTANT_HELP)
ORDER = typer.Option(tuning.EDGEWORTH_DEFAULT_ORDER, "--order", help=ORDER_HELP)
JSON = typer.Option(False, "--json", help="Print one JSON object instead of text.")


@contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Library warnings (e.g. δ >= 1/N) become one 'warning:' line each on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        if issubclass(w.category, UserWarning):
            console.print(f"[yellow]warning:[/] {escape(str(w.message))}", highlight=False, soft_wrap=True)


def _accountants(name: str, order: int):
    from privtune.accounting.compare import make_accountants
    from privtune.errors import ConfigError, fmt

    if name not in CHOICES:
        raise ConfigError(fmt("--accountant", f"one of {', '.join(CHOICES)}", name))
    return make_accountants(None if name == "all" else [name], order=order)


def _fmt(x) -> str:
    return "inf" if x in (None, "inf") or x == float("inf") else f"{x:.6g}"


@account_app.command("epsilon")
def epsilon_cmd(noise_multiplier: float = SIGMA, sample_rate: Optional[float] = RATE,
                steps: Optional[int] = STEPS, dataset_size: Optional[int] = N,
                batch_size: Optional[int] = BATCH, epochs: Optional[float] = EPOCHS, delta: float = DELTA,
                accountant: str = ACCOUNTANT, order: int = ORDER, as_json: bool = JSON) -> None:
    """ε spent by a schedule of DP-SGD steps, at δ."""
    from privtune.accounting.compare import compare, resolve_schedule
    from privtune.accounting.events import check_delta, warn_delta

    with _warnings_as_lines():
        schedule = resolve_schedule(sample_rate=sample_rate, steps=steps, dataset_size=dataset_size,
                                    batch_size=batch_size, epochs=epochs)
        warn_delta(check_delta(delta), schedule.dataset_size)
        ledger = Ledger.of(noise_multiplier=noise_multiplier, sample_rate=schedule.sample_rate,
                           steps=schedule.steps)
        accs = _accountants(accountant, order)
        with make_progress() as progress:
            task = progress.add_task("accounting", total=len(accs))
            rows = compare(ledger, delta=delta, accountants=accs, on_done=lambda: progress.advance(task))
    if accountant != "all":
        from privtune.errors import ConfigError

        row = rows[0]
        if not hasattr(row, "epsilon"):
            raise ConfigError(row.error)
        where = (f"at δ = {delta:g} for {schedule.steps} steps of σ = {noise_multiplier:g}, "
                 f"q = {schedule.sample_rate:.6g}")
        if as_json:
            typer.echo(json.dumps(row.to_dict()))
        elif row.certified:
            typer.echo(f"ε = {_fmt(row.epsilon)} (certified, {row.accountant}) {where}")
        else:
            typer.echo(f"ε ≈ {_fmt(row.epsilon)} (estimate, {row.accountant} order {row.order}); "
                       f"certified ε = {_fmt(row.certified_epsilon)} "
                       f"({row.details.get('certified_by', 'pld')}) {where}")
        return
    if as_json:
        typer.echo(json.dumps({"results": [r.to_dict() for r in rows]}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ε at δ = {delta:g}: {schedule.steps} steps, σ = {noise_multiplier:g}, "
                        f"q = {schedule.sample_rate:.6g}")
    for col in ("accountant", "kind", "ε", "time"):
        table.add_column(col, justify="right" if col in ("ε", "time") else "left")
    for r in rows:
        if hasattr(r, "epsilon"):
            label = r.accountant + (f" (order {r.order})" if r.order else "")
            table.add_row(label, r.kind, _fmt(r.epsilon), f"{r.time_s * 1e3:.1f} ms")
        else:
            table.add_row(r.accountant, "certified" if r.certified else "estimate", "n/a", r.error)
    Console().print(table)


@account_app.command("noise")
def noise_cmd(epsilon: float = typer.Option(..., "--epsilon", help="Target ε (certified)."),
              sample_rate: Optional[float] = RATE, steps: Optional[int] = STEPS,
              dataset_size: Optional[int] = N, batch_size: Optional[int] = BATCH,
              epochs: Optional[float] = EPOCHS, delta: float = DELTA, accountant: str = ACCOUNTANT,
              order: int = ORDER, as_json: bool = JSON) -> None:
    """Smallest noise multiplier whose certified ε meets the target. With edgeworth: starts from the Edgeworth
    σ and certifies upwards with PLD; both are reported."""
    from privtune.accounting.compare import calibrate_each, resolve_schedule

    with _warnings_as_lines():
        schedule = resolve_schedule(sample_rate=sample_rate, steps=steps, dataset_size=dataset_size,
                                    batch_size=batch_size, epochs=epochs)
        accs = _accountants(accountant, order)
        with make_progress() as progress:
            task = progress.add_task("calibrating", total=len(accs))
            rows = calibrate_each(target_epsilon=epsilon, delta=delta, schedule=schedule, accountants=accs,
                                  on_done=lambda: progress.advance(task))
    if accountant != "all":
        row = rows[0]
        if not hasattr(row, "noise_multiplier"):
            from privtune.errors import BudgetError

            raise BudgetError(row.error)
        if as_json:
            typer.echo(json.dumps(row.to_dict()))
            return
        typer.echo(f"σ = {row.noise_multiplier:.6g}: certified ε = {row.epsilon:.6g} <= {epsilon:g} "
                   f"({row.certified_by}) at δ = {delta:g} for {schedule.steps} steps, "
                   f"q = {schedule.sample_rate:.6g}")
        if row.edgeworth_noise_multiplier is not None:
            typer.echo(f"  Edgeworth (order {row.order}) alone would give σ = "
                       f"{row.edgeworth_noise_multiplier:.6g}, whose certified ε is "
                       f"{row.certified_epsilon_at_edgeworth_noise:.6g} (estimate at the returned σ: "
                       f"{row.edgeworth_epsilon:.6g})")
        return
    if as_json:
        typer.echo(json.dumps({"results": [r.to_dict() for r in rows]}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"σ for certified ε <= {epsilon:g} at δ = {delta:g}: {schedule.steps} steps, "
                        f"q = {schedule.sample_rate:.6g}")
    for col in ("accountant", "σ", "certified ε at σ", "estimate's own σ", "time"):
        table.add_column(col, justify="left" if col == "accountant" else "right")
    for r in rows:
        if hasattr(r, "noise_multiplier"):
            own = ("" if r.edgeworth_noise_multiplier is None
                   else f"{r.edgeworth_noise_multiplier:.6g} (estimate)")
            table.add_row(r.accountant, f"{r.noise_multiplier:.6g}", f"{r.epsilon:.6g}", own,
                          f"{r.time_s:.2f} s")
        else:
            table.add_row(r.accountant, "n/a", "", "", r.error)
    Console().print(table)


@account_app.command("curve")
def curve_cmd(noise_multiplier: float = SIGMA, sample_rate: Optional[float] = RATE,
              steps: Optional[int] = STEPS, dataset_size: Optional[int] = N,
              batch_size: Optional[int] = BATCH, epochs: Optional[float] = EPOCHS, delta: float = DELTA,
              out: Path = typer.Option(..., "--out", help="PNG file to write."),
              accountant: str = typer.Option("all", "--accountant", help=ACCOUNTANT_HELP + " Default: all."),
              points: int = typer.Option(25, "--points", help="Step counts evaluated per accountant."),
              order: int = ORDER, as_json: bool = JSON) -> None:
    """Plot ε against steps (1..steps) for every accountant to a PNG."""
    from privtune.accounting.compare import check_png_path, epsilon_curve, plot_curve, resolve_schedule

    with _warnings_as_lines():
        schedule = resolve_schedule(sample_rate=sample_rate, steps=steps, dataset_size=dataset_size,
                                    batch_size=batch_size, epochs=epochs)
    accs = _accountants(accountant, order)
    check_png_path(out)  # fail before the work, not after
    with make_progress() as progress:
        task = progress.add_task("ε against steps", total=len(accs) * min(points, schedule.steps))
        curve = epsilon_curve(noise_multiplier=noise_multiplier, sample_rate=schedule.sample_rate,
                              steps=schedule.steps, delta=delta, accountants=accs, points=points,
                              on_point=lambda: progress.advance(task))
    path = plot_curve(curve, out)
    if as_json:
        typer.echo(json.dumps({**curve.to_dict(), "out": str(path)}))
    else:
        console.print(f"[green]wrote[/] {escape(str(path))}")


def register(app: typer.Typer) -> None:
    app.add_typer(account_app, name="account")
