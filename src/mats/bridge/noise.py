"""Embedding noise: the training-time trick that makes a text-trained decoder tolerate audio embeddings.

Definition used everywhere in MATS (training steps, Santa's memory entries, the ``noise`` bridge):

1. L2-normalise each row of ``x``;
2. add i.i.d. noise with the given *per-dimension* variance (Gaussian ``N(0, var)`` or, for the
   uniform variant, ``U(-a, a)`` with ``a = sqrt(3 * var)`` so the variance is the same);
3. L2-normalise again.

The paper's value is a variance of 0.015 (std ≈ 0.122). For a ``D``-dimensional unit vector the noise
norm is about ``sqrt(D * var)``, so the cosine between clean and noisy rows is about
``1 / sqrt(1 + D * var)`` (≈ 0.25 for D = 1024): the noise is large on purpose.

Variance 0 returns the input object unchanged (no normalisation, no copy).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..clap.base import l2_normalize
from .config import NOISE_KINDS

__all__ = ["NOISE_KINDS", "sample_noise", "add_noise"]


def _check(variance: float, kind: str) -> None:
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; choose one of {NOISE_KINDS}")
    if not (variance >= 0.0) or not math.isfinite(variance):
        raise ValueError(f"noise variance must be a finite number >= 0, got {variance!r}")


def sample_noise(
    shape,
    variance: float,
    kind: str = "gaussian",
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Raw noise with per-dimension ``variance`` (before any normalisation), on the generator's device.

    ``add_noise`` draws exactly this (same generator consumption), which lets tests check the
    variance of what is added.
    """
    _check(variance, kind)
    device = generator.device if generator is not None else torch.device("cpu")
    shape = tuple(int(s) for s in shape)
    if kind == "gaussian":
        n = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
        n.mul_(math.sqrt(variance))
    else:  # uniform with the same variance: U(-a, a) has variance a^2 / 3
        a = math.sqrt(3.0 * variance)
        n = torch.rand(shape, generator=generator, device=device, dtype=torch.float32)
        n.mul_(2.0 * a).sub_(a)
    return n.to(dtype)


def add_noise(
    x,
    variance: float,
    kind: str = "gaussian",
    generator: torch.Generator | None = None,
):
    """Normalise rows of ``x``, add noise of per-dimension ``variance``, normalise again.

    ``x``: ``[..., D]`` torch tensor (or numpy array; the result has the same type, dtype and, for
    tensors, device). ``generator``: a ``torch.Generator`` for reproducible draws (noise is drawn on
    the generator's device, then moved to ``x``'s); ``None`` uses torch's global RNG.
    Computation runs in float32 at least (half-precision inputs are upcast, then cast back).
    """
    _check(variance, kind)
    if variance == 0.0:
        return x
    if not isinstance(x, torch.Tensor):
        arr = np.asarray(x)
        out = add_noise(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)), variance, kind, generator)
        return out.numpy().astype(arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float32, copy=False)
    work_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf = l2_normalize(x.to(work_dtype))
    n = sample_noise(xf.shape, variance, kind, generator, dtype=work_dtype).to(xf.device)
    return l2_normalize(xf + n).to(x.dtype)
