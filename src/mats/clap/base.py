"""The one interface every CLAP backend implements.

A CLAP maps audio and text into one space. Everything downstream (training, Santa, zero-shot)
only needs these few members, so a new backend is a single class: implement ``embed_windows``
(fixed-length waveforms in, one embedding per window out) and ``encode_text``; loading, resampling,
deterministic windowing and pooling are shared here.
"""

from __future__ import annotations

import os
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

AudioInput = Union[str, os.PathLike, np.ndarray, tuple]  # path, mono waveform at sample_rate, or (waveform, sr)


@dataclass
class WindowEmbeddings:
    """Per-window audio embeddings of one clip (L2-normalised) with window times in seconds."""

    embeddings: np.ndarray  # [W, D]
    starts: np.ndarray  # [W]
    ends: np.ndarray  # [W]


class CLAP(ABC):
    """Frozen contrastive audio-text encoder. Outputs are float32, L2-normalised, shape [N, dim]."""

    name: str
    dim: int
    sample_rate: int
    clip_seconds: float
    hop_seconds: float | None = None  # None: windows do not overlap
    max_seconds: float = 3600.0  # refuse longer inputs (configurable per instance)

    # -- to implement -------------------------------------------------------------------------
    @abstractmethod
    def embed_windows(self, windows: np.ndarray) -> np.ndarray:
        """[W, clip_samples] float32 waveforms at ``sample_rate`` -> [W, dim] embeddings."""

    @abstractmethod
    def encode_text(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...

    # -- shared -------------------------------------------------------------------------------
    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    def fit_windows(self, windows: np.ndarray) -> np.ndarray:
        """``windows`` as float32 [W, clip_samples]: longer rows keep their start (deterministic; the
        shared windowing never sends them), shorter ones are repeat-padded as the original CLAPs do."""
        w = np.asarray(windows, dtype=np.float32)
        if w.ndim == 1:
            w = w[None, :]
        if w.ndim != 2:
            raise ValueError(f"embed_windows expects [W, samples], got shape {w.shape}")
        n = self.clip_samples
        if w.shape[1] > n:
            w = w[:, :n]
        elif w.shape[1] < n:
            w = np.tile(w, (1, -(-n // max(w.shape[1], 1))))[:, :n]
        return w

    def load(self, audio: AudioInput, max_decoded_samples: int | None = None) -> np.ndarray:
        """Mono float32 at ``sample_rate``; ``max_decoded_samples``: the decoded-size budget (default:
        :func:`mats.audio.decoded_samples_budget`)."""
        from ..audio import load_audio
        return load_audio(audio, self.sample_rate, max_seconds=self.max_seconds,
                          max_decoded_samples=max_decoded_samples)

    def windows(self, wave: np.ndarray):
        from ..audio import split_windows
        return split_windows(wave, self.sample_rate, self.clip_seconds, self.hop_seconds)

    def encode_audio_windows(self, audio: AudioInput, batch_size: int = 16,
                             max_decoded_samples: int | None = None) -> WindowEmbeddings:
        wins, starts, ends = self.windows(self.load(audio, max_decoded_samples))
        emb = np.concatenate([self.embed_windows(wins[i:i + batch_size])
                              for i in range(0, len(wins), batch_size)])
        emb = l2_normalize(emb.astype(np.float32, copy=False))  # CLAP outputs are float32, whatever the backend
        return WindowEmbeddings(emb, np.asarray(starts), np.asarray(ends))

    def encode_audio(self, audio: Sequence[AudioInput], batch_size: int = 16,
                     max_decoded_samples: int | None = None) -> np.ndarray:
        """One embedding per input: mean of the normalised window embeddings, re-normalised."""
        if isinstance(audio, (str, os.PathLike)):
            raise TypeError("encode_audio takes a list of inputs; wrap a single path in a list")
        out = [self.encode_audio_windows(a, batch_size, max_decoded_samples).embeddings.mean(0) for a in audio]
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return l2_normalize(np.stack(out).astype(np.float32, copy=False))

    def fingerprint(self) -> str:
        """Identifies the weights + preprocessing, so caches of its embeddings can be invalidated."""
        return self.name

    def describe(self) -> dict:
        return {"name": self.name, "dim": self.dim, "sample_rate": self.sample_rate,
                "clip_seconds": self.clip_seconds}


def l2_normalize(x, dim: int = -1, eps: float = 1e-12):
    """Unit rows along ``dim`` of a numpy array or a torch tensor, in its own type, dtype and device;
    zero rows stay zero. The one normalisation of MATS: CLAP outputs, noise, Santa, bridges, metrics."""
    torch = sys.modules.get("torch")  # a tensor can only exist once torch is loaded; this module never loads it
    if torch is not None and isinstance(x, torch.Tensor):
        return x / x.norm(dim=dim, keepdim=True).clamp_min(eps)
    x = np.asarray(x)
    return x / np.maximum(np.linalg.norm(x, axis=dim, keepdims=True), eps)


def check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("encode_text takes a list of strings, not a single string")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f"text #{i} is empty; CLAP text inputs must be non-empty strings")
    return out


def encode_texts_batched(texts: Sequence[str], batch_size: int, dim: int, encode_batch) -> np.ndarray:
    """Validate ``texts``, run ``encode_batch(list[str]) -> [n, dim]`` over batches, L2-normalise.

    Batches are cut from the texts sorted by length (rows come back in the input order): a batch
    pads to its longest text, so mixed lengths spend the encoder's time on padding; sorted batches
    encode more texts per second with the same embeddings up to float rounding (docs/speed.md, "Text
    encoding"; ``benchmarks/latency.py``, ``text_encoding``)."""
    texts = check_texts(texts)
    if not texts:
        return np.zeros((0, dim), np.float32)
    order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
    out = np.empty((len(texts), dim), np.float32)
    for i in range(0, len(order), batch_size):
        rows = order[i:i + batch_size]
        out[rows] = np.asarray(encode_batch([texts[j] for j in rows]), dtype=np.float32)
    return l2_normalize(out)
