"""Audio front end shared by every CLAP: load, validate, resample, window.

Policy, in one place so every backend behaves the same:

- Output is float32 mono at the requested rate. Channels are averaged; resampling is polyphase
  (``scipy.signal.resample_poly``) with the up/down ratio reduced by their gcd, so the built-in
  Kaiser low-pass removes everything above the new Nyquist.
- Refused with :class:`AudioError` (a ``ValueError``, message names the file): missing file, empty or
  unreadable file, zero samples, a sample rate outside [1 kHz, 384 kHz], a clip longer than
  ``max_seconds`` (checked from the header, before decoding), and clips whose samples are mostly
  NaN/inf. Up to ``MAX_NONFINITE_FRACTION`` of NaN/inf samples are set to 0 (a few bad samples in a
  float WAV are damage worth surviving; a mostly-NaN file is not a sound).
- Silent clips are valid input.
- Windowing is deterministic: no random crop ever (the reference implementation's random crop at
  test time makes embeddings non-reproducible).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable

import numpy as np

__all__ = ["AudioError", "AUDIO_EXTENSIONS", "MIN_SAMPLE_RATE", "MAX_SAMPLE_RATE",
           "load_audio", "resample", "split_windows", "expand_paths"]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".oga", ".opus", ".aiff", ".aif")
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 384000
MAX_NONFINITE_FRACTION = 0.01


class AudioError(ValueError):
    """An input that cannot be turned into a waveform; the message says which and why."""


def _check_rate(sr, what: str) -> int:
    try:
        sr_int = int(sr)
    except (TypeError, ValueError):
        raise AudioError(f"{what}: sample rate {sr!r} is not a number") from None
    if sr_int != sr or not MIN_SAMPLE_RATE <= sr_int <= MAX_SAMPLE_RATE:
        raise AudioError(f"{what}: sample rate {sr!r} Hz is outside the supported range "
                         f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
    return sr_int


def _to_mono(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 2:
        # Channels are the short axis: [N, C] from soundfile, [C, N] from torch-style code.
        x = x.mean(axis=1 if x.shape[1] <= x.shape[0] else 0)
    elif x.ndim != 1:
        raise AudioError(f"{what}: expected a 1-D waveform or [samples, channels], got shape {x.shape}")
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float64) / float(np.iinfo(x.dtype).max)  # PCM integers to [-1, 1]
    elif not np.issubdtype(x.dtype, np.floating):
        raise AudioError(f"{what}: waveform dtype {x.dtype} is not numeric audio")
    return np.asarray(x, dtype=np.float32)


def _clean(x: np.ndarray, what: str) -> np.ndarray:
    if x.size == 0:
        raise AudioError(f"{what}: contains no samples (zero-length audio)")
    bad = ~np.isfinite(x)
    n_bad = int(bad.sum())
    if n_bad:
        if n_bad > MAX_NONFINITE_FRACTION * x.size:
            raise AudioError(f"{what}: {n_bad} of {x.size} samples are NaN or infinite; "
                             "the file is damaged")
        x = np.where(bad, 0.0, x).astype(np.float32)
    return x


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Anti-aliased polyphase resampling (float32 in, float32 out)."""
    if sr_in == sr_out:
        return np.asarray(x, dtype=np.float32)
    from scipy.signal import resample_poly
    g = math.gcd(int(sr_in), int(sr_out))
    y = resample_poly(x.astype(np.float64), int(sr_out) // g, int(sr_in) // g)
    return y.astype(np.float32)


def _read_file(path: Path, max_seconds: float) -> tuple[np.ndarray, int]:
    import soundfile as sf

    what = str(path)
    if not path.exists():
        raise AudioError(f"{what}: no such file")
    if path.is_dir():
        raise AudioError(f"{what}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{what}: file is empty (0 bytes)")
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError for unknown formats
        raise AudioError(f"{what}: not a readable audio file ({e}); supported formats are those "
                         "of libsndfile (WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF)") from None
    sr = _check_rate(info.samplerate, what)
    if info.frames <= 0:
        raise AudioError(f"{what}: contains no samples (zero-length audio)")
    duration = info.frames / sr
    if duration > max_seconds:
        raise AudioError(f"{what}: {duration:.1f} s long, more than the limit of {max_seconds:g} s; "
                         "split it or raise max_seconds")
    try:
        data, sr_read = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(f"{what}: decoding failed ({e}); the file is damaged or truncated") from None
    return data, int(sr_read)


def load_audio(src, sample_rate: int, max_seconds: float = 3600.0) -> np.ndarray:
    """Float32 mono waveform at ``sample_rate`` from a path, a 1-D array (already at
    ``sample_rate``) or a ``(waveform, sr)`` tuple. Raises :class:`AudioError` on bad input."""
    sample_rate = _check_rate(sample_rate, "target")
    if isinstance(src, (str, os.PathLike)):
        what = str(src)
        data, sr = _read_file(Path(src).expanduser(), max_seconds)
    elif isinstance(src, tuple):
        if len(src) != 2:
            raise AudioError("audio tuple must be (waveform, sample_rate)")
        what = "waveform"
        data, sr = src[0], _check_rate(src[1], "waveform")
    elif isinstance(src, np.ndarray):
        what, data, sr = "waveform", src, sample_rate
    else:
        raise AudioError(f"unsupported audio input of type {type(src).__name__}: "
                         "pass a path, a numpy waveform, or (waveform, sample_rate)")
    x = _clean(_to_mono(data, what), what)
    if x.size / sr > max_seconds:
        raise AudioError(f"{what}: {x.size / sr:.1f} s long, more than the limit of {max_seconds:g} s")
    return resample(x, sr, sample_rate)


def split_windows(wave: np.ndarray, sample_rate: int, clip_seconds: float,
                  hop_seconds: float | None = None):
    """Cut a waveform into fixed-length windows, deterministically.

    - Shorter than one window: repeated end to end and cut to one window (what CLAP models saw in
      training for short clips); its end time is the real end of the sound.
    - Longer: windows every ``hop_seconds`` (default: back to back); if the last one stops short of
      the end, one more window is aligned to the end of the clip, so every sample is covered
      without inventing padding.

    Returns ``(windows [W, clip_samples] float32, starts, ends)`` with times in seconds.
    """
    x = np.asarray(wave, dtype=np.float32)
    if x.ndim != 1 or x.size == 0:
        raise AudioError(f"split_windows needs a non-empty 1-D waveform, got shape {x.shape}")
    clip = int(round(clip_seconds * sample_rate))
    hop = clip if hop_seconds is None else int(round(hop_seconds * sample_rate))
    if clip <= 0 or hop <= 0:
        raise ValueError(f"clip_seconds and hop_seconds must be positive (got {clip_seconds}, {hop_seconds})")
    n = x.size
    if n <= clip:
        reps = -(-clip // n)
        return np.tile(x, reps)[:clip][None, :].copy(), [0.0], [n / sample_rate]
    starts = list(range(0, n - clip + 1, hop))
    if starts[-1] + clip < n:
        starts.append(n - clip)
    windows = np.stack([x[s:s + clip] for s in starts])
    return windows, [s / sample_rate for s in starts], [(s + clip) / sample_rate for s in starts]


def expand_paths(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Directories become their audio files (recursive, sorted, by extension, case-insensitive);
    anything else is passed through as given so the caller reports it per file."""
    out: list[Path] = []
    for p in paths:
        p = Path(p).expanduser()
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*")
                              if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS))
        else:
            out.append(p)
    return out
