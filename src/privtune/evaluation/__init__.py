"""Evaluation: what a fine-tuned model gives away and what it still does well.

One engine scores every token of a split under a model (:func:`score_records`); the measures are pure
functions over those scores, each in its own module — the seed's privacy and utility measures
(:mod:`.memorization`), canary exposure (:mod:`.exposure`), membership inference (:mod:`.mia`, attacks behind
a registry), extraction (:mod:`.extraction`) and the one-run audit (:mod:`.audit`). :func:`evaluate_run` runs
them all on a run directory and writes ``RUN/eval.json``; definitions with formulas and papers are in
``docs/measures.md``.
"""

from privtune.evaluation.evaluate import STAGES, EvalConfig, evaluate_models, evaluate_run
from privtune.evaluation.exposure import Canary, canary_exposure
from privtune.evaluation.tokens import TokenScores, score_records

__all__ = ["STAGES", "EvalConfig", "evaluate_models", "evaluate_run", "Canary", "canary_exposure",
           "TokenScores", "score_records"]
