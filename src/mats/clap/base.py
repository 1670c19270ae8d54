"""The one interface every CLAP backend implements.

A CLAP maps audio and text into one space. Everything downstream (training, Santa, zero-shot)
only needs these few members, so a new backend is a single class.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Sequence, Union

import numpy as np

AudioInput = Union[str, os.PathLike, np.ndarray, tuple]  # path, mono waveform at sample_rate, or (waveform, sr)


class CLAP(ABC):
    """Frozen contrastive audio-text encoder. Outputs are float32, L2-normalised, shape [N, dim]."""

    name: str
    dim: int
    sample_rate: int
    clip_seconds: float

    @abstractmethod
    def encode_audio(self, audio: Sequence[AudioInput], batch_size: int = 16) -> np.ndarray: ...

    @abstractmethod
    def encode_text(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...

    def fingerprint(self) -> str:
        """Identifies the weights + preprocessing, so caches of its embeddings can be invalidated."""
        return self.name

    def describe(self) -> dict:
        return {"name": self.name, "dim": self.dim, "sample_rate": self.sample_rate,
                "clip_seconds": self.clip_seconds}


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("encode_text takes a list of strings, not a single string")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f"text #{i} is empty; CLAP text inputs must be non-empty strings")
    return out
