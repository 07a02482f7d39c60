"""The study report: one self-contained HTML page (plots embedded as PNG) and a Markdown summary.

``privtune report DIR --out report.html`` reads ``DIR/results.sqlite`` and writes ``report.html``, ``report.md``
and the figures as files in ``plots/`` beside it. Only numbers, configuration values, privtune's own definitions and
redacted error messages reach the page: no record text, no secret, no raw PII.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from privtune import __version__
from privtune.experiments import classification, plots, tables
from privtune.experiments.analysis import OUTSIDE_DP, RunView, groups, variants, views
from privtune.experiments.findings import findings
from privtune.experiments.tables import epsilon_short, f, secs, with_ci
from privtune.experiments.store import open_store
from privtune.utils.fsio import atomic_write_text
from privtune.experiments import users as user_level

def scrub(text: str | None) -> str:
    """Error text with anything that looks like PII replaced by its redacted form (``[PHONE]``, ``[EMAIL]``)."""
    if not text:
        return ""
    from privtune.data.redact import redact_text
    from privtune.data.taggers import parse_tagger

    return redact_text(text, parse_tagger("regex").tag(text))


def _definitions(vs: Sequence[RunView]) -> dict[str, str]:
    """``{"privacy.sensitive_train_nll": "mean -ln p ..."}`` from eval.json's ``definition`` objects."""
    out: dict[str, str] = {}
    for v in vs:
        for k, val in v.row.items():
            if not isinstance(val, str):
                continue
            if k.endswith(".definition"):
                out.setdefault(k[: -len(".definition")], val)
            elif ".definition." in k:
                sec, name = k.split(".definition.", 1)
                out.setdefault(f"{sec}.{name}", val)
    return out


@dataclass
class Report:
    html: str
    markdown: str
    figures: dict[str, str]       # name -> base64 PNG

    def to_dict(self) -> dict[str, Any]:
        return {"markdown": self.markdown, "figures": sorted(self.figures)}


# -- HTML helpers ---------------------------------------------------------------------------------------------------
def _table(t: tables.Table, *, num_from: int = 1, empty: str = "No results.") -> str:
    head, rows = t
    if not rows:
        return f"<p class='note'>{html.escape(empty)}</p>"
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = []
    for r in rows:
        tds = "".join(f'<td class="{"num" if i >= num_from else ""}">{html.escape(str(c))}</td>'
                      for i, c in enumerate(r))
        body.append(f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _fig(b64: str | None, alt: str, caption: str) -> str:
    if b64 is None:
        return f"<p class='note'>No data for this figure yet ({html.escape(alt)}).</p>"
    return (f"<figure><img alt='{html.escape(alt)}' src='data:image/png;base64,{b64}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;max-width:1180px;margin:2em auto;padding:0 1.2em;
color:#1d1d1f;line-height:1.45}
h1{margin-bottom:.1em} h3{font-size:1em;margin:.8em 0 .2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
.meta,.note,figcaption{color:#555;font-size:.92em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.88em;display:block;overflow-x:auto}
th,td{padding:.3em .7em;border-bottom:1px solid #e3e3e3;text-align:left;white-space:nowrap}
th{background:#f5f5f7;white-space:normal;vertical-align:bottom} td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1em 0} img{max-width:100%;height:auto} li{margin:.25em 0}
.failed{color:#b00020} code,pre{background:#f5f5f7;padding:.1em .3em;border-radius:3px}
pre{padding:.8em;overflow-x:auto;font-size:.85em}
"""


def build_report(rows: Sequence[Mapping[str, Any]], *, study: Mapping[str, Any] | None = None,
                 trajectories: Mapping[str, Sequence[Mapping[str, Any]]] | None = None) -> Report:
    """The report of result rows (store rows: see :mod:`privtune.experiments.store`) and the runs' trajectories
    (``{run_id: points}``, the store's trajectory table)."""
    study = dict(study or {})
    vs = views(rows, trajectories)
    gs = groups(vs)
    col = plots.colours([v.method for v in vs])
    lm = not vs or not all(classification.is_classification(v) for v in vs)
    figs = {k: f for k, f in (("privacy_utility", plots.privacy_utility(gs, col) if lm else None),
                              ("versus_epsilon", plots.versus_epsilon(gs, col) if lm else None),
                              ("trajectories", plots.trajectories(gs, col) if lm else None),
                              ("cost", plots.cost(gs, col)), ("curves", plots.curves(vs, col))) if f}
    found = classification.findings(vs) + findings(gs, vs) + user_level.findings(vs)
    name = str(study.get("name") or "study")
    md = markdown_summary(name, vs, found) + "".join(f"{line}\n" for line in user_level.markdown(vs))
    return Report(html=_html(name, study, vs, gs, found, figs), markdown=md, figures=figs)


def _failed(vs: Sequence[RunView]) -> str:
    failed = [v for v in vs if v.status == "failed"]
    if not failed:
        return ""
    items = "".join(f"<li class='failed'><b>{html.escape(v.label)}</b> ({html.escape(v.run_id)}), "
                    f"{html.escape(str(v.row.get('stage')))}: {html.escape(scrub(v.row.get('error')))}</li>"
                    for v in failed)
    return f"<p>Failed runs (resume the sweep to retry them):</p><ul>{items}</ul>"


def _privacy_warnings(vs: Sequence[RunView]) -> str:
    warned = tables.privacy_warnings(vs)
    if not warned:
        return ""
    items = "".join(f"<li class='failed'><b>{html.escape(', '.join(labels))}</b>: {html.escape(text)}</li>"
                    for text, labels in warned)
    return f"<p>Privacy warnings (run.json <code>privacy_warnings</code>):</p><ul>{items}</ul>"


def _html(name: str, study: Mapping[str, Any], vs: Sequence[RunView], gs: Any, found: Sequence[str],
          figs: Mapping[str, str]) -> str:
    n_ok = sum(v.ok for v in vs)
    n_failed = sum(v.status == "failed" for v in vs)
    lm = not vs or not all(classification.is_classification(v) for v in vs)
    desc = html.escape(str(study.get("description") or ""))
    defs = _definitions(vs)
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>privtune report — {html.escape(name)}"
        f"</title><meta name='viewport' content='width=device-width, initial-scale=1'><style>{CSS}</style></head>"
        "<body>",
        f"<h1>privtune report: {html.escape(name)}</h1>",
        f"<p class='meta'>{desc + '<br>' if desc else ''}{len(vs)} runs: {n_ok} completed, {n_failed} failed. "
        f"Generated {time.strftime('%Y-%m-%d %H:%M')} by privtune {__version__}."
        f"{' NLLs are in nats per token.' if lm else ''}</p>",
        "<h2>Findings</h2>",
        "<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in found) + "</ul>",
        classification.html_section(vs, _table),
    ]
    if lm:  # classification runs are scored by accuracy above; the rest are language-model measures
        parts += _lm_measures(vs, figs)
    parts += [
        _failed(vs),
        "<h2>Privacy accounting</h2>",
        "<p>Every ε is the spent budget of the run's own privacy ledger, computed by the named accountant for "
        "Poisson-sampled DP-SGD under add/remove-one neighbouring. <i>Certified</i> means an upper bound. "
        "Empirical audits are lower-bound <i>estimates</i> and are shown only beside the certified value.</p>",
        _table(tables.accounting(vs), empty="No DP run in this study."),
        _privacy_warnings(vs),
        "<h2>Cost</h2>", _fig(figs.get("cost"), "cost per method", "Mean per configuration. Throughput is examples "
                              "per second of step time; for DP runs the expected number of examples (steps × "
                              "expected batch, fixed by the plan), since their realised batches are private."),
        _table(tables.cost(vs)),
    ]
    if lm:
        parts += _lm_attacks(vs, gs)
        parts.append(user_level.html_section(vs, _table))
    parts += _curves(vs, figs)
    if defs:
        parts.append("<h2>Definitions</h2><details><summary>Every measure as eval.json defines it</summary><dl>"
                     + "".join(f"<dt><code>{html.escape(k)}</code></dt><dd>{html.escape(d)}</dd>"
                               for k, d in sorted(defs.items())) + "</dl></details>")
    if study.get("toml"):
        parts.append(f"<h2>Study</h2><details><summary>study.toml</summary><pre>{html.escape(str(study['toml']))}"
                     "</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _curves(vs: Sequence[RunView], figs: Mapping[str, str]) -> list[str]:
    """Training curves: every run that released one; a DP run's only as a labelled diagnostic (it is computed from
    the private data without noise), and the DP runs without one named as withheld."""
    caption = ("Mean per-example loss of each optimizer step's batch (faint) and its running mean over a tenth of "
               "the run (bold).")
    shown = [v for v in vs if v.ok and v.private and v.curve()]
    withheld = [v for v in vs if v.ok and v.private and not v.curve()]
    if shown:
        caption += (f" The curves of DP runs ({', '.join(v.label for v in shown)}) are diagnostics {OUTSIDE_DP}: "
                    "they are not covered by the run's ε.")
    note = ""
    if withheld:
        names = html.escape(", ".join(v.label for v in withheld))
        note = (f"<p class='note'>Not shown: the training losses of DP runs ({names}). They are computed from the private data without noise, so a DP run does not "
                "release them; <code>dp_diagnostics = true</code> (in <code>[train]</code>) records them, labelled "
                "as outside the DP guarantee.</p>")
    fig = _fig(figs.get("curves"), "training curves", caption) if figs.get("curves") or not withheld else ""
    return ["<h2>Training curves</h2>", fig, note]


def _lm_measures(vs: Sequence[RunView], figs: Mapping[str, str]) -> list[str]:
    """Privacy vs utility, the runs table and the ε plot: the language-model measures (eval.json)."""
    return [
        "<h2>Privacy vs utility</h2>",
        "<p>Each point is a configuration (mean over seeds; bars: ± one standard deviation). Right means the "
        "fine-tuned model finds the sensitive tokens of its own training records more likely than the base model "
        "did (memorisation); down means better predictions of ordinary text it never saw. The base model sits at "
        "zero gain. Configurations on the Pareto front (dashed) are those no other beats on both axes.</p>",
        _fig(figs.get("privacy_utility"), "privacy vs utility", "Sensitive-token NLL gain on training data vs "
             "non-sensitive test NLL; the star is the base model."),
        "<h2>Trajectories</h2>",
        "<p>Each run evaluated during training (<code>trajectory.jsonl</code>) on a fixed subset of training and "
        "held-out records: memorisation (sensitive-token gain on training records − gain on held-out records) "
        "against non-sensitive test NLL, one line per run from the base model (star) on, markers growing with the "
        "epoch; seeds of one configuration share a colour. DP runs are also shown against the ε spent so far. The "
        "findings compare methods at matched utility along these lines.</p>",
        _fig(figs.get("trajectories"), "trajectories", "Memorisation against utility over training (Das et al. "
             "2025); right: DP runs over the ε spent."),
        "<h2>Runs</h2>",
        "<p>NLLs of the fine-tuned model (the base model's in brackets). Gain = base − fine-tuned NLL on sensitive "
        "tokens of training (train) or held-out (test) records; memorisation = gain train − gain test, the part "
        "specific to the records trained on.</p>",
        "<p>Brackets after a figure: its 95% percentile-bootstrap interval over records, or over people where "
        "the data names record owners (1,000 resamples). "
        "<i>Did not learn</i>: the run's non-sensitive test NLL did not improve on the base model beyond that "
        "interval; its low memorisation is not a privacy result.</p>",
        _table(tables.runs(vs), num_from=4),
        *_seed_table(vs),
        "<h2>Privacy and utility against ε</h2>",
        _fig(figs.get("versus_epsilon"), "against epsilon", "DP methods at each certified budget (a configuration "
             "whose noise was calibrated on an estimate sits at the certified ε it spent, not at its target); "
             "dashed lines are the same methods without DP, the dotted line the base model."),
    ]


def _seed_table(vs: Sequence[RunView]) -> list[str]:
    t = tables.seeds(variants(vs))
    if not t[1]:
        return []
    return ["<h3>Across seeds</h3><p>Mean ± standard deviation over seeds, then each seed's value.</p>",
            _table(t, num_from=2)]


def _lm_attacks(vs: Sequence[RunView], gs: Any) -> list[str]:
    """Exposure, membership inference and extraction tables (language-model runs)."""
    return [
        "<h2>Canary exposure</h2>",
        "<p>Exposure = log2(candidates) − log2(rank of the inserted canary among all candidate secrets) (Carlini et "
        "al. 2019); the maximum means the canary ranked first. The base model's exposure is the chance level. "
        "Extrapolated exposures are estimates.</p>",
        _table(tables.exposure(vs, gs), empty="No exposure results (the data has no canary, or the stage was off)."),
        "<h2>Membership inference</h2>",
        "<p>Each cell: ROC AUC / true-positive rate at 1% false-positive rate. Members are training records, "
        "non-members test records; 0.5 AUC is chance; with few non-members the TPR at 1% FPR is coarse.</p>",
        "<h3>All tokens</h3>", _table(tables.mia(vs), empty="No membership-inference results."),
        "<h3>Sensitive tokens only</h3>",
        _table(tables.mia(vs, sensitive=True), empty="No results on sensitive tokens."),
        "<h2>Extraction</h2>",
        "<p>Sampling: share of training secrets the model generates from their record's prefix (base model and "
        "excess over it beside). Reconstruction: how often the true secret scores best among distractors.</p>",
        _table(tables.extraction(vs), empty="No extraction results."),
    ]


def markdown_summary(name: str, vs: Sequence[RunView], found: Sequence[str]) -> str:
    """The summary table (one line per run, then the base model) and the findings, as Markdown."""
    lines = [f"# privtune report: {name}", "", *classification.markdown(vs)]
    lm = [v for v in vs if not classification.is_classification(v)]
    if not lm and vs:
        return "\n".join(lines + ["## Findings", "", *[f"- {s}" for s in found]]) + "\n"
    lines += ["| run | status | ε | gain train | gain test | test NLL | exposure | MIA AUC | wall s |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for v in lm:
        mia = v.best_mia()
        lines.append(f"| {v.label} | {v.status} | {epsilon_short(v)} | {with_ci(v.gain_train, v.ci('gain_train'))} | "
                     f"{with_ci(v.gain_test, v.ci('gain_test'))} | {with_ci(v.utility, v.ci('utility'))} | "
                     f"{f(v.get('exposure.exposure_bits'), 1)} | {f(mia[1]) if mia else '–'} | "
                     f"{secs(v.get('run.wall_time_s'))} |")
    base = [g for g in groups(vs) if g.base_utility is not None]
    for g in base:
        lines.append(f"| base model{' · ' + g.title if len(base) > 1 else ''} | – | – | 0.000 | 0.000 | "
                     f"{f(g.base_utility)} | – | – | – |")
    lines += ["", "gain = base NLL − fine-tuned NLL on sensitive tokens of training (train) or held-out (test) records, "
              "in nats/token (higher = more memorised), with 95% bootstrap intervals in brackets (over records, or "
              "over people where the data names record owners); "
              "\"did not learn\" = test NLL not improved on the base model beyond its interval; "
              "test NLL = non-sensitive test tokens (lower = better); "
              "exposure in bits; MIA AUC of the strongest attack (0.5 = chance).", "", "## Findings", ""]
    lines += [f"- {s}" for s in found]
    return "\n".join(lines) + "\n"


@dataclass
class WrittenReport:
    html_path: Path
    markdown_path: Path
    markdown: str

    def to_dict(self) -> dict[str, Any]:
        return {"html": str(self.html_path), "markdown": str(self.markdown_path)}


def write_report(study_dir: str | Path, *, out: str | Path | None = None) -> WrittenReport:
    """Write ``report.html`` (default ``DIR/report.html``), ``report.md`` and ``plots/*.png`` beside it."""
    import base64

    study_dir = Path(study_dir)
    with open_store(study_dir) as store:
        rows, meta, trajectories = store.rows(), store.study(), store.trajectories()
    study: dict[str, Any] = {"name": meta.get("name"), "toml": meta.get("toml")}
    if meta.get("config"):
        study["description"] = json.loads(meta["config"]).get("description")
    rep = build_report(rows, study=study, trajectories=trajectories)
    out = Path(out) if out is not None else study_dir / "report.html"
    atomic_write_text(out, rep.html)
    md = out.with_suffix(".md")
    atomic_write_text(md, rep.markdown)
    (out.parent / "plots").mkdir(parents=True, exist_ok=True)
    for name, b64 in rep.figures.items():
        (out.parent / "plots" / f"{name}.png").write_bytes(base64.b64decode(b64))
    return WrittenReport(out, md, rep.markdown)
