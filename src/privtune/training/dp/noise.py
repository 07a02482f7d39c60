"""Gaussian noise for DP-SGD: ``N(0, (sigma C)^2)`` per coordinate of the clipped sum.

Default: a NumPy PCG64 generator keyed per mechanism invocation (:func:`noise_generator`; the key is the run's secret
or, for a reproducible run, its ``--noise-seed``: :mod:`privtune.training.randomness`). A torch CPU generator would
keep only 32 bits of its seed, which a search could recover; PCG64 through ``SeedSequence`` keeps every bit of a
256-bit key. ``secure=True``: normals by the Box-Muller
transform of 53-bit uniforms from the operating system's CSPRNG (``os.urandom``), and, against floating-point
attacks on the Gaussian sampler (Mironov 2012; Holohan and Braghin 2021, section 5.1), the sum of four such draws
divided by two (same variance) — the mitigation Opacus' ``secure_mode`` applies. Opacus' own secure mode needs
``torchcsprng``, which has no build for current torch; this is the same construction on a standard CSPRNG.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch


def _secure_standard_normal(n: int) -> np.ndarray:
    raw = np.frombuffer(os.urandom(16 * ((n + 1) // 2)), dtype=np.uint64).reshape(2, -1)
    u1 = ((raw[0] >> np.uint64(11)).astype(np.float64) + 1.0) * (1.0 / (1 << 53))  # (0, 1]
    u2 = (raw[1] >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))          # [0, 1)
    r = np.sqrt(-2.0 * np.log(u1))
    z = np.concatenate([r * np.cos(2 * math.pi * u2), r * np.sin(2 * math.pi * u2)])
    return z[:n]


def _standard_normal(shape: torch.Size, generator: np.random.Generator | None) -> torch.Tensor:
    """float32 standard normals on the CPU; without a generator, from a fresh OS-entropy generator (never a seed)."""
    gen = generator if generator is not None else np.random.default_rng()
    return torch.from_numpy(gen.standard_normal(tuple(shape), dtype=np.float32))


def gaussian_like(ref: torch.Tensor, std: float, *, generator: np.random.Generator | None = None,
                  secure: bool = False) -> torch.Tensor:
    """Noise with the shape, dtype and device of ``ref`` and standard deviation ``std``."""
    if std == 0:
        return torch.zeros_like(ref)
    if secure:
        n = ref.numel()
        z = sum(_secure_standard_normal(n) for _ in range(4)) / 2.0
        return torch.from_numpy(z * std).to(device=ref.device, dtype=ref.dtype).view_as(ref)
    return (_standard_normal(ref.shape, generator) * std).to(device=ref.device, dtype=ref.dtype)


def noise_generator(key: int, draw: int) -> np.random.Generator:
    """The generator for mechanism invocation ``draw`` (the ledger index) under ``key``: fresh noise for every
    invocation, and every bit of ``key`` in its state."""
    from privtune.training.randomness import NOISE_STREAM, keyed_rng

    return keyed_rng(key, NOISE_STREAM, draw)


def add_noise_(tensors: list[torch.Tensor], std: float, *, generator: np.random.Generator | None = None,
               secure: bool = False) -> None:
    """Add independent ``N(0, std^2)`` noise to every coordinate of ``tensors``, in place (no summed copy).

    On CPU the draws are those of :func:`gaussian_like` with the same generator. On an accelerator the noise is
    drawn there, by a device generator seeded with 63 bits from ``generator`` (no host-to-device copy).
    """
    if std == 0:
        return
    device_gen: dict[torch.device, torch.Generator] = {}
    for t in tensors:
        if secure:
            t.add_(gaussian_like(t, std, secure=True))
        elif t.device.type == "cpu":
            t.add_(_standard_normal(t.shape, generator), alpha=std)
        else:
            if t.device not in device_gen:
                gen = generator if generator is not None else np.random.default_rng()
                seed = int(gen.integers(0, 2**63))
                device_gen[t.device] = torch.Generator(device=t.device).manual_seed(seed)
            noise = torch.randn(t.shape, generator=device_gen[t.device], dtype=torch.float32, device=t.device)
            t.add_(noise.to(t.dtype), alpha=std)
