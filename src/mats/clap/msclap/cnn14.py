"""The MS-CLAP 2022 audio encoder: PANNs CNN14 over the shared log-mel front end.

Its own module so the 2022 model can be read (and checked against PANNs) without the HTSAT code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import _CNN, _need
from .features import _front_end


class _ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x, pool):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, kernel_size=pool)


class Cnn14(nn.Module):
    """PANNs CNN14 as used by MS-CLAP 2022; channel widths are read from the checkpoint."""

    def __init__(self, sd: dict, cfg: dict):
        super().__init__()
        p = _CNN
        self.spectrogram_extractor, self.logmel_extractor, n_mels = _front_end(
            sd, p, cfg["mel_sr"], cfg["hop"], cfg["fmin"], cfg["fmax"])
        self.bn0 = nn.BatchNorm2d(n_mels)
        cin = 1
        for i in range(1, 7):
            w = _need(sd, f"{p}conv_block{i}.conv1.weight")
            setattr(self, f"conv_block{i}", _ConvBlock(cin, w.shape[0]))
            cin = w.shape[0]
        fc1 = _need(sd, p + "fc1.weight")
        self.fc1 = nn.Linear(fc1.shape[1], fc1.shape[0])
        head = _need(sd, p + "fc_audioset.weight")
        self.fc_audioset = nn.Linear(head.shape[1], head.shape[0])
        self.out_dim = fc1.shape[0]

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = self.logmel_extractor(self.spectrogram_extractor(wave))  # [B, 1, T, M]
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        for i in range(1, 6):
            x = getattr(self, f"conv_block{i}")(x, (2, 2))
        x = self.conv_block6(x, (1, 1))
        x = x.mean(dim=3)
        x = x.max(dim=2).values + x.mean(dim=2)
        return F.relu(self.fc1(x))  # the "embedding" (clipwise head not needed)
