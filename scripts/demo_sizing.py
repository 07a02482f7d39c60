"""Score runs for the demo's sizing: non-sensitive test NLL gain over the base model with a bootstrap interval.

    PYTHONPATH=src python scripts/demo_sizing.py --data DATA RUN [RUN ...] [--max-records 200] [--jsonl OUT]

For each finished run (``privtune train``) on dataset DATA: the non-sensitive tokens of the test records that
``privtune eval`` scores (canaries excluded, the same seeded subsample of ``--max-records``), under the fine-tuned
and the base model. With ``a_i`` the summed NLL drop (base − fine-tuned, nats) over record ``i``'s non-sensitive
tokens and ``n_i`` their count, the gain is ``G = Σa_i / Σn_i`` — exactly ``nonsensitive_test_nll_base −
nonsensitive_test_nll`` of eval.json (token-pooled) — and its 95% interval is the 2.5–97.5% percentile range of
``G`` over 1,000 bootstrap resamples of the records (seed 0). A run *learns* when the interval's lower end is > 0.

Prints one markdown row per run (method, batch, lr, epochs, steps, σ, NLL vs base, gain [interval], wall time);
``--jsonl`` appends the same as JSON lines. Used to size ``privtune demo`` (docs/experiments.md, "Demo sizing").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from privtune.data import load_dataset
from privtune.evaluation.evaluate import _is_canary, _subsample
from privtune.evaluation.tokens import encode, score_records
from privtune.training.run import load_trained

N_BOOT, SEED = 1000, 0


def gain_interval(nll_ft: np.ndarray, nll_base: np.ndarray, offsets: np.ndarray, keep: np.ndarray,
                  n_boot: int = N_BOOT, seed: int = SEED) -> tuple[float, float, float]:
    """``G = Σ_i a_i / Σ_i n_i`` and its 95% percentile bootstrap interval over records (see the module doc)."""
    idx = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    d = np.where(keep, nll_base - nll_ft, 0.0)
    a = np.bincount(idx, weights=d, minlength=len(offsets) - 1)
    n = np.bincount(idx, weights=keep.astype(float), minlength=len(offsets) - 1)
    g = a.sum() / n.sum()
    rng = np.random.default_rng(seed)
    b = rng.integers(0, len(a), size=(n_boot, len(a)))
    gs = a[b].sum(1) / n[b].sum(1)
    lo, hi = np.percentile(gs, [2.5, 97.5])
    return float(g), float(lo), float(hi)


def score_run(run_dir: Path, data_dir: Path, max_records: int, max_length: int,
              base_cache: dict) -> dict:
    run = load_trained(run_dir)
    rec = run.record
    ds = load_dataset(data_dir)
    test = _subsample([r for r in ds.split("test") if not _is_canary(r)], max_records, 1)
    enc = encode(run.tokenizer, test, max_length=max_length)
    ft = score_records(run.model.eval(), run.tokenizer, test, encoded=enc, max_length=max_length)
    key = (rec["model"], str(data_dir), max_records, max_length)
    if key not in base_cache:
        base_cache[key] = score_records(run.load_base(), run.tokenizer, test, encoded=enc, max_length=max_length)
    base = base_cache[key]
    keep = ~ft.sensitive
    g, lo, hi = gain_interval(ft.nll, base.nll, ft.offsets, keep)
    return {"run": str(run_dir), "method": rec.get("method"), "batch_size": rec.get("batch_size"),
            "lr": rec.get("learning_rate"), "epochs": rec.get("epochs"), "steps": rec.get("steps"),
            "sigma": rec.get("noise_multiplier"), "epsilon": rec.get("epsilon"), "n_train": rec.get("n_train"),
            "nll": float(ft.nll[keep].mean()), "nll_base": float(base.nll[keep].mean()),
            "gain": g, "gain_lo": lo, "gain_hi": hi, "learns": lo > 0,
            "wall_time_s": rec.get("wall_time_s"), "n_test_records": len(test)}


def row(r: dict) -> str:
    f = (lambda x, s: "–" if x is None else format(x, s))
    return (f"| {r['method']} | {r['batch_size']} | {f(r['lr'], 'g')} | {f(r['epochs'], 'g')} | {r['steps']} "
            f"| {f(r['sigma'], '.3f')} | {r['nll']:.4f} vs {r['nll_base']:.4f} "
            f"| {r['gain']:+.4f} [{r['gain_lo']:+.4f}, {r['gain_hi']:+.4f}] | {'yes' if r['learns'] else 'no'} "
            f"| {f(r['wall_time_s'], '.0f')} s |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--max-records", type=int, default=200)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--jsonl", type=Path)
    a = ap.parse_args(argv)
    cache: dict = {}
    print("| method | batch | lr | epochs | steps | σ | non-sensitive test NLL vs base | gain [95% interval] "
          "| learns | wall time |\n|---|---:|---:|---:|---:|---:|---|---|---|---:|")
    for rd in a.runs:
        try:
            r = score_run(rd, a.data, a.max_records, a.max_length, cache)
        except Exception as e:  # noqa: BLE001 - a scan goes on past a broken run
            print(f"| {rd} | failed: {type(e).__name__}: {e} |", file=sys.stderr)
            continue
        print(row(r), flush=True)
        if a.jsonl:
            with a.jsonl.open("a") as fh:
                fh.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
