"""The log-mel front end both MS-CLAP audio encoders share, as torchlibrosa computes it.

Kept apart because it is the part that decides whether our embeddings match the original's: a
reflect-padded STFT as a convolution (``Spectrogram``), power, the checkpoint's mel matrix and
10·log10 (``LogmelFilterBank``), with torchlibrosa's parameter names so the checkpoint loads as is.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import _need


class _STFT(nn.Module):
    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        bins = n_fft // 2 + 1
        n = np.arange(n_fft)
        window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)  # periodic Hann, as librosa's get_window
        w = np.exp(-2j * np.pi * np.outer(n, np.arange(bins)) / n_fft) * window[:, None]
        self.conv_real = nn.Conv1d(1, bins, n_fft, stride=hop, bias=False)
        self.conv_imag = nn.Conv1d(1, bins, n_fft, stride=hop, bias=False)
        self.conv_real.weight.data = torch.tensor(w.real.T[:, None, :], dtype=torch.float32)
        self.conv_imag.weight.data = torch.tensor(w.imag.T[:, None, :], dtype=torch.float32)
        for p in self.parameters():
            p.requires_grad_(False)


class _Spectrogram(nn.Module):
    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.stft = _STFT(n_fft, hop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T] -> [B, 1, frames, bins]
        x = F.pad(x[:, None, :], (self.stft.n_fft // 2, self.stft.n_fft // 2), mode="reflect")
        real = self.stft.conv_real(x)[:, None].transpose(2, 3)
        imag = self.stft.conv_imag(x)[:, None].transpose(2, 3)
        return real ** 2 + imag ** 2


class _LogMel(nn.Module):
    def __init__(self, sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float):
        super().__init__()
        from transformers.audio_utils import mel_filter_bank

        with warnings.catch_warnings():  # small FFTs leave empty filters; the checkpoint's melW wins anyway
            warnings.simplefilter("ignore")
            mel = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=fmin,
                                  max_frequency=fmax, sampling_rate=sr, norm="slaney", mel_scale="slaney")
        self.melW = nn.Parameter(torch.tensor(mel, dtype=torch.float32), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mel = torch.matmul(x, self.melW)
        return 10.0 * torch.log10(torch.clamp(mel, min=1e-10))  # ref 1.0, amin 1e-10, no top_db


def _front_end(sd: dict, prefix: str, sr: int, hop: int, fmin: float, fmax: float):
    n_fft = _need(sd, prefix + "spectrogram_extractor.stft.conv_real.weight").shape[-1]
    n_mels = _need(sd, prefix + "logmel_extractor.melW").shape[1]
    return _Spectrogram(n_fft, hop), _LogMel(sr, n_fft, n_mels, fmin, fmax), n_mels
