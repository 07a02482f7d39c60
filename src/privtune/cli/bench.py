"""`privtune bench`: DP vs non-private training cost (time per step, peak memory) in one process; `--scaling` plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from privtune.utils.progress import console


def bench_cmd(
    model: str = typer.Option("embedded", "--model", help="Base model spec (embedded, tiny:ARCH, a directory, ...)."),
    batch: int = typer.Option(16, "--batch", help="Sequences per step (one micro-batch)."),
    seq: int = typer.Option(128, "--seq", help="Tokens per sequence (packed, no padding)."),
    rounds: int = typer.Option(5, "--rounds", help="Timed rounds (each method one step per round)."),
    warmup: int = typer.Option(1, "--warmup", help="Rounds excluded from timing."),
    dp_engine: Optional[str] = typer.Option(None, "--dp-engine", help="Per-example gradient engine of the DP "
                                            "methods (default: privtune's default, bk)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: torch's)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="Measure peak memory (one extra step each)."),
    scaling: bool = typer.Option(False, "--scaling", help="Vary model width, sequence length and batch size and "
                                 "plot cost growth (needs --out)."),
    quick: bool = typer.Option(False, "--quick", help="--scaling with two points per factor."),
    out: Optional[Path] = typer.Option(None, "--out", help="--scaling: the PNG to write (JSON beside it)."),
    records_per_user: int = typer.Option(4, "--records-per-user", help="Also time each DP method with user-level "
                                         "clipping, the batch grouped into users of this many sequences "
                                         "(user_over_record_time); 0: skip."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (ratios first, then raw figures)."),
) -> None:
    """Time per optimizer step and peak memory of lora vs dp-lora and fft vs dp-fft, measured interleaved in one
    process on the same batches; prints the DP/non-DP ratios and the raw figures."""
    from privtune.errors import ConfigError, fmt
    from privtune.training.bench import BenchConfig, run_bench

    cfg = BenchConfig(model=model, batch=batch, seq=seq, rounds=rounds, warmup=warmup, dp_engine=dp_engine,
                      threads=threads, device=device, memory=memory, records_per_user=records_per_user).validate()
    if dp_engine is not None:
        from privtune.training.dp import get_engine

        get_engine(dp_engine)
    note = (lambda s: console.print(f"[dim]{escape(s)}[/]", highlight=False)) if not as_json else None
    if scaling:
        from privtune.training.bench_scaling import ScalingConfig, plot_scaling, run_scaling

        if out is None:
            raise ConfigError(fmt("--out", "a PNG path with --scaling", None, "Pass --out scaling.png."))
        sc = ScalingConfig.quick(cfg) if quick else ScalingConfig(base=cfg)
        result = run_scaling(sc, progress=note)
        png = plot_scaling(result, out, pairs=cfg.pairs)
        data = result.to_dict()
        png.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n", "utf-8")
        if as_json:
            typer.echo(json.dumps(data, indent=2))
        else:
            console.print(escape(f"wrote {png} and {png.with_suffix('.json')}"), highlight=False)
        return
    result = run_bench(cfg, progress=note)
    d = result.to_dict()
    if as_json:
        typer.echo(json.dumps(d, indent=2))
        return
    env = d["environment"]
    console.print(escape(f"{model}: batch {batch} x {seq} tokens, {rounds} rounds after {warmup} warm-up, "
                         f"threads {env['threads']} on {env['device']}, load {env['loadavg_before'][0]:.1f} -> "
                         f"{env['loadavg_after'][0]:.1f}"), highlight=False)
    for name, m in d["methods"].items():
        mem = "-" if m["peak_memory_mb"] is None else f"{m['peak_memory_mb']:.1f} MiB"
        console.print(f"  {name:8s} {m['step_s']:.3f} s/step   peak {mem:>12s}   trainable "
                      f"{m['trainable_params']:,}" + (f"   engine {m['dp_engine']}" if m["dp_engine"] else ""),
                      highlight=False)
    for k, v in result.ratios.items():
        console.print(f"  {k} = {'-' if v is None else f'{v:.3f}'}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("bench", help="DP vs non-private training cost in one process (ratios, raw figures; --scaling "
                              "plot).")(bench_cmd)
