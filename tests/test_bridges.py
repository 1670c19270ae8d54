import numpy as np
import pytest
import torch

from mats.bridge import (
    BRIDGES,
    BridgeConfig,
    BridgeError,
    SantaConfig,
    SantaMemory,
    apply_bridge,
    projection,
)
from mats.clap import l2_normalize

D = 24


def unit(n, d=D, seed=0):
    return np.ascontiguousarray(l2_normalize(np.random.default_rng(seed).standard_normal((n, d))), dtype=np.float32)


@pytest.fixture(scope="module")
def memory():
    return SantaMemory.build(unit(600, seed=1), SantaConfig(clusters=10, top_l=8))


@pytest.fixture(scope="module")
def queries():
    return unit(40, seed=2)


def shift_vec():
    return (0.5 * unit(1, seed=3)[0]).astype(np.float32)


@pytest.mark.parametrize("name", BRIDGES)
def test_every_bridge_unit_norm_shape_and_determinism(name, memory, queries):
    cfg = BridgeConfig(name=name)
    a = apply_bridge(queries, cfg, memory=memory, shift=shift_vec(), seed=4)
    b = apply_bridge(queries, cfg, memory=memory, shift=shift_vec(), seed=4)
    assert a.shape == queries.shape and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a, b)
    if name in ("noise", "santa"):
        c = apply_bridge(queries, cfg, memory=memory, shift=shift_vec(), seed=5)
        assert not np.array_equal(a, c)


def test_none_is_identity(queries):
    out = apply_bridge(queries, BridgeConfig(name="none"))
    np.testing.assert_allclose(out, queries, atol=1e-7)
    # and it normalises non-unit input
    np.testing.assert_allclose(apply_bridge(3 * queries, "none"), queries, atol=1e-6)


def test_noise_bridge_is_training_noise(queries):
    from mats.bridge import add_noise

    out = apply_bridge(queries, BridgeConfig(name="noise", noise_variance=0.02, noise_kind="uniform"), seed=7)
    ref = add_noise(torch.from_numpy(queries), 0.02, "uniform", torch.Generator().manual_seed(7)).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-6)  # same draws; only re-normalisation rounding differs
    np.testing.assert_allclose(apply_bridge(queries, BridgeConfig(name="noise", noise_variance=0.0)), queries,
                               atol=1e-7)


def test_noise_bridge_defaults_to_the_models_training_noise(queries):
    from mats.bridge import add_noise

    trained = SantaMemory.build(unit(200, seed=1), SantaConfig(clusters=4, top_l=8, noise_variance=0.002))
    out = apply_bridge(queries, "noise", memory=trained, seed=7)
    ref = add_noise(torch.from_numpy(queries), 0.002, "gaussian", torch.Generator().manual_seed(7)).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-6)
    assert BridgeConfig(name="noise").describe(trained)["noise_variance"] == 0.002
    # without a memory (no record of the training noise): the paper's 0.015
    ref = add_noise(torch.from_numpy(queries), 0.015, "gaussian", torch.Generator().manual_seed(7)).numpy()
    np.testing.assert_allclose(apply_bridge(queries, "noise", seed=7), ref, atol=1e-6)
    assert BridgeConfig(name="noise").describe()["noise_variance"] == 0.015


def test_santa_bridge_is_memory_apply(memory, queries):
    cfg = BridgeConfig(name="santa", lam=0.5, tau=5.0, top_l=4, noise_variance=0.01, search="exact")
    out = apply_bridge(queries, cfg, memory=memory, seed=3)
    ref = memory.apply(queries, torch.Generator().manual_seed(3), lam=0.5, tau=5.0, noise_variance=0.01,
                       top_l=4, search="exact")
    np.testing.assert_allclose(out, ref, atol=1e-6)
    # defaults come from the memory's config (paper values)
    out = apply_bridge(queries, BridgeConfig(name="santa"), memory=memory, seed=3)
    np.testing.assert_allclose(out, memory.apply(queries, torch.Generator().manual_seed(3)), atol=1e-6)


def test_nearest_returns_exactly_a_bank_row(memory, queries):
    out = apply_bridge(queries, BridgeConfig(name="nearest"), memory=memory)
    best = (queries @ memory.bank.T).argmax(1)
    np.testing.assert_array_equal(out, memory.bank[best])
    # a bank row maps to itself
    np.testing.assert_array_equal(apply_bridge(memory.bank[:5], "nearest", memory=memory), memory.bank[:5])


def test_projection_with_huge_tau_is_nearest(memory, queries):
    near = apply_bridge(queries, BridgeConfig(name="nearest"), memory=memory)
    proj = apply_bridge(queries, BridgeConfig(name="projection", tau=1e5), memory=memory)
    np.testing.assert_allclose(proj, near, atol=1e-5)
    proj_l = apply_bridge(queries, BridgeConfig(name="projection", tau=1e5, projection_top_l=8), memory=memory)
    np.testing.assert_allclose(proj_l, near, atol=1e-5)


def test_projection_matches_dense_softmax_and_chunking(memory, queries, monkeypatch):
    tau = 100.0
    logits = tau * queries.astype(np.float64) @ memory.bank.T.astype(np.float64)
    w = np.exp(logits - logits.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    ref = w @ memory.bank.astype(np.float64)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    out = apply_bridge(queries, BridgeConfig(name="projection"), memory=memory)  # default tau = 100
    np.testing.assert_allclose(out, ref, atol=1e-6)
    import mats.bridge.bridges as br

    monkeypatch.setattr(br, "_CHUNK_ELEMS", 7 * 40)  # force many small bank chunks (online softmax)
    np.testing.assert_allclose(projection(queries, memory.bank, tau), ref, atol=1e-6)
    # tau = 0: the bank mean direction for every query
    mean = memory.bank.mean(0)
    np.testing.assert_allclose(projection(queries[:2], memory.bank, 0.0), np.stack([mean, mean]) / np.linalg.norm(mean),
                               atol=1e-5)


def test_shift_direction(queries):
    s = shift_vec()
    out = apply_bridge(queries, BridgeConfig(name="shift"), shift=s)
    ref = queries + s
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(out, ref, atol=1e-6)
    # the shift moves every embedding towards the shift direction
    sdir = s / np.linalg.norm(s)
    assert ((out @ sdir) > (queries @ sdir)).all()
    np.testing.assert_allclose(apply_bridge(queries, "shift", shift=np.zeros(D, np.float32)), queries, atol=1e-6)


def test_missing_memory_or_shift_errors(queries):
    for name in ("santa", "nearest", "projection"):
        with pytest.raises(BridgeError, match="memory"):
            apply_bridge(queries, BridgeConfig(name=name))
    with pytest.raises(BridgeError, match="shift"):
        apply_bridge(queries, BridgeConfig(name="shift"))
    with pytest.raises(BridgeError, match="dimension"):
        apply_bridge(queries, BridgeConfig(name="shift"), shift=np.ones(D + 1, np.float32))


def test_bad_configs_and_inputs(memory, queries):
    with pytest.raises(BridgeError):
        BridgeConfig(name="magic")
    with pytest.raises(BridgeError):
        BridgeConfig(name="santa", search="annoy")
    with pytest.raises(BridgeError, match="dimension"):
        apply_bridge(unit(3, D + 2), BridgeConfig(name="nearest"), memory=memory)
    with pytest.raises(BridgeError):
        apply_bridge(queries[0], BridgeConfig(name="none"))
    bad = queries.copy()
    bad[0, 0] = np.nan
    with pytest.raises(BridgeError):
        apply_bridge(bad, BridgeConfig(name="none"))


def test_torch_input_accepted(queries):
    out = apply_bridge(torch.from_numpy(queries), BridgeConfig(name="none"))
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, queries, atol=1e-7)


TORCH_FREE = r"""
import sys
import numpy as np
from mats.bridge.bridges import BRIDGES, apply_bridge
from mats.bridge.retrieval import retrieve_texts
from mats.bridge.santa import SantaMemory
from mats.config import DEFAULT_MODEL

mem = SantaMemory.load(DEFAULT_MODEL / "santa")
q = (mem.bank[:6] + 0.05 * np.random.default_rng(0).standard_normal((6, mem.dim))).astype(np.float32)
shift = np.full(mem.dim, 0.01, np.float32)
outs = {name: apply_bridge(q, name, memory=mem, shift=shift, seed=1) for name in BRIDGES}
assert all(o.shape == q.shape and np.isfinite(o).all() for o in outs.values())
for mode in ("cluster", "exact", "ivf", "auto"):
    idx, sims = mem.retrieve_indices(q, top_l=8, search=mode)
    ent, _ = mem.retrieve(q[0], top_l=8, search=mode)
    assert idx.shape == (6, 8) and ent.shape == (8, mem.dim)
    mem.apply(q, search=mode)
assert mem.entries(idx).shape == (6, 8, mem.dim)
c = mem.nearest_cluster(q)
in_cluster = mem.retrieve_indices(q, top_l=8, search="cluster")[0]
assert all(set(row) <= set(mem.members(int(k))) for row, k in zip(in_cluster, c))
assert mem.cluster_sizes.sum() == mem.num_entries
grown = mem.with_texts(q[:2], ["a new text", "another new text"], recluster=False, gate_margin=0.0)
grown.apply(q)
assert retrieve_texts(grown, q, 4)[0]
print("loaded:", sorted(m for m in ("torch", "transformers") if m in sys.modules))
"""


def test_inference_side_runs_without_torch(repo_root):
    """Every bridge, every search mode and the gate of added texts on the default model's memory, in a
    fresh process: neither torch nor transformers gets imported (issue 22: a tag on ONNX Runtime)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(repo_root / "src")}
    out = subprocess.run([sys.executable, "-c", TORCH_FREE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "loaded: []"


def test_importing_the_bridge_modules_loads_no_torch(repo_root):
    import os
    import subprocess
    import sys

    code = ("import sys, mats.bridge.bridges, mats.bridge.santa, mats.bridge.noise, mats.bridge.retrieval, "
            "mats.bridge.rng; print('torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(repo_root / "src")}
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "False"
    assert not [ln for ln in out.stderr.splitlines() if ln.rsplit("|", 1)[-1].strip().split(".")[0] == "torch"]
