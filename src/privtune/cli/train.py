"""`privtune train`: fine-tune a base model on a dataset directory into a run directory (or resume one)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

from privtune.utils.progress import console


#: options that ``--resume`` may change: they do not touch the privacy plan
RESUME_CHANGES = {"lr"}


def _methods() -> str:
    from privtune.training.methods import METHODS

    return ", ".join(METHODS.names())


def _engines() -> str:
    from privtune.training.dp import ENGINES

    return ", ".join(ENGINES.names())


def train_cmd(
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset directory (train.jsonl, test.jsonl, dataset.json)."),
    method: Optional[str] = typer.Option(None, "--method", help="fft, lora, dp-fft, dp-lora, rgp or dp-rgp "
                                         "(default lora)."),
    model: Optional[str] = typer.Option(None, "--model", help="embedded (default), embedded:SIZE, tiny:ARCH, "
                                        "minilm[:LAYERS], a local directory or a Hugging Face id in the local "
                                        "cache."),
    out: Optional[Path] = typer.Option(None, "--out", help="New run directory."),
    task: Optional[str] = typer.Option(None, "--task", help="lm (default) or classification."),
    epsilon: Optional[float] = typer.Option(None, "--epsilon", help="DP target ε (certified); calibrates the noise."),
    delta: Optional[float] = typer.Option(None, "--delta", help="DP δ (default 1e-5)."),
    noise_multiplier: Optional[float] = typer.Option(None, "--noise-multiplier",
                                                     help="σ given directly (noise std / clipping norm)."),
    max_grad_norm: Optional[float] = typer.Option(None, "--max-grad-norm", help="Per-example clipping norm C."),
    accountant: Optional[str] = typer.Option(None, "--accountant", help="Certified accountant: pld (default), prv, rdp."),
    noise_calibration: Optional[str] = typer.Option(
        None, "--noise-calibration", help="certified (default): sigma whose certified ε meets --epsilon. "
        "edgeworth-estimate: UNSAFE, research only (reproduces EW-Tune): sigma from an Edgeworth estimate alone; the "
        "run's certified ε exceeds --epsilon and is reported as such."),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="Passes over the data (default 3)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimizer steps (overrides --epochs)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Logical (expected) batch size (default 16)."),
    physical_batch_size: Optional[int] = typer.Option(None, "--physical-batch-size", help="Micro-batch bound."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Tokens per record (default 128)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (default: the method's)."),
    lr_schedule: Optional[str] = typer.Option(None, "--lr-schedule", help="linear (default), cosine or constant."),
    warmup_steps: Optional[int] = typer.Option(None, "--warmup-steps"),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay"),
    lora_r: Optional[int] = typer.Option(None, "--lora-r", help="LoRA rank (default 8)."),
    lora_alpha: Optional[float] = typer.Option(None, "--lora-alpha", help="LoRA alpha (default 16)."),
    lora_dropout: Optional[float] = typer.Option(None, "--lora-dropout"),
    lora_targets: Optional[str] = typer.Option(None, "--lora-targets", help="Comma-separated module names "
                                               "(default: every linear layer of attention and MLP blocks)."),
    rgp_rank: Optional[int] = typer.Option(None, "--rank", help="RGP gradient-carrier rank (default 1)."),
    rgp_power_iters: Optional[int] = typer.Option(None, "--power-iters",
                                                  help="RGP power iterations per step (default 1)."),
    rgp_carriers: Optional[str] = typer.Option(None, "--rgp-carriers", help="RGP carriers from the historical "
                                               "update (history, default) or the weight itself (weight)."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    secure_rng: Optional[bool] = typer.Option(None, "--secure-rng/--no-secure-rng",
                                              help="DP noise and sampling straight from the OS CSPRNG, with the "
                                              "floating-point mitigation (Opacus' secure mode). By default they come "
                                              "from a secret key drawn from OS entropy per session, never written."),
    noise_seed: Optional[int] = typer.Option(None, "--noise-seed", help="Reproducible DP noise and sampling from "
                                             "this seed, for tests and debugging: the guarantee does not hold "
                                             "against anyone who knows it (it is stored in run.json)."),
    dp_engine: Optional[str] = typer.Option(None, "--dp-engine", help="Per-example gradient engine (default bk: "
                                            "one backward pass, see docs/performance.md)."),
    dp_diagnostics: Optional[bool] = typer.Option(
        None, "--dp-diagnostics/--no-dp-diagnostics", help="DP: also record the training loss, token/example counts, "
        "empty batches and clip fraction, labelled as outside the DP guarantee (they are computed from the private "
        "data without noise; by default a DP run does not release them)."),
    privacy_unit: Optional[str] = typer.Option(None, "--privacy-unit", help="What the DP guarantee protects: record "
                                               "(default) or user (all records of one person, named by "
                                               "meta.user or --user-key): users are Poisson-sampled, --batch-size "
                                               "is then the expected users per step, and ε is per user."),
    max_records_per_user: Optional[int] = typer.Option(None, "--max-records-per-user", help="User-level: at most "
                                                       "this many records of a sampled user per step, chosen at "
                                                       "random (default: all)."),
    user_key: Optional[str] = typer.Option(None, "--user-key", help="The meta key naming a record's owner "
                                           "(default user)."),
    trajectory: Optional[bool] = typer.Option(
        None, "--trajectory/--no-trajectory", help="Evaluate privacy and utility during training into "
        "RUN/trajectory.jsonl (default on; off for speed)."),
    eval_points: Optional[int] = typer.Option(None, "--eval-points", help="Evenly spaced in-training evaluations "
                                              "(default 5; step 0 and epoch ends are added)."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="Steps between checkpoints."),
    resume_reserve: Optional[int] = typer.Option(None, "--resume-reserve",
                                                 help="DP: steps of budget kept for re-execution after a crash."),
    device: Optional[str] = typer.Option(None, "--device", help="auto (default), cpu, cuda."),
    allow_download: Optional[bool] = typer.Option(None, "--allow-download/--offline",
                                                  help="Let transformers download a hub model."),
    config: Optional[Path] = typer.Option(None, "--config", help=escape("TOML file with these options ([train] table).")),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this directory (its own "
                                          "configuration; only --lr may change, e.g. after a NaN loss)."),
    nproc: Optional[int] = typer.Option(None, "--nproc", help="Train in N local processes (data parallel, noise "
                                        "added once; as torchrun --nproc_per_node N -m privtune train)."),
    as_json: bool = typer.Option(False, "--json", help="Print run.json."),
) -> None:
    """Fine-tune with fft, lora, dp-fft, dp-lora, rgp or dp-rgp; writes model, ledger, checkpoints and run.json to
    --out. Exit status 0: completed; 3: stopped early by the privacy budget (budget_exhausted; the model is saved);
    2: bad input."""
    opts = dict(locals())
    from privtune.errors import ConfigError, fmt
    from privtune.training.config import TrainConfig
    from privtune.training.run import resume as resume_run
    from privtune.training.run import train

    given = {k: v for k, v in opts.items()
             if k not in ("config", "resume", "as_json", "out", "nproc") and v is not None}
    if resume is not None:
        fixed = sorted(f"--{k.replace('_', '-')}" for k in set(given) - RESUME_CHANGES)
        if fixed or config is not None or out is not None:
            raise ConfigError(fmt("--resume", "used alone or with --lr (the run keeps its own configuration and "
                                  "privacy plan)", fixed + (["--config"] if config else []) + (["--out"] if out else [])))
        result = resume_run(resume, nproc=nproc, lr=lr)
    else:
        if out is None:
            raise ConfigError(fmt("--out", "given", None, "Name a new run directory."))
        base: dict[str, Any] = TrainConfig.from_toml(config).to_dict() if config is not None else {}
        if "lora_targets" in given:
            given["lora_targets"] = [t.strip() for t in given["lora_targets"].split(",") if t.strip()]
        if "data" in given:
            given["data"] = str(given["data"])
        cfg = TrainConfig.from_dict({**base, **given})
        result = train(cfg, out=out, nproc=nproc)
    rec = result.record
    if int(os.environ.get("RANK", "0")) > 0:  # under torchrun: rank 0 reports
        return
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        _print_result(result)
    if rec["status"] == "budget_exhausted":
        raise typer.Exit(EXIT_BUDGET_EXHAUSTED)


#: Exit status of a run that the privacy budget guard finished early (run.json ``status`` ``budget_exhausted``):
#: the model is saved and evaluable, but trained for fewer steps than planned. 0 is a completed run, 2 bad input.
EXIT_BUDGET_EXHAUSTED = 3


def _print_result(result: Any) -> None:
    rec = result.record
    eps = rec.get("epsilon")
    priv = (f"ε = {eps:.3f} (certified, {rec.get('certified_by') or rec['accountant']}, δ = {rec['delta']:g})"
            if eps is not None else "no DP guarantee")
    if rec.get("epsilon_estimate") is not None:
        priv += f", estimate {rec['epsilon_estimate']:.3f} ({rec['epsilon_estimate_accountant']})"
    if eps is not None and rec.get("dp_randomness") == "seeded":
        priv += f", void against anyone who knows --noise-seed {rec['noise_seed']}"
    warnings = rec.get("privacy_warnings") or ([rec["privacy_warning"]] if rec.get("privacy_warning") else [])
    for w in warnings:
        console.print(f"[bold red]privacy warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
    if rec.get("target_met") is False and rec.get("noise_calibration") != "edgeworth-estimate":
        console.print(f"[bold red]certified ε {eps:.3f} exceeds the target {rec['target_epsilon']:g}[/]",
                      highlight=False)
    if eps is not None and rec.get("privacy_unit") == "user":
        cap = rec.get("max_records_per_user")
        console.print(escape(f"privacy unit: user (ε per user over {rec['n_users']:,} users; each sampled user "
                             f"contributes {'all their records' if cap is None else f'at most {cap} records'} "
                             "through one clipped gradient)"), highlight=False)
    elif rec.get("user_group_epsilon") is not None:
        console.print(escape(f"privacy unit: record. A user owns up to {rec['user_group_size']} records: such a user "
                             f"is protected at ε ≤ {rec['user_group_epsilon']:.3f} (group-privacy bound, "
                             f"δ = {rec['user_group_delta']:g}); use --privacy-unit user to protect people."),
                      highlight=False)
    color = "green" if rec["status"] == "completed" else "yellow"
    console.print(f"[{color}]{rec['status']}[/] " + escape(
        f"{result.run_dir}: {rec['method']} on {rec['model']}, {rec['steps']}/{rec['planned_steps']} steps, {priv}, "
        f"{_train_loss(rec)}, {rec['wall_time_s']:.1f} s"), highlight=False)
    if rec["status"] == "budget_exhausted":
        console.print(f"[yellow]the privacy budget allowed {rec['steps']} of {rec['planned_steps']} planned steps; "
                      f"the model is saved (exit status {EXIT_BUDGET_EXHAUSTED})[/]", highlight=False)


def _train_loss(rec: dict[str, Any]) -> str:
    """The final training loss as run.json releases it: a DP run's only as a labelled diagnostic."""
    diag = rec.get("dp_diagnostics")
    if not diag:
        loss = rec.get("final_train_loss")
        return f"train loss {loss if loss is None else round(loss, 4)}"
    if not diag.get("enabled"):
        return "train loss withheld (DP: computed from private data without noise; --dp-diagnostics records it)"
    loss = diag.get("final_train_loss")
    return f"train loss {loss if loss is None else round(loss, 4)} (diagnostic: {diag['label']})"


def register(app: typer.Typer) -> None:
    app.command("train", help=f"Fine-tune a model (methods: {_methods()}; DP engines: {_engines()}).")(train_cmd)
