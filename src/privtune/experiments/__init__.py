"""Experiments: studies (a TOML grid of runs), resumable sweeps, the results store, the report and the demo.

    >>> from privtune.experiments import load_study, run_sweep, write_report
    >>> result = run_sweep("examples/tradeoff.toml", out="studies/tradeoff")
    >>> write_report("studies/tradeoff")          # studies/tradeoff/report.html + report.md
"""

from privtune.experiments.config import DatasetSpec, RunConfig, Study, load_study, parse_study
from privtune.experiments.report import build_report, write_report
from privtune.experiments.store import ResultStore, export_results
from privtune.experiments.sweep import SweepResult, run_sweep

__all__ = ["DatasetSpec", "ResultStore", "RunConfig", "Study", "SweepResult", "build_report", "export_results",
           "load_study", "parse_study", "run_sweep", "write_report"]
