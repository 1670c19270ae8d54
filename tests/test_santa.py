import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mats.bridge.santa import SantaConfig, SantaMemory, kmeans
from mats.clap import l2_normalize

# A tiny bank, D = 3, two obvious groups: A = {m0, m1, m2} (x-y plane), B = {m3, m4}.
BANK = np.array(
    [
        [1.0, 0.0, 0.0],  # m0
        [0.8, 0.6, 0.0],  # m1
        [0.6, 0.8, 0.0],  # m2
        [0.0, 0.0, 1.0],  # m3
        [0.0, 0.6, 0.8],  # m4
    ],
    dtype=np.float32,
)
# centroids by hand: A = ((1+.8+.6)/3, (0+.6+.8)/3, 0) = (0.8, 0.466667, 0); B = (0, 0.3, 0.9)
CENTROIDS = np.array([[0.8, 1.4 / 3, 0.0], [0.0, 0.3, 0.9]], dtype=np.float32)
ASSIGN = np.array([0, 0, 0, 1, 1])


def hand_memory(**cfg):
    base = dict(clusters=2, top_l=2, noise_variance=0.0, tau=10.0, lam=0.3)
    base.update(cfg)
    return SantaMemory(BANK, CENTROIDS, ASSIGN, SantaConfig(**base))


def random_bank(m, d, seed=0):
    x = np.random.default_rng(seed).standard_normal((m, d)).astype(np.float32)
    return np.ascontiguousarray(l2_normalize(x), dtype=np.float32)


# ------------------------------------------------------------------------------------------------
# the paper's math on a hand-computed example
# ------------------------------------------------------------------------------------------------
def test_kmeans_recovers_the_hand_partition():
    mem = SantaMemory.build(BANK, SantaConfig(clusters=2, seed=0))
    a = mem.assignments
    assert a[0] == a[1] == a[2] != a[3] == a[4]
    order = [a[0], a[3]]
    np.testing.assert_allclose(mem.centroids[order], CENTROIDS, atol=1e-6)


def test_santa_hand_computed_query_in_cluster_b():
    # z = (0.6, 0, 0.8).  ||z - A||^2 = 0.04 + 0.217778 + 0.64 = 0.897778 ; ||z - B||^2 = 0.36 + 0.09 + 0.01 = 0.46
    # -> cluster B. Inner products: m3 = 0.8, m4 = 0.64 -> top-2 = (m3, m4).
    # w = softmax(10 * (0.8, 0.64)) = (1, e^-1.6) / (1 + e^-1.6) = (0.832018, 0.167982)
    # sum w m = (0, 0.6 * 0.167982, 0.832018 + 0.8 * 0.167982) = (0, 0.100789, 0.966404)
    # 0.7 z + 0.3 mix = (0.42, 0.030237, 0.849921); norm = sqrt(0.899680) = 0.948515
    # z' = (0.442798, 0.031878, 0.896055)
    mem = hand_memory()
    z = np.array([[0.6, 0.0, 0.8]], dtype=np.float32)
    assert mem.nearest_cluster(z).tolist() == [1]
    idx, sims = mem.retrieve_indices(z)
    assert idx.tolist() == [[3, 4]]
    np.testing.assert_allclose(sims, [[0.8, 0.64]], atol=1e-6)

    # the same, written out independently in numpy
    m = BANK[[3, 4]]
    logits = 10.0 * (m @ z[0])
    w = np.exp(logits - logits.max())
    w /= w.sum()
    np.testing.assert_allclose(w, [0.832018, 0.167982], atol=1e-6)
    mix = (w[:, None] * m).sum(0)
    zp = 0.7 * z[0] + 0.3 * mix
    zp /= np.linalg.norm(zp)

    out = mem.apply(z)
    np.testing.assert_allclose(out[0], zp, atol=1e-6)
    np.testing.assert_allclose(out[0], [0.442798, 0.031878, 0.896055], atol=5e-6)


def test_santa_hand_computed_query_in_cluster_a():
    # z = (1, 0, 0) -> cluster A (0.257778 vs 1.9); sims m0 = 1, m1 = 0.8, m2 = 0.6 -> (m0, m1)
    # w = (1, e^-2) / (1 + e^-2) = (0.880797, 0.119203); mix = (0.976159, 0.071522, 0)
    # 0.7 z + 0.3 mix = (0.992848, 0.021457, 0); z' = (0.999767, 0.021606, 0)
    mem = hand_memory()
    out = mem.apply(np.array([[1.0, 0.0, 0.0]], dtype=np.float32))
    np.testing.assert_allclose(out[0], [0.999767, 0.021606, 0.0], atol=5e-6)


def test_padding_by_repetition_when_cluster_is_smaller_than_l():
    # L = 3, cluster B holds 2 entries -> (m3, m4, m3); sims (0.8, 0.64, 0.8)
    # w = (1, e^-1.6, 1) / (2 + e^-1.6) = (0.454153, 0.091694, 0.454153)
    # mix = (0, 0.055016, 0.981661); 0.7 z + 0.3 mix = (0.42, 0.016505, 0.854498)
    # z' = (0.441046, 0.017332, 0.897317)
    mem = hand_memory(top_l=3)
    z = np.array([[0.6, 0.0, 0.8]], dtype=np.float32)
    idx, sims = mem.retrieve_indices(z)
    assert idx.tolist() == [[3, 4, 3]]
    np.testing.assert_allclose(sims, [[0.8, 0.64, 0.8]], atol=1e-6)
    entries, _ = mem.retrieve(z)
    np.testing.assert_array_equal(entries[0], BANK[[3, 4, 3]])
    np.testing.assert_allclose(mem.apply(z)[0], [0.441046, 0.017332, 0.897317], atol=5e-6)
    # L far above the cluster size: the ranked list is tiled
    idx7, _ = mem.retrieve_indices(z, top_l=7)
    assert idx7.tolist() == [[3, 4, 3, 4, 3, 4, 3]]


def test_cluster_vs_exact_on_hand_bank():
    # z = (0.6, 0.48, 0.64): nearest centre is A (0.449778 vs 0.46), where the top-2 are m1 (0.768), m2 (0.744);
    # over the whole bank the top-2 are m4 (0.8) and m1 (0.768).
    mem = hand_memory()
    z = np.array([[0.6, 0.48, 0.64]], dtype=np.float32)
    assert mem.retrieve_indices(z, search="cluster")[0].tolist() == [[1, 2]]
    assert mem.retrieve_indices(z, search="exact")[0].tolist() == [[4, 1]]
    np.testing.assert_allclose(mem.retrieve_indices(z, search="exact")[1], [[0.8, 0.768]], atol=1e-6)


def test_lambda_and_tau_overrides():
    mem = hand_memory()
    z = np.array([[0.6, 0.0, 0.8]], dtype=np.float32)
    np.testing.assert_allclose(mem.apply(z, lam=0.0), z, atol=1e-7)
    # lam = 1, tau = 0: plain mean of (m3, m4), normalised
    mean = (BANK[3] + BANK[4]) / 2
    np.testing.assert_allclose(mem.apply(z, lam=1.0, tau=0.0)[0], mean / np.linalg.norm(mean), atol=1e-6)


# ------------------------------------------------------------------------------------------------
# noise inside Santa, determinism, types
# ------------------------------------------------------------------------------------------------
def test_apply_noise_is_fresh_and_seeded():
    bank = random_bank(500, 16)
    mem = SantaMemory.build(bank, SantaConfig(clusters=8, top_l=8))
    z = random_bank(20, 16, seed=1)
    a = mem.apply(z, generator=torch.Generator().manual_seed(0))
    b = mem.apply(z, generator=torch.Generator().manual_seed(0))
    c = mem.apply(z, generator=torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    clean = mem.apply(z, noise_variance=0.0)
    assert not np.allclose(a, clean)
    # noise variance 0 is deterministic without a generator
    np.testing.assert_array_equal(clean, mem.apply(z, noise_variance=0.0))


def test_apply_matches_manual_noisy_computation():
    from mats.bridge.noise import add_noise

    bank = random_bank(300, 8)
    mem = SantaMemory.build(bank, SantaConfig(clusters=4, top_l=5))
    z = random_bank(6, 8, seed=2)
    out = mem.apply(z, generator=torch.Generator().manual_seed(9))
    idx, _ = mem.retrieve_indices(z)
    ent = torch.from_numpy(bank[idx].reshape(-1, 8))
    noisy = add_noise(ent, 0.015, generator=torch.Generator().manual_seed(9)).reshape(6, 5, 8).numpy()
    for i in range(6):
        lg = 10.0 * noisy[i] @ z[i]
        w = np.exp(lg - lg.max())
        w /= w.sum()
        v = 0.7 * z[i] + 0.3 * (w[:, None] * noisy[i]).sum(0)
        np.testing.assert_allclose(out[i], v / np.linalg.norm(v), atol=1e-5)


def test_torch_in_torch_out_and_single_vector():
    mem = hand_memory()
    zt = torch.tensor([[0.6, 0.0, 0.8]], dtype=torch.float64)
    out = mem.apply(zt)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64 and out.shape == (1, 3)
    np.testing.assert_allclose(out.numpy()[0], [0.442798, 0.031878, 0.896055], atol=5e-6)
    one = mem.apply(np.array([0.6, 0.0, 0.8], dtype=np.float32))
    assert one.shape == (3,)
    ent, sims = mem.retrieve(zt)
    assert isinstance(ent, torch.Tensor) and ent.shape == (1, 2, 3) and sims.shape == (1, 2)
    with pytest.raises(ValueError):
        mem.apply(np.zeros((2, 4), dtype=np.float32))


def test_kmeans_deterministic_and_seed_dependent():
    bank = random_bank(2000, 24)
    c1, a1 = kmeans(bank, 16, 10, seed=3)
    c2, a2 = kmeans(bank, 16, 10, seed=3)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(a1, a2)
    c3, _ = kmeans(bank, 16, 10, seed=4)
    assert not np.array_equal(c1, c3)
    # every cluster non-empty, every row assigned to its nearest centre
    assert len(np.unique(a1)) == c1.shape[0]
    d = ((bank[:, None, :] - c1[None]) ** 2).sum(-1)
    assert (d[np.arange(len(bank)), a1] <= d.min(1) + 1e-5).all()
    for init in ("random", "k-means++"):
        ca, aa = kmeans(bank, 16, 10, seed=3, init=init)
        cb, ab = kmeans(bank, 16, 10, seed=3, init=init)
        np.testing.assert_array_equal(ca, cb)


def test_kmeans_more_clusters_than_rows_and_duplicates():
    with pytest.warns(UserWarning):
        mem = SantaMemory.build(BANK, SantaConfig(clusters=100))
    assert mem.num_clusters == 5
    assert sorted(mem.cluster_sizes.tolist()) == [1] * 5
    # duplicated rows: fewer distinct points than clusters -> empty clusters are dropped
    dup = np.repeat(BANK, 4, axis=0)
    mem = SantaMemory.build(dup, SantaConfig(clusters=10, top_l=3))
    assert mem.num_clusters == 5 and (mem.cluster_sizes > 0).all()
    idx, _ = mem.retrieve_indices(dup[:1])
    assert (dup[idx[0]] == dup[0]).all()


# ------------------------------------------------------------------------------------------------
# search modes agree where they should
# ------------------------------------------------------------------------------------------------
def test_single_cluster_equals_exact():
    bank = random_bank(1000, 32)
    mem = SantaMemory.build(bank, SantaConfig(clusters=1, top_l=16))
    z = random_bank(50, 32, seed=5)
    ic, sc = mem.retrieve_indices(z, search="cluster")
    ie, se = mem.retrieve_indices(z, search="exact")
    np.testing.assert_array_equal(ic, ie)
    np.testing.assert_allclose(sc, se, atol=1e-6)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    np.testing.assert_allclose(mem.apply(z, g(), search="cluster"), mem.apply(z, g(), search="exact"), atol=1e-6)


def test_ivf_reproduces_cluster_and_exact():
    bank = random_bank(3000, 32)
    mem = SantaMemory.build(bank, SantaConfig(clusters=12, top_l=10))
    z = random_bank(80, 32, seed=6)
    mem.config.ivf_nprobe = 1  # probing only the nearest list = the paper's cluster mode
    ii, si = mem.retrieve_indices(z, search="ivf")
    ic, sc = mem.retrieve_indices(z, search="cluster")
    np.testing.assert_array_equal(ii, ic)
    np.testing.assert_allclose(si, sc, atol=1e-5)
    mem.config.ivf_nprobe = mem.num_clusters  # probing all lists = exact search
    ii, si = mem.retrieve_indices(z, search="ivf")
    ie, se = mem.retrieve_indices(z, search="exact")
    np.testing.assert_array_equal(ii, ie)
    np.testing.assert_allclose(si, se, atol=1e-5)
    # exact top-1 is the true argmax
    np.testing.assert_array_equal(ie[:, 0], (z @ bank.T).argmax(1))


def test_ivf_pads_small_lists_like_cluster_mode():
    mem = hand_memory(top_l=3, search="ivf", ivf_nprobe=1)
    z = np.array([[0.6, 0.0, 0.8], [1.0, 0.0, 0.0]], dtype=np.float32)
    assert mem.retrieve_indices(z)[0].tolist() == [[3, 4, 3], [0, 1, 2]]


# ------------------------------------------------------------------------------------------------
# persistence
# ------------------------------------------------------------------------------------------------
def test_save_load_round_trip_is_bitwise(tmp_path):
    bank = random_bank(400, 16)
    cfg = SantaConfig(clusters=7, top_l=4, lam=0.4, tau=12.0, search="exact", seed=11)
    mem = SantaMemory.build(bank, cfg)
    mem.save(tmp_path / "mem")
    assert sorted(p.name for p in (tmp_path / "mem").iterdir()) == ["santa.json", "santa.safetensors"]
    meta = json.loads((tmp_path / "mem" / "santa.json").read_text())
    assert meta["config"]["lam"] == 0.4 and meta["num_clusters"] == mem.num_clusters
    back = SantaMemory.load(tmp_path / "mem")
    assert back.config == mem.config
    for name in ("bank", "centroids", "assignments"):
        a, b = getattr(mem, name), getattr(back, name)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    z = random_bank(10, 16, seed=1)
    for mode in ("cluster", "exact", "ivf"):
        x = mem.apply(z, torch.Generator().manual_seed(2), search=mode)
        y = back.apply(z, torch.Generator().manual_seed(2), search=mode)
        assert x.tobytes() == y.tobytes()
    over = SantaMemory.load(tmp_path / "mem", search="ivf", ivf_nprobe=3)
    assert over.config.search == "ivf" and over.config.ivf_nprobe == 3
    with pytest.raises(TypeError):
        SantaMemory.load(tmp_path / "mem", not_a_field=1)
    with pytest.raises(FileNotFoundError):
        SantaMemory.load(tmp_path / "missing")


def test_config_validation():
    with pytest.raises(ValueError):
        SantaConfig(search="hnsw")
    with pytest.raises(ValueError):
        SantaConfig(lam=1.5)
    with pytest.raises(ValueError):
        SantaConfig(top_l=0)
    c = SantaConfig()
    assert (c.clusters, c.kmeans_iters, c.top_l, c.noise_variance, c.tau, c.lam, c.search) == (
        100, 10, 32, 0.015, 10.0, 0.3, "cluster")


# ------------------------------------------------------------------------------------------------
# a large bank stays usable with ivf
# ------------------------------------------------------------------------------------------------
def test_ivf_large_bank_sanity():
    m, d = 200_000, 384
    bank = random_bank(m, d, seed=123)
    t0 = time.perf_counter()
    # k-means fitted on 256 rows per centre (faiss's default cap); every row is still assigned
    mem = SantaMemory.build(bank, SantaConfig(search="ivf", ivf_nprobe=4, kmeans_max_points=25_600))
    assert mem.num_clusters == 100 and mem.cluster_sizes.sum() == m
    rows = np.random.default_rng(0).choice(m, 256, replace=False)
    idx, sims = mem.retrieve_indices(bank[rows])
    out = mem.apply(bank[rows], generator=torch.Generator().manual_seed(0))
    elapsed = time.perf_counter() - t0
    np.testing.assert_array_equal(idx[:, 0], rows)  # a bank row is its own nearest neighbour
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-5)
    assert idx.shape == (256, 32)
    assert np.isfinite(out).all() and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert elapsed < 300, f"ivf build + search took {elapsed:.1f} s"


# -- "auto": exact for small banks, faiss IVF (the bank held once, in the index) above ------------------
def _unit_bank(m: int, d: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_auto_uses_exact_search_for_small_banks():
    mem = SantaMemory.build(_unit_bank(500), SantaConfig(clusters=8, top_l=8, search="auto"))
    z = _unit_bank(20, seed=1)
    ia, sa = mem.retrieve_indices(z)
    ie, se = mem.retrieve_indices(z, search="exact")
    assert np.array_equal(ia, ie) and np.array_equal(sa, se)
    assert mem._auto is None and mem._bank is not None


def test_auto_faiss_index_agrees_with_exact_search():
    bank = _unit_bank(3000)
    cfg = SantaConfig(clusters=8, top_l=16, search="auto", exact_max_rows=1000, auto_lists=40, auto_nprobe=40)
    mem = SantaMemory.build(bank, cfg)
    z = _unit_bank(50, seed=2)
    before = mem.bank.copy()
    exact_idx, exact_sims = mem.retrieve_indices(z, search="exact")
    idx, sims = mem.retrieve_indices(z)  # builds the index: every list probed = exact search
    assert mem._bank is None  # the rows now live only in the index
    assert np.array_equal(idx, exact_idx)
    np.testing.assert_allclose(sims, exact_sims, atol=1e-5)
    assert np.array_equal(mem.bank, before)  # read back from the index, bit for bit
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    np.testing.assert_array_equal(mem.apply(z, g()), mem.apply(z, g(), search="exact"))
    # probing fewer lists trades a little recall for time
    mem.config.auto_nprobe = 10
    idx, _ = mem.retrieve_indices(z)
    recall = np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(idx, exact_idx, strict=True)])
    assert 0.5 <= recall < 1.0  # random 32-d data is the hard case; real banks: santa_scale.py


def test_faiss_kmeans_for_large_banks(monkeypatch):
    import mats.bridge.santa as santa

    monkeypatch.setattr(santa, "FAISS_KMEANS_MIN_ROWS", 1000)
    x = _unit_bank(2000)
    c, a = santa.kmeans(x, 10, iters=5, seed=0)
    c2, a2 = santa.kmeans(x, 10, iters=5, seed=0)
    assert np.array_equal(c, c2) and np.array_equal(a, a2)  # seeded
    assert c.shape[0] <= 10 and np.bincount(a).min() > 0
    d = ((x[:, None, :] - c[None]) ** 2).sum(-1)
    assert np.array_equal(a, d.argmin(1))


# ------------------------------------------------------------------------------------------------
# the shipped default memory: the numpy search and step give what the torch implementation gave
# ------------------------------------------------------------------------------------------------
# tests/data/santa_default_torch.npz was recorded with the torch implementation (commit 11a6937, before
# the search and the Santa step moved to numpy) on the queries below: bank indices of every search
# (exact equality: same rows, same order) and 16 rows of apply_bridge(q, "santa", seed=0).
TORCH_RECORD = Path(__file__).parent / "data" / "santa_default_torch.npz"


def _default_memory_and_queries():
    from mats.config import DEFAULT_MODEL

    mem = SantaMemory.load(DEFAULT_MODEL / "santa")
    rng = np.random.default_rng(0)
    bank = mem.bank
    near = bank[rng.choice(len(bank), 48, replace=False)] + rng.normal(0, 0.06, (48, 384)).astype(np.float32)
    q = np.concatenate([near, rng.normal(size=(16, 384)).astype(np.float32)]).astype(np.float32)
    added = (bank[rng.choice(len(bank), 40, replace=False)] + rng.normal(0, 0.05, (40, 384))).astype(np.float32)
    gated = mem.with_texts(added, [f"added {i}" for i in range(40)], recluster=False, gate_margin=0.0)
    return mem, gated, q


def test_default_memory_search_and_step_match_the_torch_implementation():
    from mats.bridge import apply_bridge

    want = np.load(TORCH_RECORD)
    mem, gated, q = _default_memory_and_queries()
    assert gated.gated and len(set(want["idx_gated_cluster"].ravel()) - set(range(mem.num_entries))) > 0
    for mode in ("cluster", "exact", "ivf"):
        np.testing.assert_array_equal(mem.retrieve_indices(q, top_l=32, search=mode)[0], want[f"idx_{mode}"],
                                      err_msg=mode)
    np.testing.assert_array_equal(gated.retrieve_indices(q, top_l=32, search="cluster")[0], want["idx_gated_cluster"])
    out = apply_bridge(q, "santa", memory=mem, seed=0)
    # measured 3.0e-8: float32 rounding of the same products, and of the noise (rng.py)
    assert np.abs(out[want["rows"]] - want["santa_seed0_rows"]).max() <= 1e-6


def test_torch_generator_and_its_numpy_twin_give_the_same_santa_step():
    from mats.bridge.rng import TorchCompatibleGenerator

    mem, _, q = _default_memory_and_queries()
    a = mem.apply(q, generator=torch.Generator().manual_seed(3))
    b = mem.apply(q, generator=TorchCompatibleGenerator(3))
    assert np.abs(a - b).max() <= 1e-6 and not np.allclose(a, mem.apply(q, generator=TorchCompatibleGenerator(4)))
