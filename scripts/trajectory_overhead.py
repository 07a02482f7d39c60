"""Measure the in-training evaluation overhead (issue 14) at the demo's sizes: each demo method trained with the
trajectory on (its run.json's ``trajectory_eval_s`` against ``wall_time_s``) and, for a direct check, without it.

    PYTHONPATH=src python scripts/trajectory_overhead.py OUT_DIR [--methods fft,lora,dp-fft,dp-lora] [--off fft]

Prints one JSON object per run and a summary; the overhead is ``eval_s / (wall_s − eval_s)`` (time added to a run
without in-training evaluation), and the with/without ratio where both were run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from privtune.experiments.demo import SCALES


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--methods", default="fft,lora,dp-fft,dp-lora")
    ap.add_argument("--off", default="fft,dp-lora", help="methods also trained with --no-trajectory")
    ap.add_argument("--scale", default="default")
    args = ap.parse_args()
    from privtune.data.synth import synth_dataset
    from privtune.training.run import train

    sc = SCALES[args.scale]
    data = args.out / "data"
    if not (data / "dataset.json").is_file():
        synth_dataset("customersim", out=data, n_train=sc.n_train, n_test=sc.n_test, seed=0,
                      canary_repeats=sc.canary_repeats, audit_canaries=sc.audit_canaries)
    lrs = dict(sc.learning_rates)
    results = {}
    for method in args.methods.split(","):
        for traj in ([True, False] if method in args.off.split(",") else [True]):
            out = args.out / f"{method}-{'on' if traj else 'off'}"
            dp = method.startswith("dp-")
            kw = dict(data=str(data), method=method, model=sc.model, epochs=sc.epochs, max_length=sc.max_length,
                      batch_size=sc.dp_batch_size if dp else sc.batch_size, trajectory=traj, seed=0)
            if dp:
                kw["epsilon"] = sc.epsilon
            if method in lrs:
                kw["lr"] = lrs[method]
            t0 = time.perf_counter()
            rec = train(out=out, **kw).record
            res = {"method": method, "trajectory": traj, "wall_s": rec["wall_time_s"],
                   "train_time_s": rec.get("train_time_s"), "steps": rec["steps"],
                   "eval_s": rec.get("trajectory_eval_s"), "points": rec.get("trajectory_points"),
                   "process_s": round(time.perf_counter() - t0, 1)}
            if traj and res["eval_s"]:
                res["overhead"] = round(res["eval_s"] / (res["wall_s"] - res["eval_s"]), 3)
            results[(method, traj)] = res
            print(json.dumps(res), flush=True)
    for method in args.methods.split(","):
        on, off = results.get((method, True)), results.get((method, False))
        if on and off:
            print(json.dumps({"method": method, "wall_with_over_without": round(on["wall_s"] / off["wall_s"], 3)}))


if __name__ == "__main__":
    main()
