"""Seeded noise without torch: the draws of a CPU ``torch.Generator().manual_seed(seed)``, in numpy.

The default model's answers depend on the Santa noise that ``apply_bridge`` draws for a seed. Inference
must not import torch, yet those answers must not move, so :class:`TorchCompatibleGenerator` reproduces
what torch's CPU generator gives for ``torch.rand(shape)`` and ``torch.randn(shape)`` (float32,
contiguous), consuming its stream in the same order so successive draws match too:

* the stream: torch's CPU generator is mt19937 seeded with ``init_genrand(seed mod 2**32)``, the
  legacy seeding of numpy's ``RandomState(seed)``: both give the same 32-bit words;
* ``rand``: one word per value, ``(u32 & (2**24 - 1)) * 2**-24`` (exact in float32);
* ``randn`` of 16 values or more (ATen's ``normal_fill``): fill every value with a ``rand`` uniform,
  then Box-Muller in blocks of 16 (``u1 = 1 - u[j]``, ``u2 = u[j + 8]`` for ``j < 8``;
  ``r = sqrt(-2 log u1)``, ``theta = 2 pi u2``; ``r cos`` to slot ``j``, ``r sin`` to ``j + 8``); when
  the size is not a multiple of 16 the last 16 values are recomputed from 16 fresh uniforms;
* ``randn`` of fewer than 16 values (ATen's ``normal_distribution<double>``): per value two 53-bit
  uniforms from two words each (``u1``, ``u2``), ``r = sqrt(-2 log(1 - u2))``,
  ``theta = 2 pi u1``; the value is ``r cos theta`` and ``r sin theta`` is kept on the generator for
  the next such value (torch keeps it there too).

torch evaluates the 16-blocks in float32 with its vectorised log/sin/cos (about 1 ULP); so does this
class, with numpy's float32 log/sin/cos, on the same float32 ``1 - u`` and ``2 pi u``. A value may
therefore differ from torch's by a float32 ULP or two (tests/test_rng.py bounds the difference at
1e-6; most values are equal), never in the stream. (float64 math is no closer and 5x slower.)
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["TorchCompatibleGenerator"]

_MASK24 = (1 << 24) - 1
_MASK53 = (1 << 53) - 1
_TWO_PI_F32 = np.float32(2.0 * math.pi)  # torch: _mm256_set1_ps(2.0f * c10::pi<double>)
_CHUNK = 1 << 16  # values drawn and transformed at a time: arrays that stay in cache


class TorchCompatibleGenerator:
    """numpy twin of ``torch.Generator().manual_seed(seed)`` for ``rand`` / ``randn`` in float32."""

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        # torch's mt19937 keeps the low 32 bits of the seed and seeds with init_genrand: RandomState.seed's
        # legacy seeding, applied here to a bare MT19937 (whose random_raw hands out the words fastest)
        self._mt = np.random.MT19937(0)
        np.random.RandomState(self._mt).seed(self.seed & 0xFFFFFFFF)
        self._cached_normal: float | None = None  # torch's next_double_normal_sample

    def _words(self, n: int) -> np.ndarray:
        """The next ``n`` 32-bit words of the mt19937 stream (full range: one word each, no rejection)."""
        return self._mt.random_raw(n).astype(np.uint32)

    def _uniform_f32(self, n: int) -> np.ndarray:
        u = (self._mt.random_raw(n).view(np.int64) & _MASK24).astype(np.float32)  # words < 2**32: int64 is exact
        u *= np.float32(2.0 ** -24)  # exact: 24-bit integers scaled by a power of two
        return u

    def rand(self, shape) -> np.ndarray:
        """float32 uniforms in [0, 1): ``torch.rand(shape, generator=g)``."""
        shape = _shape(shape)
        size = math.prod(shape)
        out = np.empty(size, dtype=np.float32)
        for s in range(0, size, _CHUNK):  # the stream is sequential: chunks draw what one call would
            out[s : s + _CHUNK] = self._uniform_f32(min(_CHUNK, size - s))
        return out.reshape(shape)

    def randn(self, shape) -> np.ndarray:
        """float32 standard normals: ``torch.randn(shape, generator=g)``."""
        shape = _shape(shape)
        size = math.prod(shape)
        if size < 16:
            return np.array([self._scalar_normal() for _ in range(size)], dtype=np.float32).reshape(shape)
        out = np.empty(size, dtype=np.float32)
        # torch draws all ``size`` uniforms, then transforms whole blocks of 16; drawing and transforming
        # chunk by chunk (cache-sized, multiples of 16) reads the same words in the same order
        full = size // 16 * 16
        for s in range(0, full, _CHUNK):
            n = min(_CHUNK, full - s)
            out[s : s + n] = _box_muller_16(self._uniform_f32(n))
        if size % 16:  # the uniforms past the last whole block are drawn, then the last 16 redone
            self._uniform_f32(size - full)
            out[size - 16:] = _box_muller_16(self._uniform_f32(16))
        return out.reshape(shape)

    def _scalar_normal(self) -> float:
        if self._cached_normal is not None:
            value, self._cached_normal = self._cached_normal, None
            return value
        w = self._words(4).astype(np.uint64)
        u1, u2 = (((int(w[i]) << 32 | int(w[i + 1])) & _MASK53) * 2.0 ** -53 for i in (0, 2))
        r = math.sqrt(-2.0 * math.log1p(-u2))
        theta = 2.0 * math.pi * u1
        self._cached_normal = r * math.sin(theta)
        return r * math.cos(theta)


def _box_muller_16(u: np.ndarray) -> np.ndarray:
    """ATen's ``normal_fill_16`` over consecutive blocks of 16 uniforms (float32 in, float32 out)."""
    blocks = u.reshape(-1, 2, 8)
    u1 = np.float32(1.0) - blocks[:, 0].reshape(-1)  # contiguous copies: ufuncs on rows of 8 are slow
    theta = _TWO_PI_F32 * blocks[:, 1].reshape(-1)
    radius = np.log(u1)
    radius *= np.float32(-2.0)
    np.sqrt(radius, out=radius)
    out = np.empty_like(blocks)
    out[:, 0] = (radius * np.cos(theta)).reshape(-1, 8)
    out[:, 1] = (radius * np.sin(theta)).reshape(-1, 8)
    return out.reshape(-1)


def _shape(shape) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        return (int(shape),)
    return tuple(int(s) for s in shape)
