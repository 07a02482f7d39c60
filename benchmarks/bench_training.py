"""Time per optimizer step and peak memory of fft, lora, dp-fft and dp-lora on the embedded model.

    PYTHONPATH=src python benchmarks/bench_training.py [--model embedded] [--batch 16] [--seq 128] [--json]

Each method runs in its own process (so that its peak RSS is its own) on the same batches: the same records, a
fixed batch of ``--batch`` sequences of ``--seq`` tokens (dialogs longer than that, truncated), ``--warmup`` steps
excluded, then the median of ``--steps`` timed steps. DP methods use a given noise multiplier (no calibration)
and the ``--dp-engine`` (default hooks). Wall-clock figures of one run; on a shared machine they vary with load.
The fast DP paths and the ratio targets belong to ``privtune bench`` (issue 8).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PRIVTUNE_PROGRESS", "0")
METHODS = ("fft", "lora", "dp-fft", "dp-lora")


def one(method: str, args: argparse.Namespace) -> dict:
    import torch

    from privtune.data.schema import write_dataset
    from privtune.data.synth import generate
    from privtune.training.config import TrainConfig
    from privtune.training.privacy import PrivacyState
    from privtune.training.record import peak_memory_mb
    from privtune.training.sampling import ShuffleSampler
    from privtune.training.session import build_session, make_plan
    from privtune.training.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        splits, info = generate("customersim", n_train=8 * args.batch, n_test=0, seed=0, canary_repeats=0)
        write_dataset(Path(tmp) / "d", splits, info)
        cfg = TrainConfig(data=str(Path(tmp) / "d"), method=method, model=args.model, batch_size=args.batch,
                          physical_batch_size=args.batch, max_length=args.seq, steps=1000, eval_test=False,
                          dp_engine=args.dp_engine, **({"noise_multiplier": 1.0} if method.startswith("dp") else {}))
        s = build_session(make_plan(cfg))
        privacy = PrivacyState(s.plan.privacy, Path(tmp)) if s.engine is not None else None
        trainer = Trainer(model=s.model, task="lm", data=s.data, optimizer=s.optimizer, scheduler=s.scheduler,
                          sampler=ShuffleSampler(n=s.plan.n_train, batch_size=args.batch, seed=0),
                          planned_steps=1000, physical_batch_size=args.batch, device=s.loaded.device,
                          engine=s.engine, privacy=privacy)
        times, tokens = [], 0
        for t in range(1, args.warmup + args.steps + 1):
            t0 = time.perf_counter()
            _, _, n_tok, _ = trainer.step(t)
            if t > args.warmup:
                times.append(time.perf_counter() - t0)
                tokens += n_tok
        peak, kind = peak_memory_mb(s.loaded.device)
        trainable = sum(p.numel() for p in trainer.params)
        return {"method": method, "step_s": statistics.median(times), "steps_timed": len(times),
                "tokens_per_s": tokens / sum(times), "peak_memory_mb": peak, "peak_memory_kind": kind,
                "trainable_params": trainable, "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--dp-engine", default="hooks")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args)))
        return
    rows = []
    for m in args.methods.split(","):
        cmd = [sys.executable, __file__, "--one", m, *[a for a in sys.argv[1:] if a != "--json"]]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    by = {r["method"]: r for r in rows}
    ratios = {}
    for dp, base in (("dp-fft", "fft"), ("dp-lora", "lora")):
        if dp in by and base in by:
            ratios[f"{dp.replace('-', '_')}_over_{base}_time"] = by[dp]["step_s"] / by[base]["step_s"]
            ratios[f"{dp.replace('-', '_')}_over_{base}_memory"] = by[dp]["peak_memory_mb"] / by[base]["peak_memory_mb"]
    result = {"model": args.model, "batch": args.batch, "seq": args.seq, "dp_engine": args.dp_engine,
              "methods": rows, "ratios": ratios}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"model {args.model}, batch {args.batch} x {args.seq} tokens, DP engine {args.dp_engine}")
    for r in rows:
        print(f"  {r['method']:8s} {r['step_s']:.3f} s/step  {r['tokens_per_s']:8.0f} tok/s  "
              f"peak {r['peak_memory_mb']:.0f} MB ({r['peak_memory_kind']})  trainable {r['trainable_params']:,}")
    for k, v in ratios.items():
        print(f"  {k} = {v:.2f}")


if __name__ == "__main__":
    main()
