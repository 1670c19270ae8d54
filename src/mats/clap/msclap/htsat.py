"""The MS-CLAP 2023 audio encoder: HTS-AT, a Swin transformer over the log-mel image.

The largest piece of the backend and independent of the rest but for the front end, so it stands
alone; sizes (widths, depths, heads, window) are read from the checkpoint, not configured.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import _HTSAT, CheckpointError, _need
from .features import _front_end


def _window_partition(x, ws):
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, C)


def _window_reverse(windows, ws, H, W):
    B = int(windows.shape[0] / (H * W / ws / ws))
    x = windows.view(B, H // ws, W // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)


class _WindowAttention(nn.Module):
    def __init__(self, dim, ws, heads, qkv_bias):
        super().__init__()
        self.ws, self.heads = ws, heads
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, heads))
        coords = torch.stack(torch.meshgrid([torch.arange(ws), torch.arange(ws)], indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
        rel[:, :, 0] += ws - 1
        rel[:, :, 1] += ws - 1
        rel[:, :, 0] *= 2 * ws - 1
        self.register_buffer("relative_position_index", rel.sum(-1))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, mask=None):
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(N, N, -1)
        attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(B_ // nW, nW, self.heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.heads, N, N)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B_, N, C))


class _Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _SwinBlock(nn.Module):
    def __init__(self, dim, res, heads, ws, shift, mlp_hidden, qkv_bias):
        super().__init__()
        self.res = res
        if min(res) <= ws:  # window covers the whole map: no partition, no shift
            shift, ws = 0, min(res)
        self.ws, self.shift = ws, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _WindowAttention(dim, ws, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, mlp_hidden)
        mask = None
        if shift > 0:
            H, W = res
            img = torch.zeros((1, H, W, 1))
            cnt = 0
            for h in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
                for w in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
                    img[:, h, w, :] = cnt
                    cnt += 1
            mw = _window_partition(img, ws).view(-1, ws * ws)
            mask = mw.unsqueeze(1) - mw.unsqueeze(2)
            mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
        self.register_buffer("attn_mask", mask)

    def forward(self, x):
        H, W = self.res
        B, L, C = x.shape
        shortcut = x
        x = self.norm1(x).view(B, H, W, C)
        if self.shift > 0:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        win = _window_partition(x, self.ws).view(-1, self.ws * self.ws, C)
        win = self.attn(win, mask=self.attn_mask).view(-1, self.ws, self.ws, C)
        x = _window_reverse(win, self.ws, H, W)
        if self.shift > 0:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        x = shortcut + x.view(B, H * W, C)
        return x + self.mlp(self.norm2(x))


class _PatchMerging(nn.Module):
    def __init__(self, res, dim):
        super().__init__()
        self.res = res
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x):
        H, W = self.res
        B, L, C = x.shape
        x = x.view(B, H, W, C)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(B, -1, 4 * C)))


class _BasicLayer(nn.Module):
    def __init__(self, blocks, downsample):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.downsample(x) if self.downsample is not None else x


class _PatchEmbed(nn.Module):
    def __init__(self, cin, dim, patch, stride, norm):
        super().__init__()
        pad = ((patch[0] - stride[0]) // 2, (patch[1] - stride[1]) // 2)
        self.proj = nn.Conv2d(cin, dim, kernel_size=patch, stride=stride, padding=pad)
        self.norm = nn.LayerNorm(dim) if norm else nn.Identity()

    def forward(self, x):
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class HTSAT(nn.Module):
    """HTS-AT as used by MS-CLAP 2023 (token-semantic head present, latent = mean of final tokens).

    Sizes come from the checkpoint; ``spec_size`` (256) and patch stride (4, 4) are HTSAT constants.
    """

    def __init__(self, sd: dict, cfg: dict, spec_size: int = 256):
        super().__init__()
        p = _HTSAT
        self.spectrogram_extractor, self.logmel_extractor, n_mels = _front_end(
            sd, p, cfg["mel_sr"], cfg["hop"], cfg["fmin"], cfg["fmax"])
        self.bn0 = nn.BatchNorm2d(n_mels)
        self.spec_size = spec_size
        self.freq_ratio = spec_size // n_mels
        pw = _need(sd, p + "patch_embed.proj.weight")
        dim, cin, patch = pw.shape[0], pw.shape[1], tuple(pw.shape[2:])
        stride = (4, 4)
        self.patch_embed = _PatchEmbed(cin, dim, patch, stride, p + "patch_embed.norm.weight" in sd)
        if p + "absolute_pos_embed" in sd:
            raise CheckpointError("HTSAT with absolute position embeddings is not an MS-CLAP 2023 model")
        grid = (spec_size // stride[0], spec_size // stride[1])
        n_layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(re.escape(p) + r"layers\.(\d+)\.", k)))
        ws0 = None
        layers = []
        for i in range(n_layers):
            lp = f"{p}layers.{i}."
            depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(re.escape(lp) + r"blocks\.(\d+)\.", k)))
            table = _need(sd, lp + "blocks.0.attn.relative_position_bias_table")
            heads = table.shape[1]
            ws_eff = (int(round(math.sqrt(table.shape[0]))) + 1) // 2
            ws0 = ws0 or ws_eff
            d = dim * 2 ** i
            res = (grid[0] // 2 ** i, grid[1] // 2 ** i)
            hidden = _need(sd, lp + "blocks.0.mlp.fc1.weight").shape[0]
            qkv_bias = (lp + "blocks.0.attn.qkv.bias") in sd
            blocks = [_SwinBlock(d, res, heads, ws0, 0 if j % 2 == 0 else ws0 // 2, hidden, qkv_bias)
                      for j in range(depth)]
            down = _PatchMerging(res, d) if i < n_layers - 1 else None
            layers.append(_BasicLayer(blocks, down))
        self.layers = nn.ModuleList(layers)
        self.out_dim = dim * 2 ** (n_layers - 1)
        self.norm = nn.LayerNorm(self.out_dim)
        tw = _need(sd, p + "tscam_conv.weight")
        self.tscam_conv = nn.Conv2d(tw.shape[1], tw.shape[0], kernel_size=tuple(tw.shape[2:]), padding=(0, 1))
        hw = _need(sd, p + "head.weight")
        self.head = nn.Linear(hw.shape[1], hw.shape[0])

    def _reshape_wav2img(self, x):
        B, C, T, Fq = x.shape
        target_t, target_f = int(self.spec_size * self.freq_ratio), self.spec_size // self.freq_ratio
        if T > target_t or Fq > target_f:
            raise ValueError(f"HTSAT takes at most {target_t} frames; got {T} (clip too long)")
        if T < target_t:
            x = F.interpolate(x, (target_t, x.shape[3]), mode="bicubic", align_corners=True)
        if Fq < target_f:
            x = F.interpolate(x, (x.shape[2], target_f), mode="bicubic", align_corners=True)
        x = x.permute(0, 1, 3, 2).contiguous()
        x = x.reshape(x.shape[0], x.shape[1], x.shape[2], self.freq_ratio, x.shape[3] // self.freq_ratio)
        x = x.permute(0, 1, 3, 2, 4).contiguous()
        return x.reshape(x.shape[0], x.shape[1], x.shape[2] * x.shape[3], x.shape[4])

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = self.logmel_extractor(self.spectrogram_extractor(wave))
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        x = self.patch_embed(self._reshape_wav2img(x))
        for layer in self.layers:
            x = layer(x)
        # The original's token-semantic reshuffle before average pooling permutes tokens only, so
        # its "latent_output" is the mean of the normalised final tokens.
        return self.norm(x).mean(dim=1)


class _HTSATWrapper(nn.Module):
    def __init__(self, sd, cfg):
        super().__init__()
        self.htsat = HTSAT(sd, cfg)
        self.out_dim = self.htsat.out_dim

    def forward(self, wave):
        return self.htsat(wave)
