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
import sys

import numpy as np

from ..clap.base import l2_normalize
from .config import NOISE_KINDS
from .rng import TorchCompatibleGenerator

__all__ = ["NOISE_KINDS", "sample_noise", "add_noise"]


def _check(variance: float, kind: str) -> None:
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; choose one of {NOISE_KINDS}")
    if not (variance >= 0.0) or not math.isfinite(variance):
        raise ValueError(f"noise variance must be a finite number >= 0, got {variance!r}")


def _is_tensor(x) -> bool:
    torch = sys.modules.get("torch")  # a tensor or torch.Generator exists only once torch is loaded
    return torch is not None and isinstance(x, (torch.Tensor, torch.Generator))


def sample_noise(shape, variance: float, kind: str = "gaussian", generator=None, dtype=None):
    """Raw noise with per-dimension ``variance`` (before any normalisation).

    With a ``torch.Generator`` (or none, and a torch ``dtype``): a torch tensor on the generator's
    device, drawn by torch. With a :class:`~mats.bridge.rng.TorchCompatibleGenerator`: a float32
    numpy array, the same draws as a CPU ``torch.Generator`` of that seed (no torch import).
    ``add_noise`` draws exactly this (same generator consumption), which lets tests check the
    variance of what is added.
    """
    _check(variance, kind)
    shape = tuple(int(s) for s in shape)
    if isinstance(generator, TorchCompatibleGenerator):
        if kind == "gaussian":
            return generator.randn(shape) * np.float32(math.sqrt(variance))
        a = np.float32(math.sqrt(3.0 * variance))  # U(-a, a) has variance a^2 / 3
        return generator.rand(shape) * np.float32(2.0 * a) - a
    import torch

    dtype = torch.float32 if dtype is None else dtype
    device = generator.device if generator is not None else torch.device("cpu")
    if kind == "gaussian":
        n = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
        n.mul_(math.sqrt(variance))
    else:  # uniform with the same variance: U(-a, a) has variance a^2 / 3
        a = math.sqrt(3.0 * variance)
        n = torch.rand(shape, generator=generator, device=device, dtype=torch.float32)
        n.mul_(2.0 * a).sub_(a)
    return n.to(dtype)


def add_noise(x, variance: float, kind: str = "gaussian", generator=None):
    """Normalise rows of ``x``, add noise of per-dimension ``variance``, normalise again.

    ``x``: ``[..., D]`` numpy array or torch tensor; the result has the same type, dtype and, for
    tensors, device. ``generator`` decides who draws the noise:

    * a :class:`~mats.bridge.rng.TorchCompatibleGenerator` (numpy ``x`` only): numpy, no torch, the
      draws of a CPU ``torch.Generator`` of the same seed (inference: ``apply_bridge``);
    * a ``torch.Generator``: torch (noise drawn on the generator's device, then moved to ``x``'s);
    * ``None``: torch's global RNG for a tensor, a freshly seeded generator for a numpy array (not
      reproducible).

    Computation runs in float32 at least (half-precision inputs are upcast, then cast back).
    """
    _check(variance, kind)
    if variance == 0.0:
        return x
    if _is_tensor(x) or _is_tensor(generator):
        return _add_noise_torch(x, variance, kind, generator)
    if generator is None:
        generator = TorchCompatibleGenerator(int(np.random.SeedSequence().generate_state(1)[0]))
    if not isinstance(generator, TorchCompatibleGenerator):
        raise TypeError(f"generator must be a TorchCompatibleGenerator, a torch.Generator or None, "
                        f"got {type(generator).__name__}")
    arr = np.asarray(x)
    xf = l2_normalize(np.asarray(arr, dtype=np.float32))  # float32, as the torch path computes numpy rows
    out = l2_normalize(xf + sample_noise(xf.shape, variance, kind, generator))
    return out.astype(arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float32, copy=False)


def _add_noise_torch(x, variance: float, kind: str, generator):
    import torch

    if not isinstance(x, torch.Tensor):  # numpy rows with a torch.Generator: torch draws, numpy out
        arr = np.asarray(x)
        out = _add_noise_torch(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)), variance, kind,
                               generator)
        return out.numpy().astype(arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float32, copy=False)
    if isinstance(generator, TorchCompatibleGenerator):
        raise TypeError("a TorchCompatibleGenerator draws numpy noise: pass numpy rows, or a torch.Generator")
    work_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf = l2_normalize(x.to(work_dtype))
    n = sample_noise(xf.shape, variance, kind, generator, dtype=work_dtype).to(xf.device)
    return l2_normalize(xf + n).to(x.dtype)
