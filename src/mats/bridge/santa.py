"""Santa: pull an audio embedding towards strongly related (noisy) training-text embeddings.

Method (MATS, ICML 2025; the numbers are the paper's defaults, all in :class:`SantaConfig`):

1. Memory bank: ``M`` training texts, CLAP-text encoded, L2-normalised, clustered with k-means
   (``K = 100`` clusters, 10 Lloyd iterations, Euclidean distance).
2. For an audio embedding ``z``: the nearest cluster centre (Euclidean), then the ``L = 32`` bank
   entries of that cluster with the largest inner product with ``z``. If the cluster holds fewer than
   ``L`` entries the ranked list is repeated cyclically (``[a, b, c, a, b, ...]``) up to ``L``.
3. Fresh noise (variance 0.015, see :mod:`mats.bridge.noise`: added to the unit entries, then
   re-normalised) on each of the ``L`` retrieved entries, independently per query and per slot.
4. ``w = softmax(tau * <z, m_i>)`` over the ``L`` noisy entries ``m_i`` (``tau = 10`` multiplies the
   logits); ``z' = normalise((1 - lam) * z + lam * sum_i w_i m_i)`` with ``lam = 0.3``.

Search modes (``SantaConfig.search``):

* ``"cluster"`` — the paper: the nearest centroid's cluster only (exactly as above);
* ``"exact"`` — the top ``L`` over the whole bank (brute force, chunked);
* ``"ivf"`` — a faiss ``IndexIVFFlat`` (inner product) whose coarse quantiser holds the same k-means
  centroids (Euclidean assignment, identical cluster lists); it probes ``ivf_nprobe`` clusters, so
  ``ivf_nprobe = 1`` reproduces ``"cluster"`` and ``ivf_nprobe = K`` reproduces ``"exact"``. Use it
  for banks of millions of rows.
* ``"auto"`` — exact search while the bank has at most ``exact_max_rows`` rows; above that a faiss
  ``IndexIVFFlat`` with its own ``~2 sqrt(M)`` lists (trained with ``faiss.Kmeans``), probing
  ``auto_nprobe`` of them. The vectors then live only in the index (the retrieved entries are read
  back from it), so a bank of a million rows is held once, not twice. ``benchmarks/santa_scale.py``
  measures time, memory and recall against exact search.

Banks above ``FAISS_KMEANS_MIN_ROWS`` rows are clustered with ``faiss.Kmeans`` (same contract:
seeded, nearest-centre assignments, no empty clusters); smaller ones, the shipped default's among
them, with the torch implementation below, whose results they were built with. k-means is training
time: it imports torch when called. Everything a loaded memory does (search, the Santa step,
``with_texts(recluster=False)``) runs in numpy, so inference never imports torch.

The memory is saved as ``santa.safetensors`` (bank, centroids, assignments) + ``santa.json`` (config);
nothing is ever pickled.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .blas import one_blas_thread
from .config import NOISE_KINDS, PAPER_NOISE_VARIANCE, PAPER_SANTA, SEARCH_MODES
from .noise import add_noise, l2_normalize

if TYPE_CHECKING:
    import torch

__all__ = ["SEARCH_MODES", "KMEANS_INITS", "SantaConfig", "SantaMemory", "kmeans"]

KMEANS_INITS = ("k-means++", "random")
_FORMAT = "mats-santa"
_FORMAT_VERSION = 1
_WEIGHTS_FILE = "santa.safetensors"
_CONFIG_FILE = "santa.json"
_TEXTS_FILE = "texts.txt"  # one training text per bank row, newlines inside a text flattened to spaces
_CHUNK_ELEMS = 1 << 24  # ~64 MB of float32 per similarity block
_PP_CANDIDATES_PER_CLUSTER = 64  # k-means++ seeding considers at most 64 * K rows
# above this many rows the clusters are built with faiss.Kmeans, which is several times faster than
# the torch Lloyd iterations on large banks (docs/speed.md, "Santa at a million texts")
FAISS_KMEANS_MIN_ROWS = 200_000


@dataclass
class SantaConfig:
    clusters: int = 100  # K of k-means (clamped to the number of bank rows)
    kmeans_iters: int = 10  # Lloyd iterations (Euclidean)
    top_l: int = PAPER_SANTA["top_l"]  # L entries retrieved per query
    # fresh noise on the retrieved entries (0 disables); the model's training noise
    noise_variance: float = PAPER_NOISE_VARIANCE
    noise_kind: str = "gaussian"  # or "uniform" (same variance)
    tau: float = PAPER_SANTA["tau"]  # multiplies the logits <z, m_i>
    lam: float = PAPER_SANTA["lam"]  # weight of the retrieved mixture
    search: str = PAPER_SANTA["search"]  # "cluster" (paper) | "exact" | "ivf"
    seed: int = 0  # k-means initialisation (and subsampling)
    ivf_nprobe: int = 8  # clusters probed in "ivf" mode
    kmeans_max_points: int | None = None  # fit k-means on a seeded subsample of this many rows (None: all)
    kmeans_init: str = "k-means++"  # or "random" (distinct rows); both seeded by `seed`
    exact_max_rows: int = 100_000  # "auto": exact search up to this many rows, faiss IVF above
    auto_nprobe: int = 16  # "auto": lists probed per query; recall@32 0.98 at 100 k, 0.9997 at 1 M (santa_scale.py)
    auto_lists: int | None = None  # "auto": IVF lists (None: 2 * sqrt(M))
    # The gate of added texts (``mats adapt``): the rows from ``gate_from`` on were added to a trained
    # memory. A query sees them only when its best inner product with them beats the best base row of
    # the same search by ``gate_margin``; every other query is answered by the base rows alone, exactly
    # as before they were added (so a domain's words reach the clips near them and no others).
    # None: no gate, every row is searched alike.
    gate_from: int | None = None
    gate_margin: float = 0.0

    def __post_init__(self) -> None:
        if self.search not in SEARCH_MODES:
            raise ValueError(f"unknown Santa search mode {self.search!r}; choose one of {SEARCH_MODES}")
        if self.noise_kind not in NOISE_KINDS:
            raise ValueError(f"unknown noise kind {self.noise_kind!r}; choose one of {NOISE_KINDS}")
        if self.kmeans_init not in KMEANS_INITS:
            raise ValueError(f"unknown k-means init {self.kmeans_init!r}; choose one of {KMEANS_INITS}")
        if int(self.clusters) < 1:
            raise ValueError(f"clusters must be >= 1, got {self.clusters}")
        if int(self.kmeans_iters) < 0:
            raise ValueError(f"kmeans_iters must be >= 0, got {self.kmeans_iters}")
        if int(self.top_l) < 1:
            raise ValueError(f"top_l must be >= 1, got {self.top_l}")
        if int(self.auto_nprobe) < 1 or int(self.exact_max_rows) < 1:
            raise ValueError("auto_nprobe and exact_max_rows must be >= 1")
        if int(self.ivf_nprobe) < 1:
            raise ValueError(f"ivf_nprobe must be >= 1, got {self.ivf_nprobe}")
        if not (0.0 <= float(self.lam) <= 1.0):
            raise ValueError(f"lam must lie in [0, 1], got {self.lam}")
        if not math.isfinite(float(self.tau)):
            raise ValueError(f"tau must be finite, got {self.tau}")
        if not (float(self.noise_variance) >= 0.0):
            raise ValueError(f"noise_variance must be >= 0, got {self.noise_variance}")
        if self.kmeans_max_points is not None and int(self.kmeans_max_points) < 1:
            raise ValueError(f"kmeans_max_points must be >= 1 or None, got {self.kmeans_max_points}")
        if self.gate_from is not None and int(self.gate_from) < 1:
            raise ValueError(f"gate_from must be >= 1 or None, got {self.gate_from}")
        if not math.isfinite(float(self.gate_margin)):
            raise ValueError(f"gate_margin must be finite, got {self.gate_margin}")


# --------------------------------------------------------------------------------------------------
# k-means
# --------------------------------------------------------------------------------------------------
def _nearest_centroid_t(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """k-means' nearest centre (torch, as the shipped memories were built): argmin_k ||x - c_k||^2 for each
    row of ``x`` (float32, chunked); ties go to the lower index."""
    import torch

    cn = (c * c).sum(1)
    out = torch.empty(x.shape[0], dtype=torch.long)
    step = max(1, _CHUNK_ELEMS // max(1, c.shape[0]))
    for s in range(0, x.shape[0], step):
        d = cn[None, :] - 2.0 * (x[s : s + step] @ c.T)  # ||x||^2 is constant per row
        out[s : s + step] = d.argmin(1)
    return out


def _kmeans_pp(x: torch.Tensor, k: int, rng: np.random.Generator) -> torch.Tensor:
    """k-means++ seeding: first centre uniform, each next one drawn with probability ~ D^2.

    Each step reads all candidate rows once, so on large inputs the candidates are a seeded subsample
    of ``_PP_CANDIDATES_PER_CLUSTER * k`` rows (the Lloyd iterations still use every row)."""
    import torch

    if x.shape[0] > _PP_CANDIDATES_PER_CLUSTER * k:
        sub = np.sort(rng.choice(x.shape[0], _PP_CANDIDATES_PER_CLUSTER * k, replace=False))
        x = x[torch.from_numpy(sub)]
    n = x.shape[0]
    chosen = [int(rng.integers(n))]
    xn = (x * x).sum(1)
    d2 = (xn - 2.0 * (x @ x[chosen[0]]) + xn[chosen[0]]).clamp_min(0).double()
    for _ in range(1, k):
        p = d2.numpy().copy()
        p[chosen] = 0.0
        total = p.sum()
        if total > 0:
            nxt = int(rng.choice(n, p=p / total))
        else:  # fewer distinct rows than k: take any unused row (its cluster will end up empty)
            nxt = int(rng.choice(np.setdiff1d(np.arange(n), chosen)))
        chosen.append(nxt)
        d2 = torch.minimum(d2, (xn - 2.0 * (x @ x[nxt]) + xn[nxt]).clamp_min(0).double())
    return x[torch.tensor(chosen)].clone()


def kmeans(
    x: np.ndarray,
    k: int,
    iters: int = 10,
    seed: int = 0,
    max_points: int | None = None,
    init: str = "k-means++",
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic Lloyd's k-means (Euclidean).

    Initialisation from ``numpy.random.default_rng(seed)``: ``"k-means++"`` (D^2 sampling, the usual
    library default) or ``"random"`` (``k`` distinct rows). If ``max_points`` is set and smaller than
    ``len(x)``, centres are fitted on a seeded subsample of that many rows. Each iteration
    assigns every row to its nearest centre, then moves each centre to the mean of its rows (sums in
    float64; a centre that lost all rows stays where it is). ``k > len(x)`` is clamped (with a
    warning). After the last update every row of ``x`` is assigned to its nearest final centre and
    centres without rows are dropped, so every returned cluster is non-empty and every assignment is
    the nearest returned centre.

    Returns ``(centroids [K', D] float32, assignments [M] int64)`` with ``K' <= k``.

    Training time only: this imports torch (search and the Santa step do not).
    """
    import torch

    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"k-means needs a non-empty [M, D] array, got shape {x.shape}")
    m = x.shape[0]
    if m >= FAISS_KMEANS_MIN_ROWS and k <= m:
        return _faiss_kmeans(x, k, iters, seed, max_points)
    rng = np.random.default_rng(seed)
    train = x
    if max_points is not None and m > max_points:
        train = x[np.sort(rng.choice(m, int(max_points), replace=False))]
    n = train.shape[0]
    if k > n:
        warnings.warn(f"k-means: {k} clusters requested for {n} rows; using {n}", stacklevel=2)
        k = n
    xt = torch.from_numpy(train)
    if init == "random":
        c = xt[torch.from_numpy(rng.choice(n, k, replace=False))].clone()
    elif init == "k-means++":
        c = _kmeans_pp(xt, k, rng)
    else:
        raise ValueError(f"unknown k-means init {init!r}; choose one of {KMEANS_INITS}")
    for _ in range(int(iters)):
        a = _nearest_centroid_t(xt, c)
        sums = torch.zeros(k, xt.shape[1], dtype=torch.float64)
        step = max(1, _CHUNK_ELEMS // max(1, xt.shape[1]))
        for s in range(0, n, step):  # index_add_ on CPU adds rows in order: deterministic
            sums.index_add_(0, a[s : s + step], xt[s : s + step].double())
        counts = torch.bincount(a, minlength=k)
        nonempty = counts > 0
        c = c.clone()
        c[nonempty] = (sums[nonempty] / counts[nonempty, None].double()).float()
    xa = torch.from_numpy(x)
    a = _nearest_centroid_t(xa, c)
    counts = torch.bincount(a, minlength=c.shape[0])
    keep = torch.nonzero(counts > 0).flatten()
    relabel = torch.full((c.shape[0],), -1, dtype=torch.long)
    relabel[keep] = torch.arange(keep.numel())
    return c[keep].contiguous().numpy(), relabel[a].numpy().astype(np.int64)


def _faiss_kmeans(x: np.ndarray, k: int, iters: int, seed: int, max_points: int | None):
    """faiss.Kmeans (k-means++-free random init, seeded) with the same contract as ``kmeans``."""
    import faiss
    import torch

    from ..threads import num_threads

    faiss.omp_set_num_threads(num_threads())
    per_centroid = max(1, -(-int(max_points) // k)) if max_points else max(1, -(-x.shape[0] // k))
    km = faiss.Kmeans(x.shape[1], k, niter=max(1, int(iters)), seed=int(seed) & 0x7FFFFFFF,
                      max_points_per_centroid=per_centroid, min_points_per_centroid=1)
    km.train(x)
    c = torch.from_numpy(np.ascontiguousarray(km.centroids, dtype=np.float32))
    a = _nearest_centroid_t(torch.from_numpy(x), c)
    counts = torch.bincount(a, minlength=c.shape[0])
    keep = torch.nonzero(counts > 0).flatten()
    relabel = torch.full((c.shape[0],), -1, dtype=torch.long)
    relabel[keep] = torch.arange(keep.numel())
    return c[keep].contiguous().numpy(), relabel[a].numpy().astype(np.int64)


# --------------------------------------------------------------------------------------------------
# search helpers (numpy: inference never needs torch)
# --------------------------------------------------------------------------------------------------
def _nearest_centroid(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """argmin_k ||x - c_k||^2 for each row of ``x`` (float32, chunked); ties go to the lower index."""
    cn = np.einsum("kd,kd->k", c, c)
    out = np.empty(x.shape[0], dtype=np.int64)
    step = max(1, _CHUNK_ELEMS // max(1, c.shape[0]))
    for s in range(0, x.shape[0], step):
        d = cn[None, :] - 2.0 * (x[s : s + step] @ c.T)  # ||x||^2 is constant per row
        out[s : s + step] = d.argmin(1)
    return out


def _top_k(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest of each row, best first (ties: lower column first): (columns, values)."""
    m = sims.shape[1]
    cand = np.argpartition(sims, m - k, axis=1)[:, m - k:] if k < m else np.broadcast_to(np.arange(m), sims.shape)
    vals = np.take_along_axis(sims, cand, 1)
    order = np.lexsort((cand, -vals), axis=1)  # last key first: value descending, then column
    cols = np.take_along_axis(cand, order, 1)
    return cols.astype(np.int64), np.take_along_axis(vals, order, 1)


def _pad_cyclic(idx: np.ndarray, sims: np.ndarray, n_valid: np.ndarray, length: int):
    """Repeat the first ``n_valid[i]`` ranked entries of each row cyclically up to ``length``."""
    rep = np.arange(length)[None, :] % np.maximum(n_valid, 1)[:, None]
    return np.take_along_axis(idx, rep, 1), np.take_along_axis(sims, rep, 1)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _to_query(z):
    """-> (float32 numpy [N, D], function restoring the caller's type/shape/dtype/device).

    torch tensors are accepted (and given back) without this module importing torch: a tensor can only
    exist once its caller has loaded torch."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(z, torch.Tensor):
        t = z.detach()
        squeeze = t.ndim == 1
        dev, dt = z.device, z.dtype
        arr = t.to(device="cpu", dtype=torch.float32).numpy()

        def back(y: np.ndarray):
            y = torch.from_numpy(np.ascontiguousarray(y[0] if squeeze else y))
            return y.to(device=dev, dtype=dt if (dt.is_floating_point and y.dtype.is_floating_point) else y.dtype)

        return np.ascontiguousarray(arr[None] if squeeze else arr), back
    arr = np.asarray(z)
    squeeze = arr.ndim == 1
    dt = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.dtype(np.float32)

    def back_np(y: np.ndarray) -> np.ndarray:
        y = y[0] if squeeze else y
        return y.astype(dt, copy=False) if np.issubdtype(y.dtype, np.floating) else y

    return np.ascontiguousarray(arr[None] if squeeze else arr, dtype=np.float32), back_np


# --------------------------------------------------------------------------------------------------
# the memory
# --------------------------------------------------------------------------------------------------
class SantaMemory:
    """A clustered bank of L2-normalised text embeddings and Santa retrieval/mixing over it."""

    def __init__(self, bank: np.ndarray, centroids: np.ndarray, assignments: np.ndarray,
                 config: SantaConfig | None = None, texts: list[str] | None = None):
        self.config = config if config is not None else SantaConfig()
        # The training texts behind the bank rows (optional): what retrieval shows and reads.
        if texts is not None and len(texts) != len(bank):
            raise ValueError(f"{len(texts)} texts for a bank of {len(bank)} rows")
        self.texts = list(texts) if texts is not None else None
        bank = np.ascontiguousarray(bank, dtype=np.float32)
        centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        assignments = np.ascontiguousarray(assignments, dtype=np.int64)
        if bank.ndim != 2 or bank.shape[0] == 0:
            raise ValueError(f"bank must be a non-empty [M, D] array, got shape {bank.shape}")
        if centroids.ndim != 2 or centroids.shape[1] != bank.shape[1] or centroids.shape[0] == 0:
            raise ValueError(f"centroids must be [K, {bank.shape[1]}], got shape {centroids.shape}")
        if assignments.shape != (bank.shape[0],):
            raise ValueError(f"assignments must be [{bank.shape[0]}], got shape {assignments.shape}")
        k = centroids.shape[0]
        if assignments.min() < 0 or assignments.max() >= k:
            raise ValueError(f"assignments must lie in [0, {k})")
        if self.config.gate_from is not None and int(self.config.gate_from) > bank.shape[0]:
            raise ValueError(f"gate_from {self.config.gate_from} lies beyond the bank's {bank.shape[0]} rows")
        self._bank, self.centroids, self.assignments = bank, centroids, assignments
        self._shape = bank.shape
        self._auto = None  # once set, the "auto" faiss index holds the rows and self._bank is None
        self._order = np.argsort(assignments, kind="stable")  # bank rows grouped by cluster, in bank order
        self._offsets = np.concatenate([[0], np.cumsum(np.bincount(assignments, minlength=k))]).astype(np.int64)
        self._ivf = None
        self._base = None  # the gate's view of the base rows (built on first use)

    @property
    def bank(self) -> np.ndarray:
        """[M, D] unit rows. Once the "auto" faiss index holds them this builds a full copy."""
        if self._bank is None:
            return self._auto[0].reconstruct_n(0, self.num_entries)
        return self._bank

    def entries(self, idx) -> np.ndarray:
        """Bank rows ``[*idx.shape, D]`` (clean unit vectors) for row indices of any shape."""
        idx = np.asarray(idx, np.int64)
        if self._bank is not None:
            return self._bank[idx]
        flat = np.ascontiguousarray(idx.reshape(-1))
        return self._auto[0].reconstruct_batch(flat).reshape(*idx.shape, self.dim)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def build(cls, bank: np.ndarray, config: SantaConfig | None = None, normalize: bool = True,
              texts: list[str] | None = None) -> "SantaMemory":
        """Cluster ``bank`` ([M, D] text embeddings) with seeded k-means and return the memory.

        ``normalize`` L2-normalises the rows first (the bank must be unit rows for the method);
        ``texts`` are the training texts behind the rows (kept for retrieval and display).
        """
        config = config if config is not None else SantaConfig()
        bank = np.ascontiguousarray(bank, dtype=np.float32)
        if bank.ndim != 2 or bank.shape[0] == 0:
            raise ValueError(f"bank must be a non-empty [M, D] array, got shape {bank.shape}")
        if not np.isfinite(bank).all():
            raise ValueError("bank contains NaN or infinite values")
        if normalize:
            bank = np.ascontiguousarray(l2_normalize(bank), dtype=np.float32)
        centroids, assignments = kmeans(bank, int(config.clusters), int(config.kmeans_iters), int(config.seed),
                                        config.kmeans_max_points, config.kmeans_init)
        return cls(bank, centroids, assignments, config, texts)

    def with_texts(self, embeddings: np.ndarray, texts: list[str], recluster: bool = True,
                   gate_margin: float | None = None) -> "SantaMemory":
        """A new memory: this bank plus ``embeddings`` (rows for ``texts``, L2-normalised here), same
        config. Rows whose text the bank already holds are skipped. ``recluster`` re-runs the seeded
        k-means over the union (with the config's ``clusters``), so the new rows get clusters of their
        own where they are far from the old ones, instead of being appended to the nearest old
        cluster (``recluster=False``). ``gate_margin`` (None: no gate) puts the new rows behind the
        gate (``SantaConfig.gate_from``): a query sees them only when one of them is nearer to it than
        the base rows by that margin. A memory gated already keeps its base rows as they were; the new
        rows join its added ones. ``self`` is left unchanged."""
        emb = np.ascontiguousarray(np.atleast_2d(np.asarray(embeddings, np.float32)))
        if len(texts) != len(emb):
            raise ValueError(f"{len(texts)} texts for {len(emb)} embeddings")
        if len(emb) and emb.shape[1] != self.dim:
            raise ValueError(f"embeddings must be [N, {self.dim}], got shape {emb.shape}")
        if not np.isfinite(emb).all():
            raise ValueError("embeddings contain NaN or infinite values")
        old = self.texts if self.texts is not None else [f"bank row {i}" for i in range(self.num_entries)]
        seen, keep = set(old), []
        for i, t in enumerate(texts):
            if t not in seen:
                seen.add(t)
                keep.append(i)
        bank = np.concatenate([self.bank, l2_normalize(emb[keep]).astype(np.float32)]) if keep else self.bank
        all_texts = list(old) + [texts[i] for i in keep]
        if recluster:
            centroids, assignments = kmeans(bank, int(self.config.clusters), int(self.config.kmeans_iters),
                                            int(self.config.seed), self.config.kmeans_max_points,
                                            self.config.kmeans_init)
        else:
            new = np.ascontiguousarray(bank[self.num_entries:])
            extra = _nearest_centroid(new, self.centroids) if len(new) else np.zeros(0, np.int64)
            centroids, assignments = self.centroids, np.concatenate([self.assignments, extra.astype(np.int64)])
        config = dataclasses.replace(self.config)
        if gate_margin is not None:
            config.gate_from = self.config.gate_from if self.config.gate_from is not None else self.num_entries
            config.gate_margin = float(gate_margin)
            config.__post_init__()
        return SantaMemory(bank, centroids, assignments, config, all_texts if self.texts is not None else None)

    # -- introspection -----------------------------------------------------------------------
    @property
    def num_entries(self) -> int:
        return self._shape[0]

    @property
    def dim(self) -> int:
        return self._shape[1]

    @property
    def num_clusters(self) -> int:
        return self.centroids.shape[0]

    @property
    def cluster_sizes(self) -> np.ndarray:
        return self._offsets[1:] - self._offsets[:-1]

    def members(self, cluster: int) -> np.ndarray:
        """Bank row indices of one cluster (ascending)."""
        return self._order[self._offsets[cluster] : self._offsets[cluster + 1]]

    def nearest_cluster(self, z):
        """Index of the nearest centroid (Euclidean) for each query row."""
        q, back = _to_query(z)
        self._check_dim(q)
        with one_blas_thread():
            return back(_nearest_centroid(l2_normalize(q), self.centroids))

    def _check_dim(self, q: np.ndarray) -> None:
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must be [N, {self.dim}], got shape {tuple(q.shape)}")

    # -- search ------------------------------------------------------------------------------
    @property
    def gated(self) -> bool:
        """Whether some rows sit behind the gate of added texts (``SantaConfig.gate_from``)."""
        g = self.config.gate_from
        return g is not None and int(g) < self.num_entries

    def _base_view(self) -> "SantaMemory":
        """The rows before ``gate_from`` as a memory of their own: same row indices, the clusters that
        hold base rows (all of the base's own when the added rows joined their nearest old cluster)."""
        if self._base is None:
            g = int(self.config.gate_from)
            a = self.assignments[:g]
            keep = np.unique(a)
            relabel = np.full(self.num_clusters, -1, np.int64)
            relabel[keep] = np.arange(len(keep))
            cfg = dataclasses.replace(self.config, gate_from=None)
            self._base = SantaMemory(self.entries(np.arange(g)), self.centroids[keep], relabel[a], cfg,
                                     self.texts[:g] if self.texts is not None else None)
        return self._base

    def _search(self, q: np.ndarray, top_l: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
        with one_blas_thread():
            return self._search_gated(q, top_l, mode)

    def _search_gated(self, q: np.ndarray, top_l: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
        if not self.gated:
            return self._search_all(q, top_l, mode)
        idx, sims = self._base_view()._search_all(q, top_l, mode)
        g = int(self.config.gate_from)
        added = self.entries(np.arange(g, self.num_entries))
        best = np.empty(q.shape[0], dtype=np.float32)
        step = max(1, _CHUNK_ELEMS // added.shape[0])
        for s in range(0, q.shape[0], step):
            best[s : s + step] = (q[s : s + step] @ added.T).max(1)
        opened = np.flatnonzero(best >= sims[:, 0] + np.float32(self.config.gate_margin))
        if opened.size:
            idx[opened], sims[opened] = self._search_all(q[opened], top_l, mode)
        return idx, sims

    def _search_all(self, q: np.ndarray, top_l: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
        if mode == "cluster":
            return self._search_cluster(q, top_l)
        if mode == "exact":
            return self._search_exact(q, top_l)
        if mode == "ivf":
            return self._search_ivf(q, top_l)
        if mode == "auto":
            if self.num_entries <= int(self.config.exact_max_rows):
                return self._search_exact(q, top_l)
            return self._search_auto(q, top_l)
        raise ValueError(f"unknown Santa search mode {mode!r}; choose one of {SEARCH_MODES}")

    def _search_exact(self, q: np.ndarray, top_l: int):
        n, m = q.shape[0], self.num_entries
        k = min(top_l, m)
        idx = np.empty((n, top_l), dtype=np.int64)
        sims = np.empty((n, top_l), dtype=np.float32)
        step = max(1, _CHUNK_ELEMS // m)
        bank = self.bank
        for s in range(0, n, step):
            si, sv = _top_k(q[s : s + step] @ bank.T, k)
            idx[s : s + step], sims[s : s + step] = _pad_cyclic(si, sv, np.full(len(si), k), top_l)
        return idx, sims

    def _search_cluster(self, q: np.ndarray, top_l: int):
        n = q.shape[0]
        idx = np.empty((n, top_l), dtype=np.int64)
        sims = np.empty((n, top_l), dtype=np.float32)
        cl = _nearest_centroid(q, self.centroids)
        for c in np.unique(cl):  # one block per distinct cluster in the batch
            rows = np.flatnonzero(cl == c)
            members = self.members(int(c))
            entries = self.entries(members)
            k = min(top_l, members.size)
            step = max(1, _CHUNK_ELEMS // max(1, members.size))
            for s in range(0, rows.size, step):
                r = rows[s : s + step]
                sj, sv = _top_k(q[r] @ entries.T, k)
                pj, ps = _pad_cyclic(sj, sv, np.full(r.size, k), top_l)
                idx[r], sims[r] = members[pj], ps
        return idx, sims

    def _ivf_index(self):
        if self._ivf is None:
            import faiss
            from faiss.contrib.ivf_tools import add_preassigned

            quantizer = faiss.IndexFlatL2(self.dim)
            quantizer.add(self.centroids)
            index = faiss.IndexIVFFlat(quantizer, self.dim, self.num_clusters, faiss.METRIC_INNER_PRODUCT)
            if not index.is_trained:  # pragma: no cover - faiss marks it trained when ntotal == nlist
                raise RuntimeError("faiss IVF index did not accept the k-means centroids")
            # the same cluster lists as "cluster" mode, not faiss's own re-assignment
            add_preassigned(index, self.bank, self.assignments)
            self._ivf = (index, quantizer)
        return self._ivf[0]

    @staticmethod
    def _faiss_search(index, q: np.ndarray, top_l: int):
        dist, ids = index.search(np.ascontiguousarray(q, dtype=np.float32), int(top_l))
        ids = ids.astype(np.int64)
        nv = (ids >= 0).sum(1)  # faiss pads with -1 after the valid (sorted) results
        if bool((nv == 0).any()):  # pragma: no cover - the probed lists are never all empty
            raise RuntimeError("IVF search returned no neighbours")
        return _pad_cyclic(ids, dist.astype(np.float32), nv, top_l)

    def _search_ivf(self, q: np.ndarray, top_l: int):
        index = self._ivf_index()
        index.nprobe = int(min(self.config.ivf_nprobe, self.num_clusters))
        return self._faiss_search(index, q, top_l)

    def _auto_index(self):
        """faiss IVF over the bank with its own lists; afterwards the index is the only copy."""
        if self._auto is None:
            import faiss

            from ..threads import num_threads

            faiss.omp_set_num_threads(num_threads())
            m, d = self.num_entries, self.dim
            lists = int(self.config.auto_lists or max(1, round(2 * math.sqrt(m))))
            # spherical: unit centroids, so inner-product assignment is the nearest-centre one
            km = faiss.Kmeans(d, lists, niter=10, seed=int(self.config.seed) & 0x7FFFFFFF, spherical=True,
                              max_points_per_centroid=64)
            km.train(self._bank)
            quantizer = faiss.IndexFlatIP(d)
            quantizer.add(km.centroids)
            index = faiss.IndexIVFFlat(quantizer, d, lists, faiss.METRIC_INNER_PRODUCT)
            index.add(self._bank)
            index.set_direct_map_type(faiss.DirectMap.Array)  # rows read back by id
            self._auto = (index, quantizer)
            self._bank = None
        return self._auto[0]

    def _search_auto(self, q: np.ndarray, top_l: int):
        index = self._auto_index()
        index.nprobe = int(min(self.config.auto_nprobe, index.nlist))
        return self._faiss_search(index, q, top_l)

    def retrieve_indices(self, z, top_l: int | None = None, search: str | None = None):
        """Bank row indices ``[N, L]`` (int64) and inner products ``[N, L]`` of the retrieved entries,
        ranked by inner product (padded cyclically when fewer than ``L`` are available); ties between
        equal inner products go to the lower bank row. Same type as ``z`` (numpy or torch)."""
        q, back = _to_query(z)
        self._check_dim(q)
        idx, sims = self._search(l2_normalize(q), int(top_l or self.config.top_l), search or self.config.search)
        return back(idx), back(sims)

    def retrieve(self, z, top_l: int | None = None, search: str | None = None):
        """``(entries [N, L, D], sims [N, L])`` for queries ``z`` [N, D] (clean entries, no noise).

        Same type as ``z`` (numpy in, numpy out; torch in, torch out on ``z``'s device)."""
        q, back = _to_query(z)
        self._check_dim(q)
        idx, sims = self._search(l2_normalize(q), int(top_l or self.config.top_l), search or self.config.search)
        return back(self.entries(idx)), back(sims)

    # -- the Santa step ----------------------------------------------------------------------
    def apply(
        self,
        z,
        generator=None,
        lam: float | None = None,
        tau: float | None = None,
        noise_variance: float | None = None,
        top_l: int | None = None,
        search: str | None = None,
        noise_kind: str | None = None,
    ):
        """Santa-adjusted, L2-normalised embeddings ``z'`` (same type/shape as ``z``).

        Keyword overrides (``lam``, ``tau``, ``noise_variance``, ``top_l``, ``search``, ``noise_kind``)
        replace the config values for this call (for sweeps; :class:`~mats.bridge.config.BridgeConfig`
        resolves them). ``generator`` makes the entry noise reproducible: a
        :class:`~mats.bridge.rng.TorchCompatibleGenerator` (what ``apply_bridge`` passes; no torch) or a
        ``torch.Generator`` (the same draws, by torch); ``None``: unseeded (see :func:`add_noise`).
        The computation runs in numpy, float32, for numpy and torch inputs alike.
        """
        cfg = self.config
        lam = float(cfg.lam if lam is None else lam)
        tau = float(cfg.tau if tau is None else tau)
        var = float(cfg.noise_variance if noise_variance is None else noise_variance)
        top_l = int(top_l or cfg.top_l)
        mode = search or cfg.search
        kind = noise_kind or cfg.noise_kind
        q, back = _to_query(z)
        self._check_dim(q)
        q = l2_normalize(q)
        if lam == 0.0:
            return back(q)
        idx, _ = self._search(q, top_l, mode)
        out = np.empty_like(q)
        d = self.dim
        # the chunk size fixes how the noise is drawn (one randn per chunk): keep it, or seeds move
        step = max(1, _CHUNK_ELEMS // (top_l * d))
        for s in range(0, q.shape[0], step):
            qs, ent = q[s : s + step], self.entries(idx[s : s + step])  # [n, L, D]
            if var > 0.0:
                ent = add_noise(ent.reshape(-1, d), var, kind, generator).reshape(ent.shape)
            with one_blas_thread():
                w = _softmax(np.float32(tau) * (ent @ qs[:, :, None])[:, :, 0])
                mix = (w[:, None, :] @ ent)[:, 0, :]
            out[s : s + step] = l2_normalize(np.float32(1.0 - lam) * qs + np.float32(lam) * mix)
        return back(out)

    __call__ = apply

    # -- persistence -------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``santa.safetensors`` (bank, centroids, assignments) and ``santa.json`` (config)."""
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"bank": self.bank, "centroids": self.centroids, "assignments": self.assignments},
                  str(folder / _WEIGHTS_FILE), metadata={"format": _FORMAT, "version": str(_FORMAT_VERSION)})
        meta = {"format": _FORMAT, "version": _FORMAT_VERSION, "num_entries": self.num_entries,
                "dim": self.dim, "num_clusters": self.num_clusters, "config": asdict(self.config)}
        (folder / _CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if self.texts is not None:
            with open(folder / _TEXTS_FILE, "w", encoding="utf-8") as f:
                for t in self.texts:
                    f.write(" ".join(t.split("\n")) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, **overrides) -> "SantaMemory":
        """Load a saved memory (safetensors + json only). ``overrides`` replace config fields
        (e.g. ``search="ivf"``, ``ivf_nprobe=16``, ``lam=0.5``)."""
        from safetensors.numpy import load_file

        folder = Path(folder)
        wpath, cpath = folder / _WEIGHTS_FILE, folder / _CONFIG_FILE
        if not wpath.is_file() or not cpath.is_file():
            raise FileNotFoundError(f"no Santa memory in {folder}: expected {_WEIGHTS_FILE} and {_CONFIG_FILE} "
                                    "(create one with SantaMemory.build(...).save(folder))")
        meta = json.loads(cpath.read_text())
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{cpath} is not a Santa memory (format {meta.get('format')!r})")
        if int(meta.get("version", 0)) > _FORMAT_VERSION:
            raise ValueError(f"{cpath} has format version {meta['version']}; this mats reads <= {_FORMAT_VERSION}")
        fields = {f.name for f in dataclasses.fields(SantaConfig)}
        cfg_dict = {k: v for k, v in meta.get("config", {}).items() if k in fields}
        unknown_overrides = set(overrides) - fields
        if unknown_overrides:
            raise TypeError(f"unknown SantaConfig fields: {sorted(unknown_overrides)}")
        cfg_dict.update(overrides)
        tensors = load_file(str(wpath))
        missing = {"bank", "centroids", "assignments"} - set(tensors)
        if missing:
            raise ValueError(f"{wpath} lacks tensors {sorted(missing)}")
        texts = None
        if (folder / _TEXTS_FILE).is_file():
            texts = (folder / _TEXTS_FILE).read_text(encoding="utf-8").split("\n")[:len(tensors["bank"])]
            if len(texts) != len(tensors["bank"]):
                raise ValueError(f"{folder / _TEXTS_FILE} has {len(texts)} lines for {len(tensors['bank'])} bank rows")
        return cls(tensors["bank"], tensors["centroids"], tensors["assignments"], SantaConfig(**cfg_dict), texts)

    def __repr__(self) -> str:
        c = self.config
        return (f"SantaMemory(entries={self.num_entries}, dim={self.dim}, clusters={self.num_clusters}, "
                f"top_l={c.top_l}, tau={c.tau}, lam={c.lam}, noise_variance={c.noise_variance}, search={c.search!r})")
