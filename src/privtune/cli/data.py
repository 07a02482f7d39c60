"""`privtune data ...`: generate, import, inspect and validate datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from privtune.data.synth import GENERATORS
from privtune.data.taggers import TAGGERS
from privtune.utils.progress import console

data_app = typer.Typer(no_args_is_help=True, help="Generate, import, inspect and validate private-text datasets.")


def _summary(path: Path) -> None:
    """Print what a dataset directory holds, with canary secrets redacted."""
    from rich.table import Table

    from privtune.data.schema import load_dataset

    ds = load_dataset(path)
    info = ds.info
    counts = ", ".join(f"{k} {v}" for k, v in info.counts.items())
    console.print(f"[green]wrote[/] {escape(f'{path}: {info.name} ({counts})')}", highlight=False)
    if info.labels:
        t = Table("label", "spans", box=None, pad_edge=False)
        for label, n in info.labels.items():
            t.add_row(label, str(n))
        console.print(t)
    if info.canary:
        c = info.canary
        console.print(escape(f"canary: {c['template'].replace('{secret}', '[CANARY]')} x{c['repeats']} "
                             f"({c['candidates']:,} candidates; secret in dataset.json)"), highlight=False)
    if info.audit:
        a = info.audit
        console.print(f"audit canaries: {len(a['secrets'])} ({sum(a['included'])} in train)", highlight=False)


@data_app.command("synth")
def synth(
    generator: str = typer.Argument(..., help=f"Generator: {', '.join(GENERATORS.names())}."),
    out: Path = typer.Option(..., "--out", "-o", help="Output dataset directory (created atomically)."),
    train: Optional[int] = typer.Option(None, "--train", help="Training records (default: the generator's, "
                                        "10,000 for customersim, 5,000 for synbio)."),
    test: Optional[int] = typer.Option(None, "--test", help="Test records (default 1,000 / 500)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; same seed and options give the same data."),
    canary: Optional[str] = typer.Option(None, "--canary", help="The canary secret (digits); default: 6 random "
                                         "digits from the seed. Never printed."),
    canary_repeats: Optional[int] = typer.Option(None, "--canary-repeats",
                                                 help="Copies of the canary in train (default 10; 0 disables)."),
    audit_canaries: int = typer.Option(0, "--audit-canaries", help="One-run audit canaries (Steinke et al. "
                                       "2023), each in train with probability 1/2."),
    pool: str = typer.Option("private", "--pool", help="Identity pool: private, or public (disjoint identities, "
                             "no canaries: for pre-training a base model)."),
    records_per_user: Optional[str] = typer.Option(None, "--records-per-user", help="K records per person, or "
                                                   "A-B (each person's count uniform in A..B) (repeat customers keep name, phone and address; a person's "
                                                   "biographies keep their facts); every record names its owner in "
                                                   "meta.user. Default: one record per person, no meta.user."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a different dataset at --out."),
) -> None:
    """Generate a synthetic private-text dataset with exact sensitive spans."""
    from privtune.data.synth import synth_dataset

    path = synth_dataset(generator, out=out, overwrite=overwrite, n_train=train, n_test=test, seed=seed,
                         canary=canary, canary_repeats=canary_repeats, audit_canaries=audit_canaries, pool=pool,
                         records_per_user=_int_or_text(records_per_user))
    _summary(path)


def _int_or_text(v: str | None) -> int | str | None:
    return int(v) if v is not None and v.strip().isdigit() else v


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


@data_app.command("import")
def import_(
    src: Path = typer.Argument(..., help="A JSONL file, a CSV file, or a folder of .txt files (one document each)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output dataset directory (created atomically)."),
    test: Optional[Path] = typer.Option(None, "--test", help="A second source for test.jsonl."),
    test_fraction: Optional[float] = typer.Option(None, "--test-fraction",
                                                  help="Share of SRC put in test when --test is not given "
                                                       "(default 0.1; 0 keeps everything in train)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the train/test split."),
    text_column: str = typer.Option("text", "--text-column", help="CSV/TSV: the column holding the text "
                                    "(comma-separated columns, e.g. a sentence pair, are joined by a newline)."),
    label_column: Optional[str] = typer.Option(None, "--label-column",
                                               help="The class label column (CSV/TSV) or key (JSONL): a "
                                                    "classification dataset."),
    tagger: list[str] = typer.Option([], "--tagger", "-t",
                                     help=f"Span tagger, repeatable (union): {', '.join(TAGGERS.names())}; "
                                          "values:FILE[:LABEL] for known values (CSV columns are labels)."),
    name: Optional[str] = typer.Option(None, "--name", help="Dataset name (default: the --out folder name)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a different dataset at --out."),
) -> None:
    """Import your own text as a dataset, finding sensitive spans with taggers."""
    from privtune.data.importers import import_dataset

    path = import_dataset(src, out=out, test=test, test_fraction=test_fraction, seed=seed, text_column=text_column,
                          label_column=label_column, taggers=tagger, name=name, overwrite=overwrite)
    _summary(path)


@data_app.command("stats")
def stats(
    path: Path = typer.Argument(..., help="Dataset directory."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Count tokens with this Hugging Face fast "
                                            "tokenizer (local directory or cached id) instead of whitespace."),
    allow_download: bool = typer.Option(False, "--allow-download", help="Let transformers download the "
                                        "--tokenizer from the Hugging Face hub (otherwise: local cache only)."),
    user_key: str = typer.Option("user", "--user-key", help="The meta key naming a record's owner (user)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Documents, tokens, sensitive-token share, spans per label, users and canary info (secrets redacted)."""
    import json

    from rich.table import Table

    from privtune.data.stats import dataset_stats

    st = dataset_stats(path, tokenizer=tokenizer, allow_download=allow_download, user_key=user_key)
    if as_json:
        typer.echo(json.dumps(st.to_dict(), indent=2))
        return
    t = Table(title=escape(f"{st.name} ({st.task}; tokens: {st.token_unit})"))
    t.add_column("", no_wrap=True)
    for name in [*st.splits, "total"]:
        t.add_column(name, justify="right")
    rows = [*st.splits.values(), st.total]
    t.add_row("documents", *[f"{s.documents:,}" for s in rows])
    t.add_row("canary records", *[f"{s.canary_records:,}" for s in rows])
    t.add_row("tokens", *[f"{s.tokens:,}" for s in rows])
    t.add_row("tokens / document", *[f"{s.mean_tokens:.1f} (max {s.max_tokens})" for s in rows])
    t.add_row("sensitive tokens", *[f"{s.sensitive_tokens:,} ({_pct(s.sensitive_token_share)})" for s in rows])
    if st.total.spans:
        t.add_row("[dim]per label[/]", *["[dim]spans / tokens[/]"] * len(rows))
    for label in sorted(st.total.spans):
        t.add_row(f"  {label}", *[f"{s.spans.get(label, 0):,} / {s.sensitive_tokens_by_label.get(label, 0):,}"
                                  for s in rows])
    for cls in sorted(st.total.class_counts):
        t.add_row(f"  class {escape(cls)}", *[f"{s.class_counts.get(cls, 0):,}" for s in rows])
    us = st.users or {}
    split_users = [us.get(name, {}) for name in st.splits]
    if any(u.get("users") for u in split_users):
        t.add_row(f"users (meta.{escape(us['key'])})", *[f"{u.get('users', 0):,}" for u in split_users], "")
        t.add_row("records / user", *["-" if not u.get("users") else
                                      f"{u['min_records_per_user']} / {u['median_records_per_user']:g} / "
                                      f"{u['max_records_per_user']}" for u in split_users], "[dim]min / median / max[/]")
        if any(u.get("records_without_user") for u in split_users):
            t.add_row("records without user", *[f"{u.get('records_without_user', 0):,}" for u in split_users], "")
    console.print(t)
    if us.get("shared_users"):
        console.print(f"[yellow]warning[/] {us['shared_users']} users own records in more than one split "
                      "(train and test people are not disjoint).", highlight=False)
    if st.canary:
        c = st.canary
        console.print(escape(f"canary: {c['template'].replace('{secret}', c['secret'])} x{c['repeats']} in "
                             f"{c['split']}, {c['candidates']:,} candidates"), highlight=False)
    if st.audit:
        console.print(f"audit canaries: {st.audit['included_count']} of {st.audit['secrets']} in train "
                      f"(p = {st.audit['inclusion_probability']})", highlight=False)


@data_app.command("tag-eval")
def tag_eval(
    path: Path = typer.Argument(..., help="Dataset directory whose records carry exact spans."),
    tagger: list[str] = typer.Option(["regex"], "--tagger", "-t", help="Tagger(s) to score (union); see import."),
    split: str = typer.Option("all", "--split", help="train, test, valid or all."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Token level with this fast tokenizer "
                                            "instead of whitespace tokens."),
    allow_download: bool = typer.Option(False, "--allow-download", help="Let transformers download the "
                                        "--tokenizer from the Hugging Face hub (otherwise: local cache only)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Precision and recall of a tagger against the dataset's exact spans (span, character and token level)."""
    import json

    from rich.table import Table

    from privtune.data.masks import load_fast_tokenizer
    from privtune.data.schema import check_split_name, load_dataset
    from privtune.data.taggers import build_tagger
    from privtune.data.tageval import evaluate_tagger
    from privtune.errors import DataError

    tg = build_tagger(tagger)
    tok = load_fast_tokenizer(tokenizer, allow_download=allow_download) if tokenizer else None
    ds = load_dataset(path)
    recs = [r for v in ds.splits.values() for r in v] if split == "all" else ds.split(check_split_name(split))
    if not ds.has_spans:
        raise DataError(f"`{path}` must carry exact spans to score a tagger against. Found none. "
                        "Use a generated dataset or one imported with spans.")
    res = evaluate_tagger(recs, tg, tokenizer=tok)
    if as_json:
        typer.echo(json.dumps({**res.to_dict(), "dataset": str(path), "split": split}, indent=2))
        return
    from rich import box

    t = Table(title=escape(f"{res.tagger} on {path} ({split}, {res.documents:,} documents; tokens: "
                           f"{res.token_unit})"),
              box=box.SIMPLE_HEAD)
    for col in ("label", "gold", "pred", "span P", "span R", "char P", "char R", "token P", "token R"):
        t.add_column(col, justify="left" if col == "label" else "right", no_wrap=col == "label")
    for lab, s in res.labels.items():
        t.add_row(lab, f"{s.gold_spans:,}", f"{s.pred_spans:,}", *[_ratio(x) for x in (
            s.span_precision, s.span_recall, s.char_precision, s.char_recall, s.token_precision, s.token_recall)])
    console.print(t)
    console.print("ALL: exact spans with labels; characters and tokens regardless of label.", style="dim")


@data_app.command("validate")
def validate(path: Path = typer.Argument(..., help="Dataset directory.")) -> None:
    """Check a dataset directory against the contract (records, spans, hash)."""
    from privtune.data.schema import load_dataset

    ds = load_dataset(path)
    counts = ", ".join(f"{k} {len(v)}" for k, v in ds.splits.items())
    console.print(f"[green]ok[/] {escape(f'{path}: {counts}')}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
