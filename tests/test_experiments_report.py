import re

from privtune.experiments.analysis import groups, pareto_front, views
from privtune.experiments.findings import findings
from privtune.experiments.report import build_report, write_report
from privtune.experiments.store import ResultStore, make_row

from _exp_helpers import grid, row, study_rows


def test_pareto_front_by_hand():
    pts = [(0.0, 2.5), (0.5, 2.1), (0.3, 2.2), (0.05, 2.3), (0.02, 2.45), (0.06, 2.35), (0.5, 2.1), (0.6, 2.1)]
    # (0.06, 2.35) is dominated by (0.05, 2.3); (0.6, 2.1) by (0.5, 2.1); equal points are both kept
    assert pareto_front(pts) == [True, True, True, True, True, False, True, False]
    assert pareto_front([]) == []


def test_front_membership_and_base_point():
    (g,) = groups(views(study_rows()))
    assert g.base_utility == 2.5 and g.base_train_nll == 3.0
    assert set(g.front()) == {"base model", "fft", "lora", "dp-fft ε=8", "dp-fft ε=1"}
    assert "dp-lora ε=8" not in g.front()


def test_findings_state_the_numbers():
    vs = views(study_rows())
    text = "\n".join(findings(groups(vs), vs))
    assert "LoRA memorised 60% as much as FFT: its sensitive-token gain on training data is 0.300 vs " \
           "0.500 nats/token, in 2.0× less wall time (50 s vs 100 s), training 1.5% as many parameters." in text
    assert "At ε = 8 (certified, pld accountant, δ = 1e-05), DP-FFT's sensitive-token gain on training data is " \
           "0.050 nats/token, 10% of FFT's 0.500; its non-sensitive test NLL is 2.300 (FFT 2.100, base model " \
           "2.500)." in text
    assert "DP-FFT (ε = 8) took 1.5× the wall time and 1.50× the peak memory of FFT." in text
    assert "Canary exposure in bits (maximum 19.9, reached when the canary ranks first among all candidates): " \
           "FFT 19.9, LoRA 12.0" in text
    assert "Strongest membership-inference attack, AUC (0.5 is chance): FFT 0.800 (loss)" in text
    assert "one seed" in text
    # no held-out base NLL in the contract rows: no memorisation-vs-format claim is made
    assert "memorisation)" not in text


def test_memorisation_claim_needs_test_data():
    rows = [row("fft", gain=0.5, util=2.1)]
    rows[0]["privacy.sensitive_test_nll_base"] = 3.0
    rows[0]["privacy.sensitive_test_nll"] = 2.9           # held-out drop 0.1 < half of 0.5
    vs = views(rows)
    text = " ".join(findings(groups(vs), vs))
    assert "on held-out records the drop was 0.100, so most of the gain is specific to the training records" in text


def test_report_content_and_no_pii(tmp_path):
    rows = study_rows()
    phone, name = "555-123-4567", "Georgina Smithfield"
    failed = make_row(run_id="lora-bad", status="failed", stage="train", grid=grid("lora", r=64),
                      error=f"DataError: record cs-000001 text 'call {phone}' is malformed")
    rows.append(failed)
    rows[0]["extraction.sampling.examples"] = f'["{name} {phone}"]'   # string fields are never printed
    rep = build_report(rows, study={"name": "unit", "toml": "name = 'unit'"})
    page = rep.html
    assert phone not in page and name not in page and phone not in rep.markdown
    assert "[PHONE]" in page and "failed at train" in page
    # self-contained: every figure embedded, nothing fetched
    assert len(re.findall(r"src='data:image/png;base64,", page)) == 4
    assert not re.search(r"""(src|href)=["']?https?:""", page)
    for title in ("Privacy vs utility", "Privacy and utility against ε", "Privacy accounting", "Cost",
                  "Canary exposure", "Membership inference", "Extraction", "Training curves", "Findings"):
        assert f"<h2>{title}</h2>" in page
    assert "8.00 (certified, pld, δ = 1e-05)" in page and "∞ (no DP)" in page
    assert "<td class=\"num\">19.90</td>" in page                      # FFT's exposure
    assert "<th>members / non-members</th><th>loss</th><th>zlib</th>" in page and "0.800 / 0.010" in page
    assert "No results on sensitive tokens." in page
    assert "<th>sampling recall</th>" in page and "0.250" in page
    md = rep.markdown
    assert md.startswith("# privtune report: unit")
    assert "| fft | completed | ∞ (no DP) | 0.500 | – | 2.100 | 19.9 | 0.800 | 100 |" in md
    assert "| base model | – | – | 0.000 | 0.000 | 2.500 |" in md
    assert "| dp-fft ε=8 | completed | 8.00 (certified, pld) | 0.050 |" in md
    assert "## Findings" in md and "LoRA memorised 60% as much as FFT" in md


def test_write_report_from_store(tmp_path):
    with ResultStore(tmp_path) as s:
        s.put_study({"name": "stored", "config": {"description": "a test study"}, "toml": "name = 'stored'"})
        for r in study_rows():
            s.upsert(r)
    out = write_report(tmp_path, out=tmp_path / "site" / "report.html")
    assert out.html_path.is_file() and out.markdown_path == tmp_path / "site" / "report.md"
    assert "a test study" in out.html_path.read_text()
    assert sorted(p.name for p in (tmp_path / "site" / "plots").iterdir()) == [
        "cost.png", "curves.png", "privacy_utility.png", "versus_epsilon.png"]
    assert (tmp_path / "site" / "plots" / "cost.png").read_bytes()[:4] == b"\x89PNG"


def test_report_with_nothing_finished():
    rows = [make_row(run_id="a", status="pending", grid=grid("fft"))]
    rep = build_report(rows)
    assert "No completed runs yet" in rep.html and rep.figures == {}
    assert "1 runs have not finished" in rep.markdown


def test_estimates_are_labelled_and_shown_beside_certified_values():
    rows = study_rows()
    dp = rows[3]                                  # dp-fft ε=8
    dp.update({"exposure.method": "extrapolated", "exposure.estimate": 1, "audit.epsilon_lower_bound": 0.3,
               "audit.confidence": 0.95, "audit.certified_epsilon": 8.0})
    page = build_report(rows).html
    row = next(r for r in page.split("<tr>") if r.startswith("<td class=\"\">dp-fft ε=8</td>") and "σ" not in r
               and "certified, pld, δ" in r)
    assert "ε ≥ 0.30 at 95% confidence (lower bound)" in row and "8.00 (certified, pld, δ = 1e-05)" in row
    assert "extrapolated (estimate)" in page
    vs = views(rows)
    assert "Canary exposure in bits (estimates: extrapolated)" in " ".join(findings(groups(vs), vs))


def _curve_axes(rows, monkeypatch):
    """Titles and legend labels of the training-curves figure's panels (the figure captured before encoding)."""
    from privtune.experiments import plots

    seen = []
    real = plots._png
    monkeypatch.setattr(plots, "_png", lambda fig: seen.append(fig) or real(fig))
    vs = views(rows)
    assert plots.curves(vs, plots.colours([v.method for v in vs])) is not None
    return [(ax.get_title(), [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else [])
            for ax in seen[-1].axes if ax.get_visible()]


def test_dp_training_statistics_are_withheld_by_default(monkeypatch):
    """DP runs release no training loss or token throughput: the curves show the non-DP runs, the page says why the
    DP ones are missing, the cost table says withheld; examples/s (fixed by the plan) is there for every run."""
    rows = study_rows()
    page = build_report(rows).html
    assert [t for t, _ in _curve_axes(rows, monkeypatch)] == ["FFT", "LoRA"]
    assert "Not shown: the training losses of DP runs (dp-fft ε=1, dp-fft ε=8, dp-lora ε=8)" in page
    cost = page.split("<h2>Cost</h2>")[1].split("<h2>")[0]
    dp_rows = [r for r in cost.split("<tr>") if r.startswith('<td class="">dp-')]
    assert len(dp_rows) == 3 and all("withheld (DP)" in r for r in dp_rows)
    assert '<td class="">fft</td>' in cost and "1,000" in cost and "<th>examples/s</th>" in cost
    assert all('<td class="num">10.0</td>' in r for r in dp_rows)            # examples/s of every run


def test_dp_diagnostics_are_labelled_wherever_shown(monkeypatch):
    """A DP run recorded with dp_diagnostics (or an older run.json that released them at the top level) is shown
    only with the label: in the curve panel's title and legend, the caption and the cost table."""
    rows = study_rows()
    diag = row("dp-lora", eps=8.0, gain=0.06, util=2.35, dp_diagnostics=True)
    old = row("dp-fft", eps=8.0, gain=0.05, util=2.3)
    old.update({"run.train_loss_curve": "[[1, 3.0], [2, 2.5]]", "run.tokens_per_s": 900.0, "run.dp_diagnostics": None})
    old.pop("run.dp_diagnostics.enabled"), old.pop("run.dp_diagnostics.label"), old.pop("run.dp_diagnostics.withheld")
    rows[3], rows[4] = old, diag
    label = "outside the DP guarantee (computed from private data without noise)"
    axes = dict(_curve_axes(rows, monkeypatch))
    assert set(axes) == {"FFT", "LoRA", f"DP-FFT\nDP diagnostic: {label}", f"DP-LoRA\nDP diagnostic: {label}"}
    assert axes[f"DP-LoRA\nDP diagnostic: {label}"] == ["dp-lora ε=8 (outside the DP guarantee)"]
    page = build_report(rows).html
    assert f"The curves of DP runs (dp-fft ε=8, dp-lora ε=8) are diagnostics {label}" in page
    assert "Not shown: the training losses of DP runs (dp-fft ε=1)" in page
    cost = page.split("<h2>Cost</h2>")[1].split("<h2>")[0]
    assert f"1,000 ({label})" in cost and f"900 ({label})" in cost
