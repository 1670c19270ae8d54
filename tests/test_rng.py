"""TorchCompatibleGenerator draws what a CPU torch.Generator of the same seed draws (mats.bridge.rng):
the seeded Santa noise of inference must not move now that inference runs without torch."""

import numpy as np
import pytest
import torch

from mats.bridge.rng import TorchCompatibleGenerator

SEEDS = [0, 1, 2, 3, 7, 42, 123, 999, 31337, 2**31 - 1, 2**32 - 1, 2**32 + 5, 2**40 + 17]
# below 16 (torch's scalar Box-Muller with a cached second value), exact blocks of 16, ragged tails
# (torch redraws the last 16), one Santa chunk of the default model (32 entries x 384 dims)
SIZES = [1, 2, 3, 15, 16, 17, 31, 32, 33, 384, 1000, 12288, 32 * 1024, 32 * 1024 + 5, 70_001]
# what this class and torch's vectorised float32 log/sin/cos may differ by (measured: 4.8e-7 worst)
RANDN_ATOL = 1e-6


def _pair(seed):
    return torch.Generator().manual_seed(seed), TorchCompatibleGenerator(seed)


@pytest.mark.parametrize("seed", SEEDS)
def test_rand_is_torch_rand_exactly(seed):
    g, n = _pair(seed)
    for size in SIZES:
        np.testing.assert_array_equal(n.rand(size), torch.rand(size, generator=g).numpy(), err_msg=f"size {size}")


@pytest.mark.parametrize("seed", SEEDS)
def test_randn_is_torch_randn(seed):
    g, n = _pair(seed)
    for size in SIZES:
        want = torch.randn(size, generator=g).numpy()
        got = n.randn(size)
        assert got.dtype == np.float32 and got.shape == want.shape
        assert np.abs(got - want).max() <= RANDN_ATOL, f"size {size}"


def test_successive_mixed_draws_follow_torch_stream():
    """One generator, many calls of both kinds and odd sizes: each call continues torch's stream
    (including torch's cached second normal of the scalar path)."""
    g, n = _pair(5)
    plan = [("randn", 1), ("randn", 1), ("randn", 3), ("rand", 5), ("randn", 1), ("randn", 17), ("rand", 1),
            ("randn", (4, 8)), ("randn", 1), ("randn", 2), ("rand", (3, 7)), ("randn", (64, 384)), ("randn", 5)]
    for kind, shape in plan:
        want = getattr(torch, kind)(shape, generator=g).numpy()
        got = getattr(n, kind)(shape)
        assert got.shape == want.shape, (kind, shape)
        if kind == "rand":
            np.testing.assert_array_equal(got, want, err_msg=str((kind, shape)))
        else:
            assert np.abs(got - want).max() <= RANDN_ATOL, (kind, shape)


def test_most_normals_are_bit_equal_and_the_rest_within_an_ulp_or_two():
    """The difference to torch is rounding in log/sin/cos, never a shifted stream: a shifted stream
    would make values differ by O(1)."""
    want = torch.randn(100_000, generator=torch.Generator().manual_seed(11)).numpy()
    got = TorchCompatibleGenerator(11).randn(100_000)
    diff = np.abs(got - want)
    assert diff.max() <= RANDN_ATOL
    ulps = diff / np.spacing(np.abs(want).astype(np.float32))
    assert np.percentile(ulps, 99) <= 2.0


def test_seeds_are_independent_and_reproducible():
    a = TorchCompatibleGenerator(1).randn(64)
    assert np.array_equal(a, TorchCompatibleGenerator(1).randn(64))
    assert not np.allclose(a, TorchCompatibleGenerator(2).randn(64))
