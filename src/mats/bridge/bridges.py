"""Inference-time bridges between CLAP audio embeddings and the text embeddings the model was trained on.

Every bridge maps ``z`` ([N, D] audio embeddings) to ``z'`` ([N, D] float32, unit rows) that is fed to
the mapper. Select one by name (``BridgeConfig.name``):

``none``
    ``z`` itself (L2-normalised).
``noise``
    the training-time noise applied at inference: ``add_noise(z, noise_variance)``; by default the
    variance the model was trained with (its Santa memory records it), 0.015 without a memory.
``santa``
    MATS's Santa (:meth:`SantaMemory.apply`): mix ``z`` with softmax-weighted noisy neighbours from the
    memory bank (``lam``, ``tau`` = 10, ``top_l`` = 32 by default).
``nearest``
    the single closest bank entry by inner product (decode from the closest training text embedding;
    WSAC's nearest-neighbour inference). Exact search by default.
``projection``
    DeCap-style projection onto the span of the bank: ``sum_i softmax(tau * <z, m_i>) m_i``, normalised.
    Over the whole bank by default (streamed in chunks with an online softmax, so banks of millions of
    rows need no [N, M] matrix), or over the ``projection_top_l`` exact neighbours. Default ``tau`` =
    100, i.e. DeCap's temperature 0.01: with unit vectors the logits span at most ``2 * tau``, so
    ``tau = 10`` (Santa's value) would average a large part of a big bank into a blurred mean, while
    ``tau = 100`` concentrates the weight on the few nearest entries and ``tau -> inf`` tends to
    ``nearest``.
``shift``
    ``normalise(normalise(z) + shift)``, where ``shift = mean(text) - mean(audio)`` is the modality-gap
    vector measured by the gap diagnostic (given by the caller).

All bridges are deterministic for a fixed ``seed``: the noise comes from a fresh
:class:`~mats.bridge.rng.TorchCompatibleGenerator` seeded per call (numpy; the draws of a CPU
``torch.Generator`` of that seed, so answers recorded before inference left torch do not move).
Nothing here imports torch; torch tensors are accepted as input.
"""

from __future__ import annotations

import sys

import numpy as np

from .blas import one_blas_thread
from .config import BRIDGES, DEFAULT_TAU, BridgeConfig, BridgeError, available_bridges
from .noise import add_noise, l2_normalize
from .rng import TorchCompatibleGenerator
from .santa import SantaMemory

__all__ = ["BRIDGES", "DEFAULT_TAU", "BridgeConfig", "BridgeError", "apply_bridge", "available_bridges",
           "projection"]

_CHUNK_ELEMS = 1 << 24


def _as_array(z) -> np.ndarray:
    torch = sys.modules.get("torch")  # a tensor exists only once its caller has loaded torch
    if torch is not None and isinstance(z, torch.Tensor):
        z = z.detach().to("cpu", torch.float32).numpy()
    z = np.asarray(z, dtype=np.float32)
    if z.ndim != 2:
        raise BridgeError(f"embeddings must be [N, D], got shape {z.shape}")
    if not np.isfinite(z).all():
        raise BridgeError("embeddings contain NaN or infinite values")
    return np.ascontiguousarray(z)


def _need_memory(memory: SantaMemory | None, name: str, dim: int) -> SantaMemory:
    if memory is None:
        raise BridgeError(f"bridge {name!r} needs a memory bank (a SantaMemory built from training-text "
                          "embeddings, e.g. SantaMemory.build(bank) or SantaMemory.load(folder)); got None")
    if memory.dim != dim:
        raise BridgeError(f"bridge {name!r}: memory bank has dimension {memory.dim}, embeddings have {dim}")
    return memory


def projection(z: np.ndarray, bank: np.ndarray, tau: float = 100.0) -> np.ndarray:
    """``normalise(sum_i softmax_i(tau * <z, m_i>) m_i)`` over all rows of ``bank``, streamed in chunks
    (online softmax: running max, running normaliser, running weighted sum). Returns float32 [N, D]."""
    q = np.ascontiguousarray(z, dtype=np.float32)
    b = np.ascontiguousarray(bank, dtype=np.float32)
    n, m = q.shape[0], b.shape[0]
    out = np.empty((n, q.shape[1]), dtype=np.float32)
    qstep = max(1, min(n, 4096))
    bstep = max(1, _CHUNK_ELEMS // qstep)
    with one_blas_thread():  # small products: see mats.bridge.blas
        for s in range(0, n, qstep):
            qs = q[s : s + qstep].astype(np.float64)
            run_max = np.full((qs.shape[0], 1), -np.inf)
            run_sum = np.zeros((qs.shape[0], 1))
            run_vec = np.zeros((qs.shape[0], q.shape[1]))
            for t in range(0, m, bstep):
                bt = b[t : t + bstep].astype(np.float64)
                logits = tau * (qs @ bt.T)
                new_max = np.maximum(run_max, logits.max(1, keepdims=True))
                scale = np.exp(run_max - new_max)
                e = np.exp(logits - new_max)
                run_sum = run_sum * scale + e.sum(1, keepdims=True)
                run_vec = run_vec * scale + e @ bt
                run_max = new_max
            out[s : s + qstep] = l2_normalize(run_vec / run_sum)
    return out


def apply_bridge(
    z,
    config: BridgeConfig,
    memory: SantaMemory | None = None,
    shift: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Apply the bridge ``config.name`` to audio embeddings ``z`` ([N, D]); returns float32 unit rows.

    ``memory`` is required by santa / nearest / projection, ``shift`` ([D]) by shift. Noise draws
    (noise, santa) come from a :class:`TorchCompatibleGenerator` seeded with ``seed`` for this call.
    """
    if isinstance(config, str):
        config = BridgeConfig(name=config)
    config = config.resolve(memory)
    z = _as_array(z)
    n, d = z.shape
    q = l2_normalize(z).astype(np.float32)
    gen = TorchCompatibleGenerator(int(seed))
    name = config.name

    if name == "none":
        out = q
    elif name == "noise":
        out = add_noise(q, config.noise_variance, config.noise_kind, gen)
    elif name == "santa":
        mem = _need_memory(memory, name, d)
        out = mem.apply(q, generator=gen, lam=config.lam, tau=config.tau, noise_variance=config.noise_variance,
                        top_l=config.top_l, search=config.search, noise_kind=config.noise_kind)
    elif name == "nearest":
        mem = _need_memory(memory, name, d)
        idx, _ = mem.retrieve_indices(q, top_l=1, search=config.search)
        out = mem.bank[idx[:, 0]]
    elif name == "projection":
        mem = _need_memory(memory, name, d)
        tau = config.tau
        if config.projection_top_l is None:
            out = projection(q, mem.bank, tau)
        else:
            idx, sims = mem.retrieve_indices(q, top_l=config.projection_top_l, search=config.search)
            logits = tau * np.asarray(sims, dtype=np.float64)
            w = np.exp(logits - logits.max(1, keepdims=True))
            w /= w.sum(1, keepdims=True)
            out = l2_normalize((w[:, None, :] @ mem.entries(idx).astype(np.float64))[:, 0, :])
    elif name == "shift":
        if shift is None:
            raise BridgeError("bridge 'shift' needs the gap vector shift = mean(text) - mean(audio) "
                              "(from the gap diagnostic); got None")
        s = np.asarray(shift, dtype=np.float32).reshape(-1)
        if s.shape[0] != d:
            raise BridgeError(f"bridge 'shift': shift vector has dimension {s.shape[0]}, embeddings have {d}")
        out = l2_normalize(q + s[None, :])
    else:  # pragma: no cover - guarded above
        raise BridgeError(name)
    return np.ascontiguousarray(out, dtype=np.float32)
