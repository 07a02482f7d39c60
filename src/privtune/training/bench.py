"""``privtune bench``: the cost of DP training relative to non-private training, measured in one process.

Setup: the four methods ``fft``, ``lora``, ``dp-fft`` and ``dp-lora`` are built side by side in one process (each
its own copy of the base model, optimizer and, for DP, engine and ledger), exactly as ``privtune train`` builds them.
Every method trains on the *same* batches: ``batch`` sequences of exactly ``seq`` tokens (CustomerSim dialogs,
tokenized and packed into a stream cut at ``seq``, so no padding), fixed-size batches in the same order (DP methods
use them instead of Poisson batches: the cost of a step is what is measured, not its privacy). DP steps add noise
(``sigma = 1``) and write the ledger, as in a real run.

Time (seconds per optimizer step): ``warmup`` rounds excluded, then ``rounds`` rounds; in each round every method
takes one step, in an order that rotates from round to round and puts each DP method next to its baseline, so that
background load on a shared machine falls on numerator and denominator alike. A ratio is the median over rounds of
the per-round ratio ``t_dp / t_base`` (paired); the raw figures are medians of the per-method step times.

User-level clipping (``records_per_user`` K > 0, default 4): each DP method is also built a second time and run on
the same batches with the batch's sequences grouped into users of K consecutive sequences, clipping each user's
summed gradient (``--privacy-unit user``'s engine path, :mod:`privtune.training.dp.engine`). It takes its step right
after its record-level twin; ``<dp>_user_over_record_time`` is the median paired ratio, ``user_over_record_time``
the largest of them over the DP methods (and ``..._memory`` likewise).

Peak memory (MiB) of a method: its *resident* state (parameters, buffers and optimizer state, storages counted
once) plus the peak, during one optimizer step, of the tensor memory allocated above the step's start (gradients,
activations, per-example quantities, noise). On CPU the step runs under ``torch.profiler`` with
``profile_memory=True`` and the peak is the running maximum of its allocation/free events (the CPU allocator's own
record: exact and unaffected by other methods in the process or by the C library keeping freed pages, which make
process RSS useless within one process); on CUDA, ``max_memory_allocated`` minus ``memory_allocated`` at the step's
start. Memory outside torch's allocator (interpreter, libraries) is the same for all methods and left out.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch

from privtune.errors import ConfigError, fmt

PAIRS = (("fft", "dp-fft"), ("lora", "dp-lora"))


@dataclass
class BenchConfig:
    model: str = "embedded"
    batch: int = 16
    seq: int = 128
    rounds: int = 5
    warmup: int = 1
    dp_engine: str | None = None      # None: the default engine (TrainConfig.dp_engine)
    noise_multiplier: float = 1.0
    pairs: tuple[tuple[str, str], ...] = PAIRS
    threads: int | None = None
    device: str = "cpu"
    memory: bool = True
    seed: int = 0
    records_per_user: int = 4         # user-level clipping variant of each DP method (0: not measured)

    def validate(self) -> "BenchConfig":
        if self.records_per_user < 0:
            raise ConfigError(fmt("--records-per-user", "a non-negative integer", self.records_per_user))
        for name in ("batch", "seq", "rounds"):
            if getattr(self, name) < 1 or (name == "seq" and self.seq < 2):
                raise ConfigError(fmt(f"--{name}", "a positive integer (seq >= 2)", getattr(self, name)))
        if self.warmup < 0:
            raise ConfigError(fmt("--warmup", "a non-negative integer", self.warmup))
        return self


@dataclass
class MethodCost:
    method: str
    step_s: float                     # median over timed rounds
    step_s_all: list[float]
    peak_memory_mb: float | None      # resident + transient peak
    resident_mb: float | None
    transient_peak_mb: float | None
    trainable_params: int
    dp_engine: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BenchResult:
    config: dict[str, Any]
    methods: dict[str, MethodCost]
    ratios: dict[str, float | None]
    environment: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        flat: dict[str, Any] = dict(self.ratios)
        for name, m in self.methods.items():
            key = name.replace("-", "_")
            flat[f"{key}_step_s"] = m.step_s
            flat[f"{key}_peak_memory_mb"] = m.peak_memory_mb
        return {**flat, "methods": {k: v.to_dict() for k, v in self.methods.items()}, "config": self.config,
                "environment": self.environment}


def ratio_key(base: str, dp: str, what: str) -> str:
    return f"{dp.replace('-', '_')}_over_{base.replace('-', '_')}_{what}"


# -- data ---------------------------------------------------------------------------------------------------------
def packed_batches(tokenizer: Any, texts: Iterable[str], *, batch: int, seq: int, n_batches: int) -> Any:
    """Sequences of exactly ``seq`` tokens cut from the tokenized texts joined by EOS (an :class:`Encoded`)."""
    from privtune.training.data import Encoded

    need = batch * n_batches * seq
    stream: list[int] = []
    eos = tokenizer.eos_token_id
    texts = list(texts)
    while len(stream) < need:
        for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]:
            stream.extend(ids + ([eos] if eos is not None else []))
            if len(stream) >= need:
                break
    seqs = [stream[i:i + seq] for i in range(0, need, seq)]
    return Encoded(input_ids=seqs, labels=None, pad_id=tokenizer.pad_token_id)


# -- memory -------------------------------------------------------------------------------------------------------
def resident_bytes(*modules_and_optimizers: Any) -> int:
    """Bytes of the distinct storages behind parameters, buffers and optimizer state."""
    seen: set[tuple[str, int]] = set()
    total = 0

    def add(t: Any) -> None:
        nonlocal total
        if isinstance(t, torch.Tensor):
            st = t.untyped_storage()
            key = (str(t.device), st.data_ptr())
            if key not in seen:
                seen.add(key)
                total += st.nbytes()

    for obj in modules_and_optimizers:
        if isinstance(obj, torch.nn.Module):
            for t in list(obj.parameters()) + list(obj.buffers()):
                add(t)
        elif isinstance(obj, torch.optim.Optimizer):
            for state in obj.state.values():
                for t in state.values():
                    add(t)
    return total


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """The profiler's native library logs start/stop lines to file descriptor 2: silence them (and only them:
    exceptions still propagate)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def transient_peak_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """Peak of tensor memory allocated during ``fn()`` above its start (see the module docstring)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - start)
    from torch.profiler import ProfilerActivity, profile

    with _quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and str(e.device_type()).endswith("CPU"))
    running = peak = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return int(peak)


# -- the benchmark ------------------------------------------------------------------------------------------------
@dataclass
class _Bench:
    method: str
    trainer: Any
    session: Any
    engine_name: str | None
    times: list[float] = field(default_factory=list)


USER = "-user"  # suffix of a DP method's user-level variant


@dataclass(frozen=True)
class FixedUserBatches:
    """The bench's fixed batches, their sequences grouped into users of ``k`` consecutive sequences (user-level
    clipping cost on exactly the record-level twin's batches)."""

    base: Any
    k: int

    def batch(self, step: int, *, draw: int | None = None) -> Any:
        return self.base.batch(step)

    def batch_users(self, step: int, *, draw: int | None = None) -> list[Any]:
        b = self.base.batch(step)
        return [b[i:i + self.k] for i in range(0, len(b), self.k)]

    @property
    def expected_batch_size(self) -> float:
        return float(-(-self.base.batch_size // self.k))


def _with_users(order: list[str], benches: dict[str, Any]) -> list[str]:
    """Each user-level variant right after its record-level twin."""
    return [x for m in order for x in ([m, m + USER] if m + USER in benches else [m])]


def _order(pairs: tuple[tuple[str, str], ...], r: int) -> list[str]:
    """Round ``r``'s order: pairs rotate every round, and within each pair the DP method goes first in every other
    cycle of rotations (two pairs: four distinct orders in four rounds)."""
    k = len(pairs)
    ps = list(pairs[r % k:]) + list(pairs[:r % k])
    return [m for b, d in ps for m in ((d, b) if (r // k) % 2 else (b, d))]


def build(cfg: BenchConfig, tmp: Path, progress: Callable[[str], None] | None = None) -> dict[str, _Bench]:
    from privtune.data.schema import write_dataset
    from privtune.data.synth import generate
    from privtune.training.config import TrainConfig
    from privtune.training.privacy import PrivacyState
    from privtune.training.sampling import ShuffleSampler
    from privtune.training.session import build_session, make_plan
    from privtune.training.trainer import Trainer

    n_batches = cfg.warmup + cfg.rounds + (1 if cfg.memory else 0)
    splits, info = generate("customersim", n_train=max(2 * cfg.batch, 64), n_test=0, seed=cfg.seed, canary_repeats=0)
    write_dataset(tmp / "data", splits, info)
    texts = [r.text for r in splits["train"]]
    out: dict[str, _Bench] = {}
    data = None
    for method in [m for pair in cfg.pairs for m in pair]:
        if progress:
            progress(f"building {method}")
        dp = method.startswith("dp-")
        kw: dict[str, Any] = {"noise_multiplier": cfg.noise_multiplier} if dp else {}
        if dp and cfg.dp_engine:
            kw["dp_engine"] = cfg.dp_engine
        tcfg = TrainConfig(data=str(tmp / "data"), method=method, model=cfg.model, batch_size=cfg.batch,
                           physical_batch_size=cfg.batch, max_length=cfg.seq, steps=n_batches, eval_test=False,
                           seed=cfg.seed, device=cfg.device, lr_schedule="constant", **kw)
        s = build_session(make_plan(tcfg))
        if data is None:
            data = packed_batches(s.loaded.tokenizer, texts, batch=cfg.batch, seq=cfg.seq, n_batches=n_batches)
        privacy = PrivacyState(s.plan.privacy, tmp / method) if s.engine is not None else None
        (tmp / method).mkdir(exist_ok=True)
        trainer = Trainer(model=s.model, task="lm", data=data, optimizer=s.optimizer, scheduler=s.scheduler,
                          sampler=ShuffleSampler(n=len(data), batch_size=cfg.batch, seed=cfg.seed),
                          planned_steps=n_batches, physical_batch_size=cfg.batch, device=s.loaded.device,
                          engine=s.engine, privacy=privacy, randomness=s.randomness)
        out[method] = _Bench(method, trainer, s, tcfg.dp_engine if dp else None)
        if dp and cfg.records_per_user:
            name = method + USER
            if progress:
                progress(f"building {name}")
            su = build_session(make_plan(tcfg))
            su.model.load_state_dict(s.model.state_dict())
            (tmp / name).mkdir(exist_ok=True)
            sampler = FixedUserBatches(ShuffleSampler(n=len(data), batch_size=cfg.batch, seed=cfg.seed),
                                       cfg.records_per_user)
            tu = Trainer(model=su.model, task="lm", data=data, optimizer=su.optimizer, scheduler=su.scheduler,
                         sampler=sampler, planned_steps=n_batches, physical_batch_size=cfg.batch,
                         device=su.loaded.device, engine=su.engine, privacy=PrivacyState(su.plan.privacy, tmp / name),
                         randomness=su.randomness)
            out[name] = _Bench(name, tu, su, tcfg.dp_engine)
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_bench(cfg: BenchConfig | None = None, *, progress: Callable[[str], None] | None = None) -> BenchResult:
    """Measure (see the module docstring); ``progress`` receives one line per phase."""
    cfg = (cfg or BenchConfig()).validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="privtune-bench-") as tmp:
        benches = build(cfg, Path(tmp), progress)
        step = 0
        for r in range(cfg.warmup + cfg.rounds):
            step += 1
            if progress:
                progress(f"round {r + 1}/{cfg.warmup + cfg.rounds}" + (" (warm-up)" if r < cfg.warmup else ""))
            gc.collect()
            for m in _with_users(_order(cfg.pairs, r), benches):
                dev = benches[m].session.loaded.device
                _sync(dev)
                t0 = time.perf_counter()
                benches[m].trainer.step(step)
                _sync(dev)   # CUDA kernels run asynchronously: the step is over when the device is done
                dt = time.perf_counter() - t0
                if r >= cfg.warmup:
                    benches[m].times.append(dt)
        peaks: dict[str, tuple[int, int]] = {}
        if cfg.memory:
            step += 1
            if progress:
                progress("memory")
            for m, b in benches.items():
                gc.collect()
                s = b.session
                resident = resident_bytes(s.model, s.optimizer)
                peaks[m] = (resident, transient_peak_bytes(lambda: b.trainer.step(step), s.loaded.device))
        device = str(next(iter(benches.values())).session.loaded.device)
        for b in benches.values():
            if b.session.engine is not None:
                b.session.engine.close()
    mb = 2.0 ** 20
    methods = {}
    for m, b in benches.items():
        res, tr = peaks.get(m, (None, None))
        methods[m] = MethodCost(
            method=m, step_s=statistics.median(b.times), step_s_all=[round(t, 4) for t in b.times],
            peak_memory_mb=None if res is None else round((res + tr) / mb, 2),
            resident_mb=None if res is None else round(res / mb, 2),
            transient_peak_mb=None if tr is None else round(tr / mb, 2),
            trainable_params=sum(p.numel() for p in b.trainer.params), dp_engine=b.engine_name)
    ratios: dict[str, float | None] = {}
    for base, dp in cfg.pairs:
        tb, td = benches[base].times, benches[dp].times
        ratios[ratio_key(base, dp, "time")] = round(statistics.median(d / t for d, t in zip(td, tb)), 4)
        pb, pd = methods[base].peak_memory_mb, methods[dp].peak_memory_mb
        ratios[ratio_key(base, dp, "memory")] = None if pb is None or pd is None else round(pd / pb, 4)
    users = [dp for _, dp in cfg.pairs if dp + USER in benches]
    for dp in users:
        tr, tu = benches[dp].times, benches[dp + USER].times
        key = dp.replace("-", "_")
        ratios[f"{key}_user_over_record_time"] = round(statistics.median(u / t for u, t in zip(tu, tr)), 4)
        pr, pu = methods[dp].peak_memory_mb, methods[dp + USER].peak_memory_mb
        ratios[f"{key}_user_over_record_memory"] = None if pr is None or pu is None else round(pu / pr, 4)
    if users:
        for what in ("time", "memory"):
            vals = [ratios[f"{dp.replace('-', '_')}_user_over_record_{what}"] for dp in users]
            ratios[f"user_over_record_{what}"] = None if None in vals else max(vals)
    env = {"device": device, "threads": torch.get_num_threads(), "torch": torch.__version__,
           "cpu_count": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
           "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
    conf = {k: v for k, v in asdict(cfg).items() if k != "pairs"}
    conf["pairs"] = [list(p) for p in cfg.pairs]
    return BenchResult(config=conf, methods=methods, ratios=ratios, environment=env)
