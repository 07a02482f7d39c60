import numpy as np
import pytest
import torch
from scipy import stats

from privtune.training.dp.noise import _secure_standard_normal, gaussian_like, noise_generator


@pytest.mark.parametrize("secure", [False, True])
def test_noise_has_the_requested_std(secure):
    ref = torch.zeros(200_000)
    z = gaussian_like(ref, 0.7, generator=noise_generator(0, 1), secure=secure).numpy()
    assert abs(z.mean()) < 0.01 and z.std() == pytest.approx(0.7, rel=0.01)
    # Gaussian tails: about 4.55% beyond 2 sigma
    assert np.mean(np.abs(z) > 1.4) == pytest.approx(0.0455, abs=0.004)


def test_secure_sampler_pairs_are_independent_standard_normals():
    """Box-Muller gives each uniform pair two independent normals (the two halves of the draw): a wrong angle or
    radius shows in the distribution or in the correlation of the halves, before four draws are averaged."""
    z = _secure_standard_normal(200_000)
    assert z.shape == (200_000,) and np.isfinite(z).all()
    assert stats.kstest(z, "norm").pvalue > 1e-4
    assert abs(np.corrcoef(z[:100_000], z[100_000:])[0, 1]) < 0.015


def test_zero_std_is_zeros_of_the_reference_shape():
    ref = torch.ones(3, 2, dtype=torch.float64)
    for secure in (False, True):
        z = gaussian_like(ref, 0.0, generator=noise_generator(0, 1), secure=secure)
        assert z.shape == ref.shape and z.dtype == ref.dtype and not z.any()


def test_noise_is_fresh_per_invocation_and_reproducible():
    ref = torch.zeros(1000)
    a = gaussian_like(ref, 1.0, generator=noise_generator(3, 5))
    assert torch.equal(a, gaussian_like(ref, 1.0, generator=noise_generator(3, 5)))
    assert not torch.equal(a, gaussian_like(ref, 1.0, generator=noise_generator(3, 6)))
    assert not torch.equal(a, gaussian_like(ref, 1.0, generator=noise_generator(4, 5)))  # the seed matters too
    s1, s2 = (gaussian_like(ref, 1.0, secure=True) for _ in range(2))
    assert not torch.equal(s1, s2)


def test_secure_rng_run(tmp_path):
    from _train_helpers import lm_dataset
    from privtune.training.run import train

    data = lm_dataset(tmp_path / "d")
    rec = train(data=str(data), method="dp-lora", model="tiny:llama", steps=3, batch_size=4, max_length=32,
                epsilon=8.0, secure_rng=True, out=tmp_path / "r").record
    assert rec["status"] == "completed" and rec["secure_rng"] is True and rec["epsilon"] <= 8.0
