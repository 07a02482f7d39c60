"""One real optimizer step of the trainer with zero noise equals the brute-force DP-SGD update; with noise, the
difference is Gaussian with std ``sigma C`` (over the expected batch size).

sigma = 0 is refused by the configuration and by the ledger (no run can claim privacy without noise), so this test
drives :class:`Trainer` with a ledger-less stand-in for the privacy state (:class:`_Privacy`, defined here and
nowhere else): the sampling, micro-batching, engine, noise code, division by the expected batch and
optimizer step are the trainer's own.
"""

from types import SimpleNamespace

import pytest
import torch

from _train_helpers import lm_dataset
from test_dp_engines import straddling_clip
from privtune.models.tiny import LM_ARCHS
from privtune.training.config import TrainConfig
from privtune.training.dp import get_engine
from privtune.training.dp.engine import EPS
from privtune.training.losses import per_example_loss
from privtune.training.randomness import DPRandomness
from privtune.training.sampling import PoissonSampler, split_micro
from privtune.training.session import build_session, make_plan
from privtune.training.trainer import Trainer


class _Privacy:
    """Test-only privacy state: any sigma (0 included), nothing recorded."""

    def __init__(self, max_grad_norm, sigma=0.0):
        self.plan = SimpleNamespace(noise_multiplier=sigma, max_grad_norm=max_grad_norm, secure_rng=False)
        self.draws = 0

    def begin_step(self):
        self.draws += 1
        return self.draws


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return lm_dataset(tmp_path_factory.mktemp("d") / "cs", n_train=16)


def _one_step(data, *, arch, method, engine, sigma):
    """One trainer step on a Poisson batch of several ragged micro-batches, with ``C`` straddling the batch's
    per-example norms; returns the parameters before and after, the brute-force clipped sum, ``C``, the learning
    rate and the expected batch size."""
    lr = 0.5
    cfg = TrainConfig(data=str(data), method=method, model=f"tiny:{arch}", noise_multiplier=1.0, max_grad_norm=1.0,
                      batch_size=6, max_length=24, steps=1, lora_r=2, dp_engine=engine, eval_test=False)
    s = build_session(make_plan(cfg))
    with torch.no_grad():  # LoRA B starts at zero: make A's gradients non-zero too
        for n, p in s.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    params = s.engine.params
    before = [p.detach().clone() for p in params]
    sampler = PoissonSampler(n=len(s.data), sample_rate=0.5, randomness=DPRandomness.seeded(1))
    idx = sampler.batch(1, draw=1)
    assert len(idx) >= 4 and len(split_micro(idx, 3)) >= 2  # several micro-batches, ragged lengths (padding)

    # brute force, with the engine detached: per-example gradients one by one, clipped, summed
    s.engine.close()
    s.model.train()
    per_example = []
    for i in idx:
        batch = s.data.collate([i], torch.device("cpu"))
        grads = torch.autograd.grad(per_example_loss(s.model, batch, task="lm").sum(), params, allow_unused=True)
        per_example.append([torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)])
    norms = torch.stack([torch.sqrt(sum((g.double() ** 2).sum() for g in grads)) for grads in per_example])
    C = straddling_clip(norms)
    ref = [torch.zeros_like(p) for p in params]
    for grads, norm in zip(per_example, norms):
        for r, g in zip(ref, grads):
            r.add_(g * min(1.0, C / (float(norm) + EPS)))
    eng = get_engine(engine)(s.model, max_grad_norm=C)

    opt = torch.optim.SGD(params, lr=lr)
    trainer = Trainer(model=s.model, task="lm", data=s.data, sampler=sampler, optimizer=opt,
                      scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0), planned_steps=1,
                      physical_batch_size=3, device=torch.device("cpu"), engine=eng,
                      privacy=_Privacy(C, sigma))
    outcome = trainer.run()
    eng.close()
    assert outcome.state.step == 1 and outcome.state.examples == len(idx)
    assert outcome.state.clip_clipped == int((norms > C).sum())
    return before, [p.detach() for p in params], ref, C, lr, sampler.expected_batch_size


@pytest.mark.parametrize("engine", ["bk", "hooks"])
@pytest.mark.parametrize("method", ["dp-fft", "dp-lora"])
@pytest.mark.parametrize("arch", LM_ARCHS)
def test_zero_noise_step_equals_bruteforce_update(data, arch, method, engine):
    before, after, ref, _, lr, expected = _one_step(data, arch=arch, method=method, engine=engine, sigma=0.0)
    for b, p, r in zip(before, after, ref):
        torch.testing.assert_close(p, b - lr * r / expected, rtol=1e-4, atol=1e-6)


def test_noise_of_a_step_has_std_sigma_times_clip_norm(data):
    """The update minus the brute-force clipped sum is the noise: N(0, (sigma C)^2) per coordinate, divided by the
    expected batch size (not sigma alone, not sigma C^2). ~60k coordinates: the sample std is within 1.5%."""
    sigma = 0.8
    before, after, ref, C, lr, expected = _one_step(data, arch="llama", method="dp-fft", engine="bk", sigma=sigma)
    assert abs(C - 1) > 0.2  # sigma and sigma * C must differ
    noise = torch.cat([((b - p) * expected / lr - r).flatten() for b, p, r in zip(before, after, ref)]).double()
    assert noise.numel() > 40_000
    assert abs(float(noise.mean())) < 0.02 * sigma * C
    assert float(noise.std()) == pytest.approx(sigma * C, rel=0.015)


def test_noise_is_added_in_place_with_the_same_draws():
    from privtune.training.dp.noise import add_noise_, gaussian_like, noise_generator

    ts = [torch.ones(3, 4), torch.zeros(5)]
    ref = [t + gaussian_like(t, 0.3, generator=g) for g in [noise_generator(1, 2)] for t in ts]
    ptrs = [t.data_ptr() for t in ts]
    add_noise_(ts, 0.3, generator=noise_generator(1, 2))
    assert [t.data_ptr() for t in ts] == ptrs
    for t, r in zip(ts, ref):
        torch.testing.assert_close(t, r)
    add_noise_(ts, 0.0)  # sigma 0 adds nothing
    for t, r in zip(ts, ref):
        torch.testing.assert_close(t, r)


def test_bk_under_bf16_autocast_matches_reference():
    """bf16 autocast (what GPUs use) on CPU: per-example quantities are formed in float32."""
    from privtune.training.dp import get_engine
    from test_dp_engines import _reference, _setup

    model, batch = _setup("llama", "dp-fft")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref, _, C = _reference(model, batch)
        eng = get_engine("bk")(model, max_grad_norm=C)
        eng.accumulate(per_example_loss(model, batch, task="lm"))
    got, stats = eng.take_sum()
    eng.close()
    assert stats.n == 4
    for g, r in zip(got, ref):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, r, rtol=0.03, atol=2e-3)
