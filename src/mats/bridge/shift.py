"""The 'shift' bridge's vector on disk: ``shift.safetensors`` (plus ``shift.npy`` for numpy users).

``shift = mean(text) - mean(audio)`` is measured by the gap diagnostic (:mod:`mats.evaluation.gap`,
`mats gap`); the model folder keeps it beside the weights and :func:`mats.bridge.bridges.apply_bridge`
adds it to audio embeddings.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["save_shift", "load_shift", "SHIFT_FILE"]

SHIFT_FILE = "shift.safetensors"
_FORMAT = "mats-gap-shift/1"


def save_shift(path: str | os.PathLike, vectors: dict[str, np.ndarray], metadata: dict[str, str] | None = None,
               clap_fingerprint: str | None = None) -> Path:
    """Write ``vectors`` (must hold ``"shift"``; centroids and spreads may ride along) to
    ``shift.safetensors`` and the shift alone to ``shift.npy`` beside it.

    ``path`` is a folder or a ``.safetensors`` file name."""
    from safetensors.numpy import save_file

    if "shift" not in vectors:
        raise ValueError("save_shift needs a 'shift' vector")
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / SHIFT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in vectors.items()}
    meta = {"format": _FORMAT, **(metadata or {})}
    if clap_fingerprint:
        meta["clap"] = clap_fingerprint
    save_file(tensors, str(path), metadata=meta)
    np.save(path.with_suffix(".npy"), tensors["shift"])
    return path


def load_shift(path: str | os.PathLike) -> np.ndarray:
    """The shift vector (float32 [D]) from a ``.safetensors``/``.npy`` file or a folder holding one."""
    path = Path(path)
    if path.is_dir():
        path = path / SHIFT_FILE if (path / SHIFT_FILE).is_file() else path / "shift.npy"
    if path.suffix == ".npy":
        return np.asarray(np.load(path, allow_pickle=False), dtype=np.float32).reshape(-1)
    from safetensors.numpy import load_file
    return np.asarray(load_file(str(path))["shift"], dtype=np.float32)
