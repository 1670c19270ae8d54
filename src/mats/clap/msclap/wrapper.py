"""Microsoft CLAP (MS-CLAP 2022 / 2023) from a local checkpoint, with no network access.

Pointing at real weights
------------------------
MS-CLAP ships ``CLAP_weights_2023.pth`` (HTSAT audio encoder + GPT-2 text encoder, 1024-d, 44.1 kHz,
7 s windows; the CLAP used by MATS) and ``CLAP_weights_2022.pth`` (CNN14 + BERT, 1024-d, 44.1 kHz,
5 s windows) in the ``microsoft/msclap`` hub repository. The checkpoint already holds the text
encoder's weights; what it lacks is the text model's tokenizer (and config), so also keep a copy of
``gpt2`` (2023) or ``bert-base-uncased`` (2022) — any folder written by ``save_pretrained`` or a hub
snapshot. On a machine with hub access::

    huggingface-cli download microsoft/msclap CLAP_weights_2023.pth --local-dir ~/models/msclap
    huggingface-cli download openai-community/gpt2 --local-dir ~/models/msclap/gpt2

then::

    load_clap("msclap-2023:~/models/msclap/CLAP_weights_2023.pth", text_model="~/models/msclap/gpt2")

``text_model`` may be omitted when the folder sits beside the checkpoint under the name ``gpt2``
(2023) or ``bert-base-uncased`` (2022), or when the model is in the local Hugging Face cache.
``version`` is detected from the weights when not given (``"msclap:PATH"`` or a bare ``.pth`` path).

Safety: checkpoints are read with ``torch.load(..., weights_only=True)`` (tensors and plain
containers only, never arbitrary pickled objects) or from ``.safetensors``. If an old checkpoint
cannot be read that way, :func:`convert_checkpoint` rewrites it as safetensors once, and only when
called with ``trust_pickle=True`` on a file you trust.

Why not the ``msclap`` package: msclap 1.3.4 pins ``transformers<5`` and ``numpy<2`` (this project
runs transformers 5 / numpy 2), downloads the checkpoint and ``gpt2``/``bert-base-uncased`` from the
hub by name, unpickles checkpoints with full ``torch.load`` and crops long audio at random. The
architecture is therefore rebuilt here with the checkpoint's exact parameter names; sizes (widths,
depths, heads, window, mel bins, FFT size, projection size) are read from the weights themselves.

Preprocessing follows the original: 44.1 kHz mono, log-mel front end as torchlibrosa computes it
(reflect-padded STFT as a convolution with the checkpoint's own DFT kernels, power spectrum, the
checkpoint's own mel matrix ``melW``, 10·log10), hop 320, then the encoder. Windows are cut
deterministically by the shared :class:`~mats.clap.base.CLAP` windowing (no random crop).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..base import CLAP, encode_texts_batched, l2_normalize
from ..laion import CheckpointError, files_digest, pick_device

__all__ = ["MSCLAP", "MSCLAPModel", "CheckpointError", "load_state_dict", "convert_checkpoint",
           "detect_version", "VERSIONS"]

# What the original configs say (msclap configs/config_2022.yml, config_2023.yml, htsat config.py).
VERSIONS = {
    "2022": dict(audio="Cnn14", text="bert", sample_rate=44100, duration=5, hop=320, text_len=100,
                 mel_sr=44100, fmin=50, fmax=14000, text_names=("bert-base-uncased", "google-bert/bert-base-uncased")),
    # HTSAT builds its mel filters from its own config module (32 kHz, 50-14000 Hz), not from the
    # yml; the checkpoint's melW is what is actually used, the default below only mirrors it.
    "2023": dict(audio="HTSAT", text="gpt2", sample_rate=44100, duration=7, hop=320, text_len=77,
                 mel_sr=32000, fmin=50, fmax=14000, text_names=("gpt2", "openai-community/gpt2")),
}
_HTSAT = "audio_encoder.base.htsat."
_CNN = "audio_encoder.base."
_TEXT = "caption_encoder.base."
# Buffers older transformers versions saved that current ones no longer have (harmless to skip).
_BENIGN_UNEXPECTED = re.compile(
    r"^caption_encoder\.base\.(h\.\d+\.attn\.(bias|masked_bias)|embeddings\.position_ids)$")


# ----------------------------------------------------------------------------------------------
# checkpoint reading
# ----------------------------------------------------------------------------------------------
def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read an MS-CLAP checkpoint safely: ``{'model': state_dict}`` / a bare state dict in a
    ``.pth`` (weights_only) or a ``.safetensors`` file. ``module.`` prefixes (DDP) are removed."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(f"MS-CLAP checkpoint {str(p)!r} does not exist (expected e.g. "
                              "CLAP_weights_2023.pth from the microsoft/msclap repository)")
    if p.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
            sd = load_file(str(p))
        except Exception as e:
            raise CheckpointError(f"{p} is not a readable safetensors file ({type(e).__name__}: {e})") from e
    else:
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as e:
            msg = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
            hint = ("it is not a PyTorch checkpoint or it is truncated/corrupt; download it again"
                    if "Unsupported global" not in str(e) and "weights_only" not in str(e) else
                    "it contains pickled Python objects besides tensors; if you trust the file, convert it "
                    "once with mats.clap.msclap.convert_checkpoint(SRC, DST, trust_pickle=True)")
            raise CheckpointError(f"cannot read MS-CLAP checkpoint {p} with weights_only=True: {hint} "
                                  f"({type(e).__name__}: {msg})") from e
        sd = obj
        for key in ("model", "state_dict"):
            if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
                sd = sd[key]
                break
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{p} does not hold a state dict of tensors (found {type(sd).__name__}); "
                              "expected an MS-CLAP checkpoint ({'model': state_dict})")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *, trust_pickle: bool = False) -> Path:
    """Rewrite a checkpoint as safetensors. Unpickling can run code: only with ``trust_pickle=True``."""
    from safetensors.torch import save_file

    if not trust_pickle:
        try:
            sd = load_state_dict(src)
        except CheckpointError as e:
            raise CheckpointError(f"{e}\n(pass trust_pickle=True only for a file from a trusted source)") from e
    else:
        obj = torch.load(str(Path(src).expanduser()), map_location="cpu", weights_only=False)
        sd = obj.get("model", obj.get("state_dict", obj)) if isinstance(obj, dict) else obj
        sd = {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    dst = Path(dst).expanduser()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(dst), metadata={"format": "pt", "source": "msclap"})
    return dst


def detect_version(sd: dict) -> str:
    if any(k.startswith(_HTSAT) for k in sd):
        return "2023"
    if any(k.startswith(_CNN + "conv_block1.") for k in sd):
        return "2022"
    sample = ", ".join(list(sd)[:5])
    raise CheckpointError("not an MS-CLAP checkpoint: no HTSAT (audio_encoder.base.htsat.*) or CNN14 "
                          f"(audio_encoder.base.conv_block1.*) audio encoder weights; first keys: {sample}")


def _need(sd: dict, key: str) -> torch.Tensor:
    if key not in sd:
        raise CheckpointError(f"MS-CLAP checkpoint lacks {key!r}: truncated, or a different model")
    return sd[key]


# ----------------------------------------------------------------------------------------------
# front end (torchlibrosa's Spectrogram + LogmelFilterBank, same parameter names)
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# CNN14 (MS-CLAP 2022)
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# HTSAT (MS-CLAP 2023): Swin transformer over a 256x256 reshaped log-mel image
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# projections, encoders, the whole model (parameter names as in msclap.models.clap)
# ----------------------------------------------------------------------------------------------
class Projection(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear1 = nn.Linear(d_in, d_out, bias=False)
        self.linear2 = nn.Linear(d_out, d_out, bias=False)
        self.layer_norm = nn.LayerNorm(d_out)

    def forward(self, x):
        e1 = self.linear1(x)
        return self.layer_norm(e1 + self.linear2(F.gelu(e1)))


class _AudioEncoder(nn.Module):
    def __init__(self, sd, cfg):
        super().__init__()
        self.base = _HTSATWrapper(sd, cfg) if cfg["audio"] == "HTSAT" else Cnn14(sd, cfg)
        w = _need(sd, "audio_encoder.projection.linear1.weight")
        if w.shape[1] != self.base.out_dim:
            raise CheckpointError(f"audio projection takes {w.shape[1]} inputs but the encoder gives {self.base.out_dim}")
        self.projection = Projection(w.shape[1], w.shape[0])

    def forward(self, wave):
        return self.projection(self.base(wave))


class _TextEncoder(nn.Module):
    def __init__(self, sd, cfg, text_config):
        super().__init__()
        from transformers import AutoModel

        self.kind = cfg["text"]
        self.base = AutoModel.from_config(text_config)
        w = _need(sd, "caption_encoder.projection.linear1.weight")
        self.projection = Projection(w.shape[1], w.shape[0])

    def forward(self, input_ids, attention_mask, token_type_ids=None, pad_id: int = 0):
        if self.kind == "gpt2":
            hidden = self.base(input_ids=input_ids, attention_mask=attention_mask)[0]
            # The original picks the state at (#tokens != pad id) - 1, pad id being "!" (0 in GPT-2).
            last = torch.ne(input_ids, pad_id).sum(-1) - 1
            out = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        else:
            kw = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            out = self.base(input_ids=input_ids, attention_mask=attention_mask, **kw)[0][:, 0, :]
        return self.projection(out)


class MSCLAPModel(nn.Module):
    def __init__(self, sd: dict, cfg: dict, text_config):
        super().__init__()
        self.audio_encoder = _AudioEncoder(sd, cfg)
        self.caption_encoder = _TextEncoder(sd, cfg, text_config)
        self.logit_scale = nn.Parameter(torch.ones([]) * np.log(1 / 0.07))


# ----------------------------------------------------------------------------------------------
# the backend
# ----------------------------------------------------------------------------------------------
def _text_config(sd: dict, folder: Path | None, kind: str):
    from transformers import AutoConfig, BertConfig, GPT2Config

    if folder is not None and (folder / "config.json").is_file():
        try:
            return AutoConfig.from_pretrained(str(folder), local_files_only=True)
        except Exception as e:
            raise CheckpointError(f"text model config in {folder} is unreadable: {e}") from e
    # No config: derive the sizes from the checkpoint (heads assume 64-d heads, as gpt2/bert-base).
    if kind == "gpt2":
        wte = _need(sd, _TEXT + "wte.weight")
        n_layer = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"caption_encoder\.base\.h\.(\d+)\.", k)))
        return GPT2Config(vocab_size=wte.shape[0], n_embd=wte.shape[1], n_layer=n_layer,
                          n_head=max(1, wte.shape[1] // 64), n_positions=_need(sd, _TEXT + "wpe.weight").shape[0])
    we = _need(sd, _TEXT + "embeddings.word_embeddings.weight")
    n_layer = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"caption_encoder\.base\.encoder\.layer\.(\d+)\.", k)))
    return BertConfig(vocab_size=we.shape[0], hidden_size=we.shape[1], num_hidden_layers=n_layer,
                      num_attention_heads=max(1, we.shape[1] // 64),
                      intermediate_size=_need(sd, _TEXT + "encoder.layer.0.intermediate.dense.weight").shape[0],
                      max_position_embeddings=_need(sd, _TEXT + "embeddings.position_embeddings.weight").shape[0])


def _find_text_model(text_model, ckpt: Path, version: str) -> Path:
    from ... import store

    names = VERSIONS[version]["text_names"]
    if text_model is not None:
        return store.resolve(str(text_model), kind=f"MS-CLAP {version} text model")
    for n in names:  # a folder beside the checkpoint
        for cand in (ckpt.parent / n, ckpt.parent / n.replace("/", "_"), ckpt.parent / n.split("/")[-1]):
            if cand.is_dir():
                return cand
    try:  # the local Hugging Face cache, never the network here
        from huggingface_hub import snapshot_download
        for n in names:
            try:
                return Path(snapshot_download(n, local_files_only=True))
            except Exception:
                pass
    except ImportError:  # pragma: no cover
        pass
    raise CheckpointError(
        f"MS-CLAP {version} needs the tokenizer of {names[0]!r}, which is not beside the checkpoint "
        f"({ckpt.parent / names[0].split('/')[-1]}) nor in the local Hugging Face cache. Pass "
        f"text_model=PATH to a folder holding it (e.g. `huggingface-cli download {names[-1]} --local-dir DIR` "
        "on a machine with hub access)")


class MSCLAP(CLAP):
    """Microsoft CLAP 2022/2023 from a local ``.pth``/``.safetensors`` checkpoint.

    ``version``: ``"2022"``, ``"2023"`` or ``None`` (detected from the weights).
    ``text_model``: folder (or cached hub id) with the text model's tokenizer + config
    (``gpt2`` for 2023, ``bert-base-uncased`` for 2022); its weights are not needed, the CLAP
    checkpoint carries them (used only if the checkpoint has no text-encoder weights at all).
    ``device``: ``None`` picks ``cuda`` when available, else ``cpu``.
    """

    def __init__(self, path: str | os.PathLike, version: str | None = None, device: str | None = None, *,
                 text_model: str | os.PathLike | None = None, max_seconds: float | None = None, **kwargs):
        if kwargs:
            raise TypeError(f"MSCLAP got unexpected arguments: {', '.join(sorted(kwargs))}")
        if not str(path).strip():
            raise ValueError("MSCLAP needs a checkpoint path, e.g. 'msclap-2023:/models/CLAP_weights_2023.pth'")
        if version is not None and str(version) not in VERSIONS:
            raise ValueError(f"unknown MS-CLAP version {version!r}; use '2022' or '2023'")
        ckpt = Path(path).expanduser().resolve()
        sd = load_state_dict(ckpt)
        detected = detect_version(sd)
        if version is not None and str(version) != detected:
            raise CheckpointError(f"{ckpt.name} holds an MS-CLAP {detected} model "
                                  f"({VERSIONS[detected]['audio']}), not {version}; use msclap-{detected}:PATH")
        self.version = detected
        cfg = dict(VERSIONS[detected])
        self._cfg = cfg
        self.ckpt = ckpt
        self.name = f"msclap-{detected}:{ckpt.name}"
        self.sample_rate = cfg["sample_rate"]
        self.clip_seconds = float(cfg["duration"])
        self.text_len = cfg["text_len"]
        if max_seconds is not None:
            self.max_seconds = float(max_seconds)
        self.device = pick_device(device)

        tfolder = _find_text_model(text_model, ckpt, detected)
        self.text_folder = tfolder
        from transformers import AutoModel, AutoTokenizer
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(tfolder), local_files_only=True)
        except Exception as e:
            raise CheckpointError(f"no usable tokenizer in text model folder {tfolder}: {e}") from e

        sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
        has_text = any(k.startswith(_TEXT) for k in sd)
        try:
            model = MSCLAPModel(sd, cfg, _text_config(sd, tfolder, cfg["text"]))
        except CheckpointError:
            raise
        except (RuntimeError, ValueError, KeyError, IndexError) as e:
            raise CheckpointError(f"{ckpt.name}: weights do not form an MS-CLAP {detected} model ({e})") from e
        if not has_text:
            warnings.warn(f"{ckpt.name} has no text-encoder weights; taking them from {tfolder}", stacklevel=2)
            try:
                model.caption_encoder.base = AutoModel.from_pretrained(str(tfolder), local_files_only=True)
            except Exception as e:
                raise CheckpointError(f"{ckpt.name} has no text-encoder weights and {tfolder} has none "
                                      f"usable either: {e}") from e
            sd = {**sd, **{_TEXT + k: v for k, v in model.caption_encoder.base.state_dict().items()}}
        self._load_strict(model, sd)
        self.model = model.to(self.device).eval()
        self.dim = int(model.audio_encoder.projection.linear1.weight.shape[0])
        if self.dim != model.caption_encoder.projection.linear1.weight.shape[0]:
            raise CheckpointError(f"{ckpt.name}: audio and text projections differ in size")
        self.pad_id, self.eot_id = self._special_ids()
        self._fingerprint = None

    def _load_strict(self, model: nn.Module, sd: dict):
        expected = model.state_dict()
        missing = [k for k in expected if k not in sd]
        if missing:
            raise CheckpointError(
                f"{self.ckpt.name} is missing {len(missing)} MS-CLAP {self.version} weights, e.g. "
                f"{', '.join(missing[:5])}: the file is truncated or not this model")
        bad = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if sd[k].shape != v.shape]
        if bad:
            raise CheckpointError(f"{self.ckpt.name}: weight shapes do not fit the text model config or "
                                  f"architecture: {'; '.join(bad[:4])}")
        unexpected = [k for k in sd if k not in expected and not _BENIGN_UNEXPECTED.match(k)]
        if unexpected:
            warnings.warn(f"{self.ckpt.name}: ignoring {len(unexpected)} weights this model does not use, "
                          f"e.g. {', '.join(unexpected[:3])}", stacklevel=3)
        model.load_state_dict({k: sd[k] for k in expected}, strict=True)

    def _special_ids(self):
        tok = self.tokenizer
        if self._cfg["text"] == "gpt2":
            vocab = tok.get_vocab()
            if "<|endoftext|>" not in vocab:
                raise CheckpointError(f"tokenizer in {self.text_folder} has no <|endoftext|> token; "
                                      "it is not the GPT-2 tokenizer")
            # msclap sets pad_token "!" (id 0 in GPT-2) and finds the last token by counting ids != pad.
            pad, eot = vocab.get("!", 0), vocab["<|endoftext|>"]
            return int(pad), int(eot)
        return int(tok.pad_token_id if tok.pad_token_id is not None else 0), None

    # -- CLAP interface ----------------------------------------------------------------------
    def _fit(self, windows: np.ndarray) -> np.ndarray:
        w = np.asarray(windows, dtype=np.float32)
        if w.ndim == 1:
            w = w[None, :]
        if w.ndim != 2:
            raise ValueError(f"embed_windows expects [W, samples], got shape {w.shape}")
        n = self.clip_samples
        if w.shape[1] > n:
            w = w[:, :n]
        elif w.shape[1] < n:  # repeat-pad, as the original does for short clips
            w = np.tile(w, (1, -(-n // max(w.shape[1], 1))))[:, :n]
        return w

    def embed_windows(self, windows: np.ndarray) -> np.ndarray:
        w = self._fit(windows)
        if len(w) == 0:
            return np.zeros((0, self.dim), np.float32)
        with torch.inference_mode():
            emb = self.model.audio_encoder(torch.as_tensor(w, device=self.device))
        return l2_normalize(emb.float().cpu().numpy())

    def _tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        L = self.text_len
        if self._cfg["text"] == "gpt2":
            rows = []
            for t in texts:
                ids = self.tokenizer(t + " <|endoftext|>", add_special_tokens=True)["input_ids"]
                if len(ids) > L:  # keep the end-of-text token the embedding is read from
                    ids = ids[:L - 1] + [self.eot_id]
                rows.append(ids)
            ids = torch.full((len(rows), L), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), L), dtype=torch.long)
            for i, r in enumerate(rows):
                ids[i, :len(r)] = torch.tensor(r)
                mask[i, :len(r)] = 1
            return {"input_ids": ids, "attention_mask": mask}
        tok = self.tokenizer(texts, padding="max_length", truncation=True, max_length=L, return_tensors="pt")
        return {k: tok[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in tok}

    def encode_text(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        def encode_batch(batch: list[str]) -> np.ndarray:
            tok = {k: v.to(self.device) for k, v in self._tokenize(batch).items()}
            with torch.inference_mode():
                return self.model.caption_encoder(**tok, pad_id=self.pad_id).float().cpu().numpy()

        return encode_texts_batched(texts, batch_size, self.dim, encode_batch)

    # -- identity ----------------------------------------------------------------------------
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            tfiles = [self.text_folder / n for n in ("config.json", "tokenizer.json", "vocab.json", "merges.txt",
                                                     "vocab.txt", "tokenizer_config.json")]
            digest = files_digest([self.ckpt], tfiles)
            self._fingerprint = f"{self.name}:{digest}:sr{self.sample_rate}:clip{self.clip_seconds:g}:tok{self.text_len}"
        return self._fingerprint

    def describe(self) -> dict:
        d = super().describe()
        d.update({"backend": "msclap", "version": self.version, "checkpoint": str(self.ckpt),
                  "text_model": str(self.text_folder), "device": self.device})
        return d
