"""The report's classification section: a claimed ε is always labelled an estimate and set beside the certified one."""

from privtune.experiments.analysis import views
from privtune.experiments.classification import findings, table
from privtune.experiments.report import build_report
from privtune.experiments.store import make_row


def _row(method, *, seed=0, acc, sigma=None, eps=None, estimate=None, cert_sigma=None):
    private = eps is not None
    run = {"method": "dp-rgp" if method.startswith("dp-rgp") else method, "model": "minilm:2",
           "dataset": "/d/sent", "status": "completed", "task": "classification", "epsilon": eps,
           "delta": 1e-5 if private else None, "noise_multiplier": sigma, "max_grad_norm": 1.0, "sample_rate": 0.064,
           "steps": 63, "epochs": 4, "accountant": "pld" if private else None, "certified_by": "pld" if private else None,
           "wall_time_s": 250.0, "peak_memory_mb": 1500.0, "tokens_per_s": 2400.0, "trainable_params": 14594,
           "total_params": 15482114, "final_train_loss": 0.55, "test_accuracy": acc, "macro_f1": acc - 0.01,
           "test_loss": 0.55, "noise_calibration": "edgeworth-estimate" if estimate else "certified",
           "target_met": (eps <= 8) if private else None}
    if estimate is not None:
        run.update(epsilon_estimate=estimate, epsilon_estimate_certified=False, certified_noise_multiplier=cert_sigma)
    grid = {"dataset": "sent", "model": "minilm:2", "method": method, "epsilon": 8.0 if private else None,
            "lora_r": None, "lr": 2e-3, "epochs": 4, "seed": seed}
    return make_row(run_id=f"{method}-{seed}", status="completed", grid=grid, run_dir=f"runs/{method}-{seed}",
                    run_json=run, eval_json=None)


def _rows():
    return [_row("dp-rgp-ewtune", seed=0, acc=0.75, sigma=0.636, eps=10.14, estimate=8.0, cert_sigma=0.704),
            _row("dp-rgp-ewtune", seed=1, acc=0.70, sigma=0.636, eps=10.14, estimate=8.0, cert_sigma=0.704),
            _row("dp-rgp", seed=0, acc=0.74, sigma=0.704, eps=8.0),
            _row("dp-rgp", seed=1, acc=0.78, sigma=0.704, eps=8.0),
            _row("rgp", acc=0.89)]


def test_table_labels_every_claim_an_estimate():
    head, rows = table(views(_rows()))
    ew = rows[0]
    assert "(estimate)" in ew[0]                                   # the run's label: its ε=8 is not certified
    assert ew[head.index("target ε")] == "8.00 (estimate)"
    assert ew[head.index("certified ε")] == "10.14 (pld — above target)"
    assert ew[head.index("claimed ε")] == "8.00 (estimate)"
    assert ew[head.index("certified − claimed")] == "+2.14 (+27%)"
    assert ew[head.index("σ")] == "0.636 (certified calibration 0.704)"
    cert = rows[2]
    assert "(estimate)" not in " ".join(cert) and cert[head.index("certified ε")] == "8.00 (pld)"
    assert rows[4][head.index("certified ε")] == "∞ (no DP)"


def test_findings_compare_each_estimate_configuration_with_its_certified_twin_over_seeds():
    text = "\n".join(findings(views(_rows())))
    assert "claims ε = 8.00 (estimate) but its certified ε is 10.14, +2.14 (+27%); it used σ = 0.636 where a " \
           "certified calibration uses 0.704 (10% less noise); test accuracy 0.725 ± 0.035 (mean ± sd, 2 seeds) " \
           "vs 0.760 ± 0.028 (mean ± sd, 2 seeds) for dp-rgp ε=8 at a certified ε of 8.00." in text
    assert text.count("calibrated its noise on an Edgeworth estimate") == 1   # one sentence per configuration
    assert "Without DP: rgp 0.890." in text


def test_classification_only_report_has_no_language_model_sections():
    rep = build_report(_rows(), study={"name": "ewtune"})
    assert rep.markdown.startswith("# privtune report: ewtune") and "## Classification" in rep.markdown
    assert "nats per token" not in rep.html and "Canary exposure" not in rep.html
    assert "estimate: σ calibrated on an Edgeworth estimate" in rep.html   # the accounting table says so too
