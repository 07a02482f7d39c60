"""`privtune model ...`: build the embedded base model ahead of time, and show what a model spec resolves to."""

from __future__ import annotations

import json

import typer
from rich.markup import escape

from privtune.utils.progress import console

model_app = typer.Typer(no_args_is_help=True, help="Build and inspect base models (the embedded default, HF models).")


@model_app.command("build")
def build(size: str = typer.Option("default", "--size", help="Embedded model size config: default or tiny."),
          force: bool = typer.Option(False, "--force", help="Rebuild even if cached."),
          as_json: bool = typer.Option(False, "--json", help="Print the build record.")) -> None:
    """Pre-train the embedded GPT-NeoX on public synthetic text and cache it (reused afterwards)."""
    from privtune.models.embedded import build_embedded

    res = build_embedded(size, force=force)
    if as_json:
        typer.echo(json.dumps(res.to_dict(), indent=2))
        return
    what = "built" if res.built else "cached"
    console.print(f"[green]{what}[/] embedded:{escape(size)} at {escape(str(res.path))}: {res.params / 1e6:.2f}M parameters, held-out "
                  f"loss {res.heldout_loss:.3f} nats/token, build {res.build_time_s:.0f} s", highlight=False)


@model_app.command("info")
def info(spec: str = typer.Argument("embedded", help="Model spec: embedded[:SIZE], minilm[:LAYERS], smollm2-135m, "
                                   "gemma3-270m, tiny:ARCH, a .gguf file, a directory or hub id."),
         task: str = typer.Option("lm", "--task", help="lm or classification."),
         as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Load a model spec offline and show its architecture, size and LoRA targets (embedded: built if missing;
    smollm2-135m, gemma3-270m and .gguf files: converted into the model cache on first use)."""
    from privtune.models.embedded import read_build_info
    from privtune.models.gguf import is_gguf_spec, read_provenance
    from privtune.models.loading import count_params, load_model, lora_target_modules

    lm = load_model(spec, task=task, num_labels=2 if task == "classification" else None, device="cpu")
    trainable, total = count_params(lm.model)
    out = {**lm.to_dict(), "params": total, "vocab_size": len(lm.tokenizer),
           "lora_targets": lora_target_modules(lm.model)}
    if spec == "embedded" or spec.startswith("embedded:"):
        out["build"] = (read_build_info(spec.partition(":")[2] or "default") or {}).get("result")
    if is_gguf_spec(spec):
        out["provenance"] = read_provenance(lm.source)
    if as_json:
        typer.echo(json.dumps(out, indent=2, default=str))
        return
    for k, v in out.items():
        console.print(f"[bold]{k}[/]: {escape(str(v))}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")
