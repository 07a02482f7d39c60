"""Accounting speed: Edgeworth ε for 10^6 steps (cached, cold), PLD for 10^4 steps, certified calibration.

    PYTHONPATH=src python benchmarks/bench_accounting.py [--repeats 5] [--json]

Targets (issue 4): Edgeworth cached < 10 ms, cold < 300 ms; PLD (10^4 steps) < 100 ms; certified calibration
< 1 s. "Cold" clears every cache of privtune.accounting but not Python's imports (prepared first: a one-off
per process). Median (and fastest) wall-clock seconds over --repeats runs in one process; on a shared machine,
figures vary with load and the fastest run is the better estimate of the machine's own speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("PRIVTUNE_PROGRESS", "0")

from privtune.accounting import Ledger, calibrate_noise, get_accountant  # noqa: E402
from privtune.accounting import edgeworth, pld, prv, rdp  # noqa: E402

TARGETS = {"edgeworth_cached": 0.010, "edgeworth_cold": 0.300, "pld_1e4": 0.100, "calibrate": 1.0}


def clear_caches() -> None:
    for fn in (edgeworth.cumulants, pld._step_pld, pld._entry_pld, pld._ledger_pld, rdp._rdp_per_step,
               prv._composed_prv):
        fn.cache_clear()


class Timer:
    def __init__(self, repeats: int):
        self.repeats = repeats
        self.median: dict[str, float] = {}
        self.fastest: dict[str, float] = {}

    def __call__(self, key: str, fn, *, cold: bool, repeats: int | None = None) -> None:
        times = []
        for _ in range(repeats or self.repeats):
            if cold:
                clear_caches()
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        self.median[key], self.fastest[key] = statistics.median(times), min(times)


def run(timer: Timer) -> None:
    for name in ("rdp", "pld", "prv", "edgeworth"):
        get_accountant(name).prepare()
    ew = get_accountant("edgeworth")
    for sigma, q in ((1.0, 0.001), (0.8, 0.01), (0.5, 0.05)):
        ledger = Ledger.of(noise_multiplier=sigma, sample_rate=q, steps=10**6)
        timer(f"edgeworth_cold 1e6 steps σ {sigma} q {q}", lambda: ew.estimate(ledger, delta=1e-5), cold=True)
        ew.estimate(ledger, delta=1e-5)
        timer(f"edgeworth_cached 1e6 steps σ {sigma} q {q}", lambda: ew.estimate(ledger, delta=1e-5),
              cold=False)
    for order in (2, 3):
        acc = get_accountant("edgeworth", order=order)
        ledger = Ledger.of(noise_multiplier=0.8, sample_rate=0.01, steps=10**6)
        timer(f"edgeworth_cold order {order} 1e6 steps σ 0.8 q 0.01",
              lambda: acc.estimate(ledger, delta=1e-5), cold=True)
    pld_acc = get_accountant("pld")
    for sigma, q in ((1.0, 0.01), (0.8, 0.02), (2.0, 0.005)):
        ledger = Ledger.of(noise_multiplier=sigma, sample_rate=q, steps=10**4)
        timer(f"pld_1e4 steps σ {sigma} q {q}", lambda: pld_acc.epsilon(ledger, delta=1e-5), cold=True)
    ledger = Ledger.of(noise_multiplier=1.0, sample_rate=0.01, steps=10**4)
    timer("rdp 1e4 steps σ 1 q 0.01", lambda: get_accountant("rdp").epsilon(ledger, delta=1e-5), cold=True)
    timer("prv 1e4 steps σ 1 q 0.01", lambda: get_accountant("prv").epsilon(ledger, delta=1e-5), cold=True,
          repeats=max(1, timer.repeats // 2))
    for label, kw in (("SST-2 setting", dict(sample_rate=2000 / 67349, steps=660)),
                      ("q 0.01, 1e4 steps", dict(sample_rate=0.01, steps=10**4))):
        for name in ("pld", "edgeworth"):
            timer(f"calibrate {name} ε 8, {label}",
                  lambda: calibrate_noise(target_epsilon=8, delta=1e-5, accountant=name, **kw), cold=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    timer = Timer(args.repeats)
    run(timer)
    verdicts = {}
    for prefix, target in TARGETS.items():
        worst = max(v for k, v in timer.median.items() if k.startswith(prefix))
        verdicts[prefix] = {"worst_median_s": worst, "target_s": target, "met": worst < target}
    if args.json:
        print(json.dumps({"median_s": timer.median, "fastest_s": timer.fastest, "targets": verdicts,
                          "load_average": os.getloadavg()[0], "cpus": os.cpu_count()}, indent=2))
        return
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; median and fastest of "
          f"{args.repeats} runs")
    for k, v in timer.median.items():
        print(f"{k:50s} {v * 1e3:10.2f} ms {timer.fastest[k] * 1e3:10.2f} ms")
    print()
    for k, v in verdicts.items():
        verdict = "met" if v["met"] else "MISSED"
        print(f"{k:18s} worst median {v['worst_median_s'] * 1e3:9.2f} ms   target < "
              f"{v['target_s'] * 1e3:6.0f} ms   {verdict}")


if __name__ == "__main__":
    main()
