"""Safety checks: the DP-with-LoRA silent failure, NaN losses, the privacy budget, Poisson sampling."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from _train_helpers import lm_dataset
from privtune.errors import TrainingError
from privtune.training.config import TrainConfig
from privtune.training.dp import get_engine
from privtune.training.dp.engine import unique_trainable
from privtune.training.run import resume, train
from privtune.training.randomness import DPRandomness
from privtune.training.sampling import PoissonSampler, ShuffleSampler
from privtune.training.session import build_session, make_plan
from privtune.training.trainer import Trainer



@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return lm_dataset(tmp_path_factory.mktemp("d") / "cs")


def _cfg(data, **kw):
    base = dict(data=str(data), model="tiny:llama", steps=3, batch_size=4, max_length=32)
    return TrainConfig(**{**base, **kw})


def _trainer(s, *, engine, model, optimizer, tmp_path):
    from privtune.training.privacy import PrivacyState

    privacy = PrivacyState(s.plan.privacy, tmp_path) if engine is not None else None
    return Trainer(model=model, task="lm", data=s.data, sampler=s.sampler, optimizer=optimizer,
                   scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0), planned_steps=2,
                   physical_batch_size=4, device=torch.device("cpu"), engine=engine, privacy=privacy)


def test_dp_lora_engine_attached_before_wrapping_is_caught(data, tmp_path):
    """Broken order #1: DP hooks attached to the base model, then LoRA inserted: adapters get no per-example grads."""
    plan = make_plan(_cfg(data, method="dp-lora", epsilon=8.0))
    s = build_session(plan)
    from privtune.models.loading import load_model

    base = load_model("tiny:llama").model
    stale_engine = get_engine("hooks")(base, max_grad_norm=1.0)       # hooks on the *unwrapped* model
    model = plan.method.prepare(base, cfg=plan.cfg, task="lm")         # LoRA wrapping afterwards
    opt = torch.optim.AdamW(unique_trainable(model), lr=1e-2)
    with pytest.raises(TrainingError, match="stale|hooks"):
        _trainer(s, engine=stale_engine, model=model, optimizer=opt, tmp_path=tmp_path).run()
    # and the engine itself refuses to produce a sum without per-example gradients of the adapters
    stale_engine.params = unique_trainable(model)
    batch = s.data.collate([0, 1], torch.device("cpu"))
    from privtune.training.losses import per_example_loss

    with pytest.raises(TrainingError, match="hooks are bound to other modules"):
        stale_engine.accumulate(per_example_loss(model, batch, task="lm"))


@pytest.mark.parametrize("method", ["lora", "dp-lora"])
def test_optimizer_built_before_wrapping_is_caught(data, tmp_path, method):
    """Broken order #2: the optimizer holds the base's (now frozen) parameters; the adapters would never change."""
    plan = make_plan(_cfg(data, method=method, **({"epsilon": 8.0} if method.startswith("dp") else {})))
    s = build_session(plan)
    from privtune.models.loading import load_model

    base = load_model("tiny:llama").model
    stale_opt = torch.optim.AdamW(list(base.parameters()), lr=1e-2)
    model = plan.method.prepare(base, cfg=plan.cfg, task="lm")
    engine = get_engine("hooks")(model, max_grad_norm=1.0) if method.startswith("dp") else None
    with pytest.raises(TrainingError, match="optimizer"):
        _trainer(s, engine=engine, model=model, optimizer=stale_opt, tmp_path=tmp_path).run()


def test_first_step_sum_larger_than_clipping_allows_is_caught(data, tmp_path):
    """An engine whose clip statistics look right but whose sum was not clipped: the guard measures the sum itself
    (||sum_i clip_C(g_i)|| <= n C), before the noise that would hide it."""
    plan = make_plan(_cfg(data, method="dp-lora", epsilon=8.0))
    s = build_session(plan)
    s.engine.close()

    class Unclipped(type(s.engine)):
        def take_sum(self):
            sums, stats = super().take_sum()
            return [x * 1e3 for x in sums], stats

    engine = Unclipped(s.model, max_grad_norm=plan.privacy.max_grad_norm)
    opt = torch.optim.AdamW(unique_trainable(s.model), lr=1e-2)
    with pytest.raises(TrainingError, match=r"^`clipped gradient sum` must be of norm <= examples x max_grad_norm"):
        _trainer(s, engine=engine, model=s.model, optimizer=opt, tmp_path=tmp_path).run()
    engine.close()


def test_unchanged_parameters_after_first_step_are_caught(data, tmp_path):
    """An update that never reaches the weights (lr 0 here) is refused after the first step."""
    s = build_session(make_plan(_cfg(data, method="lora")))
    for g in s.optimizer.param_groups:
        g["lr"] = g["initial_lr"] = 0.0
    with pytest.raises(TrainingError, match="unchanged"):
        _trainer(s, engine=None, model=s.model, optimizer=s.optimizer, tmp_path=tmp_path).run()


def test_nan_loss_stops_keeps_last_good_checkpoint_and_resumes(data, tmp_path, monkeypatch):
    import privtune.training.trainer as trainer_mod

    real = trainer_mod.per_example_loss
    calls = {"n": 0}

    def poisoned(model, batch, *, task):
        calls["n"] += 1
        out = real(model, batch, task=task)
        return out * float("nan") if calls["n"] == 3 else out

    monkeypatch.setattr(trainer_mod, "per_example_loss", poisoned)
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match="finite"):
        train(_cfg(data, method="lora", steps=4, checkpoint_every=1), out=out)
    rec = json.loads((out / "run.json").read_text())
    assert rec["status"] == "failed" and "finite" in rec["error"] and "\n" not in rec["error"]
    assert not (out / "model").exists()
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts[-1] == "step-0000002"  # the last good step; the poisoned step 3 was never saved
    monkeypatch.setattr(trainer_mod, "per_example_loss", real)
    rec = resume(out).record
    assert rec["status"] == "completed" and rec["steps"] == 4 and rec["resumes"] == 1


def test_budget_guard_stops_before_exceeding_target(data, tmp_path):
    from privtune import accounting as acc
    # sigma given directly with a target that allows only some of the 30 planned steps (8 of them)
    cfg = _cfg(data, method="dp-lora", steps=30, noise_multiplier=1.5, epsilon=2.0, checkpoint_every=10)
    rec = train(cfg, out=tmp_path / "run").record
    assert rec["status"] == "budget_exhausted" and 0 < rec["steps"] < 30
    assert rec["ledger_steps"] == rec["steps"] and rec["epsilon"] <= 2.0
    q = rec["sample_rate"]
    one_more = acc.get_accountant("pld").epsilon(
        acc.Ledger.of(noise_multiplier=1.5, sample_rate=q, steps=rec["steps"] + 1), delta=1e-5).epsilon
    assert one_more > 2.0  # the guard stopped at the last step within budget, not earlier
    assert (tmp_path / "run" / "model").is_dir()


def test_calibrated_dp_run_meets_target_with_reserve(data, tmp_path):
    rec = train(_cfg(data, method="dp-lora", steps=10, epsilon=2.0, checkpoint_every=5), out=tmp_path / "r").record
    assert rec["noise_calibrated"] and rec["calibrated_steps"] == 15 and rec["reserve_steps"] == 5
    assert rec["status"] == "completed" and rec["epsilon"] <= 2.0
    ledger = json.loads((tmp_path / "r" / "ledger.json").read_text())
    assert ledger["ledger"]["entries"][0]["sample_rate"] == rec["sample_rate"] == 4 / 24


def test_poisson_sampler_rate_and_independence():
    q, n, steps = 0.1, 200, 400
    s = PoissonSampler(n=n, sample_rate=q, randomness=DPRandomness.seeded(7))
    counts = np.zeros(n)
    sizes = []
    for t in range(1, steps + 1):
        b = s.batch(t)
        counts[b] += 1
        sizes.append(len(b))
    # each example's inclusion frequency ~ Binomial(steps, q)/steps; batch sizes ~ Binomial(n, q)
    assert abs(counts.mean() / steps - q) < 0.005
    assert abs(np.mean(sizes) - n * q) < 0.6 and np.var(sizes) == pytest.approx(n * q * (1 - q), rel=0.25)
    assert abs(np.corrcoef(counts[:100], counts[100:])[0, 1]) < 0.3
    # a repeated execution of the same step (new ledger draw) gets a fresh, independent batch
    assert not np.array_equal(s.batch(5, draw=5), s.batch(5, draw=405))
    assert np.array_equal(s.batch(5, draw=5), s.batch(5))
    secure = PoissonSampler(n=n, sample_rate=q, randomness=DPRandomness.secure())
    assert abs(np.mean([len(secure.batch(t)) for t in range(1, 201)]) - n * q) < 1.0


def test_shuffle_sampler_fixed_batches_cover_each_epoch():
    s = ShuffleSampler(n=10, batch_size=4, seed=0)
    seen = np.concatenate([s.batch(t) for t in range(1, 6)])  # 20 draws = 2 epochs
    assert all(len(s.batch(t)) == 4 for t in range(1, 6))
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))


def test_estimate_accountant_is_certified_for_the_guard_and_the_record(data, tmp_path):
    """Edgeworth may steer calibration, but run.json's epsilon and the guard rest on the certified (PLD) bound."""
    from privtune import accounting as acc
    rec = train(_cfg(data, method="dp-lora", steps=6, epsilon=4.0, delta=1e-3, accountant="edgeworth"),
                out=tmp_path / "r").record
    assert rec["accountant"] == "edgeworth" and rec["certified_by"] == "pld" and rec["epsilon_certified"]
    pld = acc.get_accountant("pld").epsilon(
        acc.Ledger.of(noise_multiplier=rec["noise_multiplier"], sample_rate=rec["sample_rate"], steps=6),
        delta=1e-3).epsilon
    assert rec["epsilon"] == pytest.approx(pld) and rec["epsilon"] <= 4.0
    assert rec["epsilon_estimate"] > 0 and rec["epsilon_estimate_accountant"] == "edgeworth"


def test_a_run_directory_in_use_is_refused(tmp_path):
    """A second process on the same run directory gets a one-line error; the lock dies with its holder."""
    import subprocess
    import sys

    from privtune.errors import ConfigError
    from privtune.training.run import _lock

    src = str(Path(__file__).resolve().parents[1] / "src")
    holder = subprocess.Popen([sys.executable, "-c", f"import sys, time; sys.path.insert(0, {src!r});"
                               "from pathlib import Path; from privtune.training.run import _lock;"
                               f"ctx = _lock(Path({str(tmp_path)!r})); ctx.__enter__(); print('held', flush=True);"
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match="not in use by another privtune process"):
            with _lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with _lock(tmp_path):  # released by the holder's death (SIGKILL)
        pass
