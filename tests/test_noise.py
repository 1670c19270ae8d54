import math

import numpy as np
import pytest
import torch

from mats.bridge.config import PAPER_NOISE_VARIANCE
from mats.bridge.noise import add_noise, sample_noise
from mats.clap import l2_normalize


def _unit(n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return l2_normalize(torch.randn(n, d, generator=g))


def test_paper_default_and_bad_settings():
    assert PAPER_NOISE_VARIANCE == 0.015  # the paper's variance (std ~0.122)
    x = _unit(2, 8)
    with pytest.raises(ValueError):
        add_noise(x, 0.015, "pink")
    with pytest.raises(ValueError):
        add_noise(x, -1.0)


@pytest.mark.parametrize("kind", ["gaussian", "uniform"])
def test_raw_noise_variance(kind):
    g = torch.Generator().manual_seed(1)
    n = sample_noise((4000, 256), 0.015, kind, g)
    var = n.var(dim=0)  # per-dimension variance
    assert abs(n.mean().item()) < 2e-3
    assert torch.allclose(var.mean(), torch.tensor(0.015), rtol=0.01)
    assert (var - 0.015).abs().max().item() < 0.015 * 0.15
    if kind == "uniform":
        a = math.sqrt(3 * 0.015)
        assert n.abs().max().item() <= a + 1e-6
        assert n.abs().max().item() > 0.99 * a


@pytest.mark.parametrize("kind", ["gaussian", "uniform"])
def test_add_noise_is_normalise_add_renormalise(kind):
    x = _unit(64, 32) * 3.0  # not unit: add_noise normalises first
    noisy = add_noise(x, 0.015, kind, torch.Generator().manual_seed(7))
    raw = sample_noise(x.shape, 0.015, kind, torch.Generator().manual_seed(7))
    expected = l2_normalize(l2_normalize(x) + raw)
    assert torch.allclose(noisy, expected, atol=1e-6)
    assert torch.allclose(noisy.norm(dim=1), torch.ones(64), atol=1e-5)


@pytest.mark.parametrize("kind", ["gaussian", "uniform"])
def test_mean_cosine_matches_theory(kind):
    d, var = 1024, 0.015
    x = _unit(2000, d)
    noisy = add_noise(x, var, kind, torch.Generator().manual_seed(3))
    cos = (x * noisy).sum(1).mean().item()
    assert cos == pytest.approx(1.0 / math.sqrt(1.0 + d * var), abs=0.01)


def test_variance_zero_is_identity():
    x = torch.randn(5, 8)
    assert add_noise(x, 0.0) is x
    a = np.random.default_rng(0).standard_normal((3, 4))
    assert add_noise(a, 0.0) is a


def test_deterministic_with_generator_and_fresh_without():
    x = _unit(10, 16)
    a = add_noise(x, 0.015, generator=torch.Generator().manual_seed(5))
    b = add_noise(x, 0.015, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    g = torch.Generator().manual_seed(5)
    c1, c2 = add_noise(x, 0.015, generator=g), add_noise(x, 0.015, generator=g)
    assert not torch.equal(c1, c2)  # fresh noise on every call


def test_numpy_in_numpy_out_and_dtype_kept():
    a = np.asarray(_unit(4, 8).numpy(), dtype=np.float64)
    out = add_noise(a, 0.015, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == (4, 8)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    h = _unit(4, 8).to(torch.bfloat16)
    assert add_noise(h, 0.015).dtype == torch.bfloat16


def test_bad_arguments():
    with pytest.raises(ValueError):
        add_noise(torch.ones(2, 2), 0.1, kind="salt")
    with pytest.raises(ValueError):
        add_noise(torch.ones(2, 2), -0.1)
