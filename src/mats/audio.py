"""Audio front end shared by every CLAP: probe, load, validate, resample, window.

Policy, in one place so every backend (and the HTTP server) behaves the same:

- Output is float32 mono at the requested rate. Channels are averaged; resampling is polyphase
  (``scipy.signal.resample_poly``) with the up/down ratio reduced by their gcd, so the built-in
  Kaiser low-pass removes everything above the new Nyquist.
- Refused with :class:`AudioError` (a ``ValueError``, message names the file): missing file, empty or
  unreadable file, a file that cannot be reached (permission denied, symbolic-link loop, name too
  long), zero samples, a sample rate outside [1 kHz, 384 kHz], a clip longer than ``max_seconds``,
  and data cut short of what the header promises (a truncated download). Duration and size are
  checked from the header, before anything is decoded.
- Decoded-size budget: a file whose ``frames x channels`` passes :data:`MAX_DECODED_SAMPLES` (or
  whose resampled length would) is refused before decoding. The default, 57,600,000 samples (one
  hour of 16 kHz mono; 230 MB as float32), keeps ``load_audio`` under about 1 GB per clip whatever
  the rates; the environment variable ``MATS_MAX_DECODED_SAMPLES`` or the ``max_decoded_samples``
  argument changes it. Allowed files are decoded in blocks and mixed to mono block by block, so the
  multi-channel data at the source rate is never held whole.
- Amplitude: PCM integer formats are bounded by construction. Float data has full scale +-1 and may
  carry headroom; samples within +-``MAX_ABS_AMPLITUDE`` (8, i.e. +18 dBFS) pass unchanged. A sample
  that is NaN, infinite or beyond that bound is unusable (a bit flip in a float exponent, not a
  sound): up to ``MAX_NONFINITE_FRACTION`` (1 %) of unusable samples are set to 0 (a few damaged
  samples are worth surviving), more and the file is refused as damaged. Unusable samples are
  removed before channels are mixed, so +-3e38 never overflows into inf or NaN warnings.
- Silent clips are valid input.
- Windowing is deterministic: no random crop ever (the reference implementation's random crop at
  test time makes embeddings non-reproducible).
- Streaming (:func:`stream_audio`, what long recordings are read with): the same checks and the same
  samples, handed over in blocks at the target rate (polyphase resampling with each block's filter
  context carried over), so memory is a block, not the file. The limit is then work, not memory: a
  duration of at most :data:`MAX_STREAM_SECONDS` (six hours; ``$MATS_MAX_STREAM_SECONDS`` or the
  ``max_seconds`` argument changes it). A file whose data ends before its header says (a truncated
  download) is not refused: the stream ends where the good data ends and says so (``stopped_at``,
  ``damage``).
"""

from __future__ import annotations

import errno
import io
import math
import os
import re
import stat as stat_mod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

__all__ = ["AudioError", "AudioInfo", "AUDIO_EXTENSIONS", "MIN_SAMPLE_RATE", "MAX_SAMPLE_RATE",
           "MAX_DECODED_SAMPLES", "MAX_ABS_AMPLITUDE", "MAX_NONFINITE_FRACTION", "decoded_samples_budget",
           "probe_audio", "load_audio", "resample", "split_windows", "expand_paths", "expand_audio_args",
           "describe_os_error", "no_audio_files_error", "AudioStream", "stream_audio", "MAX_STREAM_SECONDS",
           "max_stream_seconds"]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".oga", ".opus", ".aiff", ".aif")
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 384000
MAX_NONFINITE_FRACTION = 0.01
MAX_ABS_AMPLITUDE = 8.0
# One hour of 16 kHz mono. The peak of load_audio is about 16 bytes per budgeted sample in the
# worst case (float64 copy for the resampler plus its output), so this stays under ~1 GB.
MAX_DECODED_SAMPLES = 57_600_000
BLOCK_FRAMES = 1 << 16  # frames decoded at a time; small enough to be cheap next to the mono copy
# The longest recording stream_audio reads (events of long recordings): time, not memory, is the limit.
MAX_STREAM_SECONDS = 6 * 3600.0
# A file no longer than this is decoded and resampled in one piece by stream_audio, exactly as load_audio
# does (bit-identical samples); longer ones are resampled block by block (equal up to float rounding).
STREAM_WHOLE_SECONDS = 300.0


class AudioError(ValueError):
    """An input that cannot be turned into a waveform; the message says which and why."""


@dataclass(frozen=True)
class AudioInfo:
    """What the header of an audio file says, read without decoding it."""
    frames: int
    channels: int
    samplerate: int
    format: str  # libsndfile's format and subtype, e.g. "WAV/PCM_16"
    duration: float  # seconds

    @property
    def decoded_samples(self) -> int:
        return self.frames * self.channels


def decoded_samples_budget(max_decoded_samples: int | None = None) -> int:
    """The budget in force: the argument, else ``$MATS_MAX_DECODED_SAMPLES``, else the default."""
    if max_decoded_samples is not None:
        budget = max_decoded_samples
    else:
        env = os.environ.get("MATS_MAX_DECODED_SAMPLES", "").strip()
        if not env:
            return MAX_DECODED_SAMPLES
        try:
            budget = int(float(env))
        except ValueError:
            raise AudioError(f"MATS_MAX_DECODED_SAMPLES={env!r} is not a number of samples") from None
    if budget <= 0:
        raise AudioError(f"the decoded-size budget must be a positive number of samples, got {budget}")
    return int(budget)


def describe_os_error(e: OSError) -> str:
    """Why a path cannot be used, in words (without the file name, which the caller puts first)."""
    code = e.errno
    if code == errno.ENAMETOOLONG:
        longest = max((len(part.encode("utf-8", "surrogateescape"))
                       for part in Path(str(e.filename or "")).parts), default=0)
        return (f"file name too long ({longest} bytes in one component; file systems allow 255) "
                "- rename the file")
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied (the file is not readable, or a folder on its path is not searchable)"
    if code == errno.ELOOP:
        return "symbolic link loop (following the link leads back to it)"
    if code == errno.ENOENT:
        return "no such file"
    if code == errno.ENOTDIR:
        return "no such file (a part of the path is not a folder)"
    if code == errno.EISDIR:
        return "is a directory, not an audio file"
    return e.strerror or type(e).__name__


def _check_rate(sr, what: str) -> int:
    try:
        sr_int = int(sr)
    except (TypeError, ValueError, OverflowError):
        raise AudioError(f"{what}: sample rate {sr!r} is not a number") from None
    if sr_int != sr or not MIN_SAMPLE_RATE <= sr_int <= MAX_SAMPLE_RATE:
        raise AudioError(f"{what}: sample rate {sr!r} Hz is outside the supported range "
                         f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
    return sr_int


def _drop_unusable(x: np.ndarray) -> np.ndarray:
    """Float data: NaN, inf and |x| > MAX_ABS_AMPLITUDE become NaN, so mixing cannot overflow and
    the one count in ``_clean`` sees them all."""
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(x) <= MAX_ABS_AMPLITUDE)
    if bad.any():
        x = np.where(bad, np.float32(np.nan), x).astype(x.dtype, copy=False)
    return x


def _to_mono(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim not in (1, 2):
        raise AudioError(f"{what}: expected a 1-D waveform or [samples, channels], got shape {x.shape}")
    if np.issubdtype(x.dtype, np.floating):
        x = _drop_unusable(x)
    if x.ndim == 2:
        # Channels are the short axis: [N, C] from soundfile, [C, N] from torch-style code.
        x = x.mean(axis=1 if x.shape[1] <= x.shape[0] else 0)
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
            raise AudioError(f"{what}: {n_bad} of {x.size} samples are NaN, infinite or beyond "
                             f"+-{MAX_ABS_AMPLITUDE:g} (float full scale is +-1); the file is damaged")
        x = np.where(bad, 0.0, x).astype(np.float32)
    return x


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Anti-aliased polyphase resampling (float32 in, float32 out)."""
    if sr_in == sr_out:
        return np.asarray(x, dtype=np.float32)
    g = math.gcd(int(sr_in), int(sr_out))
    return resample_poly(x, int(sr_out) // g, int(sr_in) // g).astype(np.float32)


def _polyphase_filter(up: int, down: int) -> tuple[np.ndarray, int]:
    """scipy.signal.resample_poly's default low-pass (firwin: Kaiser window with beta 5, cutoff at the
    lower Nyquist rate, ``10 * max(up, down)`` taps either side, gain ``up``) as polyphase rows
    ``[up, taps]``, row p holding taps p, p + up, ... in reverse (the order they meet the signal);
    and its half length."""
    rate = max(up, down)
    half_len = 10 * rate
    m = np.arange(2 * half_len + 1) - float(half_len)
    h = (1.0 / rate) * np.sinc(m / rate) * np.kaiser(2 * half_len + 1, 5.0)
    h = h / h.sum() * up
    taps = -(-len(h) // up)
    rows = np.zeros(up * taps)
    rows[:len(h)] = h
    return rows.reshape(taps, up).T[:, ::-1].copy(), half_len


def resample_poly(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """``scipy.signal.resample_poly(x, up, down)`` with its default window and zero padding, in numpy
    (float64 out, equal to scipy's up to float rounding, as fast): scipy.signal costs a fresh process
    half a second to import, more than resampling a clip takes. ``up`` and ``down`` are coprime.

    Output ``o`` is the filter centred on up-sampled position ``n = o * down + half_len``: it reads
    ``x[n // up - t] * h[n % up + t * up]``. Outputs ``up`` apart share the phase ``n % up`` and read
    ``down`` samples further on, so each phase is one strided matrix-vector product."""
    if int(up) != up or int(down) != down or up < 1 or down < 1 or math.gcd(int(up), int(down)) != 1:
        raise ValueError(f"resample_poly needs coprime positive integer factors, got up={up!r}, down={down!r}")
    up, down = int(up), int(down)
    n_out = -(-len(x) * up // down)
    rows, half_len = _polyphase_filter(up, down)
    taps = rows.shape[1]
    # x[j] sits at padded[j + taps]; zeros beyond either end are the signal's zero padding
    padded = np.zeros(taps + len(x) + taps + half_len // up + 2)
    padded[taps:taps + len(x)] = x
    windows = np.lib.stride_tricks.sliding_window_view(padded, taps)  # windows[s] = padded[s : s + taps]
    y = np.empty(n_out)
    for r in range(min(up, n_out)):
        n = r * down + half_len
        first = n // up + 1  # windows[first] ends at x[n // up]
        count = len(range(r, n_out, up))
        y[r::up] = windows[first:first + (count - 1) * down + 1:down] @ rows[n % up]
    return y


def _is_file_like(src) -> bool:
    return isinstance(src, (bytes, bytearray, memoryview)) or hasattr(src, "read")


class _Bytes(io.BytesIO):
    """In-memory audio for libsndfile's virtual I/O: a damaged header can make it seek before the
    start; that lands on 0 (and fails as a short read) instead of raising inside a C callback."""

    def seek(self, pos, whence=0):
        try:
            return super().seek(pos, whence)
        except ValueError:
            if self.closed:
                raise
            return super().seek(0)


def _source(src):
    """(what soundfile opens, the name used in messages) for a path, bytes or a binary file."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return _Bytes(bytes(src)), "<bytes>"
    if hasattr(src, "read"):
        name = getattr(src, "name", None)
        return src, str(name) if isinstance(name, (str, os.PathLike)) else "<stream>"
    path = Path(src).expanduser()
    return path, str(src)


def _check_path(path: Path, what: str) -> None:
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ENOENT and os.path.islink(path):
            raise AudioError(f"{what}: broken symbolic link (it points to {os.readlink(path)}, "
                             "which does not exist)") from None
        raise AudioError(f"{what}: {describe_os_error(e)}") from None
    if stat_mod.S_ISDIR(st.st_mode):
        if not os.access(path, os.R_OK | os.X_OK):
            raise AudioError(f"{what}: is a folder that cannot be listed (permission denied)")
        if not _audio_files_under(path):
            raise AudioError(f"{what}: is a directory with no audio files in it "
                             f"(looked for {', '.join(AUDIO_EXTENSIONS)})")
        raise AudioError(f"{what}: is a directory, not an audio file")
    if not stat_mod.S_ISREG(st.st_mode):
        raise AudioError(f"{what}: not a regular file (a device, pipe or socket)")
    if st.st_size == 0:
        raise AudioError(f"{what}: file is empty (0 bytes)")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise AudioError(f"{what}: {describe_os_error(e)}") from None


def _fs_name(path: Path) -> bytes:
    # The file system's own bytes: soundfile encodes str names strictly, which fails for names
    # that are not valid UTF-8 (held by Python as surrogate escapes).
    return os.fsencode(path)


def _open_info(target, what: str):
    import soundfile as sf
    if hasattr(target, "seek"):
        try:
            target.seek(0)
        except (OSError, ValueError):
            pass
    try:
        return sf.info(target if hasattr(target, "read") else _fs_name(target))
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError for unknown formats
        raise AudioError(f"{what}: not a readable audio file ({_one_line(e)}); supported formats are "
                         "those of libsndfile (WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF)") from None


def _one_line(e: Exception) -> str:
    # libsndfile's own words, without soundfile's "Error opening <name>:" (the caller names the file)
    msg = getattr(e, "error_string", None) or str(e)
    if "does not exist or is not a regular file" in msg:  # what it says when no decoder takes a file
        msg = "format not recognised"
    return " ".join(msg.split()) or type(e).__name__


def _header(target, what: str):
    """(libsndfile's info, AudioInfo) with the checks that hold whatever the limits."""
    if isinstance(target, Path):
        _check_path(target, what)
    sf_info = _open_info(target, what)
    sr = _check_rate(sf_info.samplerate, what)
    if sf_info.frames <= 0:
        raise AudioError(f"{what}: contains no samples (zero-length audio)")
    if sf_info.channels <= 0:
        raise AudioError(f"{what}: the header declares {sf_info.channels} channels")
    return sf_info, AudioInfo(frames=int(sf_info.frames), channels=int(sf_info.channels), samplerate=sr,
                              format=f"{sf_info.format}/{sf_info.subtype}", duration=sf_info.frames / sr)


def probe_audio(path) -> AudioInfo:
    """Frames, channels, rate, format and duration from the header of ``path`` (a path, bytes or a
    binary file object), without decoding. Raises :class:`AudioError` for files that cannot be
    loaded whatever the limits: unreachable, empty, unreadable, an unsupported rate, no samples."""
    target, what = _source(path)
    return _header(target, what)[1]


# libsndfile clamps a WAV/AIFF data chunk that runs past the end of the file and only logs it:
#   "data : 96000 (should be 31970)". Streaming writers put 0 or 0xFFFFFFFF there on purpose.
_SHORT_CHUNK = re.compile(r"^\s*(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_STREAMING_SIZES = {0, 0xFFFFFFFF, 0x7FFFFFFF, 0xFFFFFFFF - 8}


def _check_truncation(sf_info, what: str) -> None:
    m = _SHORT_CHUNK.search(getattr(sf_info, "extra_info", "") or "")
    if m:
        declared, present = int(m.group(1)), int(m.group(2))
        if declared not in _STREAMING_SIZES and present < declared:
            raise AudioError(f"{what}: truncated: the header promises {declared} bytes of audio data but "
                             f"the file holds only {present} ({100 * present / declared:.0f} %); "
                             "the download or copy was cut short")


def _mix(block: np.ndarray) -> np.ndarray:
    # mean even for one channel: it turns -0.0 into 0.0, as the whole-file decode always did
    return _drop_unusable(block).mean(axis=1)


def _mpeg_count_is_exact(target) -> bool:
    """An MPEG file states its length only in a Xing/Info/VBRI frame; without one libsndfile
    estimates it from the bitrate (often 10-20 % off), and a short decode is no sign of damage."""
    try:
        if hasattr(target, "read"):
            target.seek(0)
            head = target.read(1 << 14)
        else:
            with open(target, "rb") as f:
                head = f.read(1 << 14)
    except (OSError, ValueError):
        return False
    return any(tag in head for tag in (b"Xing", b"Info", b"VBRI"))


def _decode_mono(target, what: str, info: AudioInfo) -> np.ndarray:
    """Decode in blocks, mixing each block to mono, into one float32 array of ``info.frames``
    (exactly what a whole-file ``sf.read`` returns: it, too, stops at the header's count)."""
    import soundfile as sf
    if hasattr(target, "seek"):
        target.seek(0)
    mono = np.empty(info.frames, np.float32)
    pos = 0
    # libsndfile's MPEG decoder rounds differently depending on where reads split the stream, so an
    # MP3 is read in one piece (held once, within the budget) to stay bit-identical.
    block_frames = info.frames if "MPEG" in info.format else BLOCK_FRAMES
    try:
        with sf.SoundFile(target if hasattr(target, "read") else _fs_name(target)) as f:
            if f.seekable():
                f.seek(0)  # as sf.read does; MPEG decodes differently without this first seek
            while pos < info.frames:
                block = f.read(min(block_frames, info.frames - pos), dtype="float32", always_2d=True)
                n = len(block)
                if n == 0:
                    break
                mono[pos:pos + n] = _mix(block)
                pos += n
    except Exception as e:
        raise AudioError(f"{what}: decoding failed ({_one_line(e)}); the file is damaged or truncated") from None
    # Every other format states its length exactly; an MPEG Xing count may be off by a frame or so.
    if "MPEG" in info.format:
        slack = max(2304, info.frames // 100) if _mpeg_count_is_exact(target) else info.frames
    else:
        slack = 0
    if pos < info.frames - slack:
        raise AudioError(f"{what}: truncated: the header promises {info.frames} frames but the data "
                         f"holds only {pos} ({100 * pos / info.frames:.0f} %); the file was cut short")
    return mono[:pos]


def _read_file(src, max_seconds: float, sample_rate: int,
               max_decoded_samples: int | None) -> tuple[np.ndarray, int, str]:
    target, what = _source(src)
    sf_info, info = _header(target, what)
    sr = info.samplerate
    if info.duration > max_seconds:
        raise AudioError(f"{what}: {info.duration:.1f} s long, more than the limit of {max_seconds:g} s; "
                         "split it or raise max_seconds")
    budget = decoded_samples_budget(max_decoded_samples)
    out_samples = math.ceil(info.frames * sample_rate / sr)
    if info.decoded_samples > budget or out_samples > budget:
        raise AudioError(
            f"{what}: too large to decode: {info.frames} frames x {info.channels} channels at {sr} Hz "
            f"({info.duration:.1f} s) is {max(info.decoded_samples, out_samples):,} samples, more than the "
            f"budget of {budget:,}; split the file or raise MATS_MAX_DECODED_SAMPLES")
    _check_truncation(sf_info, what)
    return _decode_mono(target, what, info), sr, what


def load_audio(src, sample_rate: int, max_seconds: float = 3600.0,
               max_decoded_samples: int | None = None) -> np.ndarray:
    """Float32 mono waveform at ``sample_rate`` from a path, bytes or a binary file object (decoded
    by libsndfile), a 1-D array (already at ``sample_rate``) or a ``(waveform, sr)`` tuple.

    ``max_decoded_samples`` bounds ``frames x channels`` of a file (and its resampled length),
    checked from the header before decoding; None means :func:`decoded_samples_budget`'s default.
    Raises :class:`AudioError` on bad input."""
    sample_rate = _check_rate(sample_rate, "target")
    if isinstance(src, (str, os.PathLike)) or _is_file_like(src):
        data, sr, what = _read_file(src, max_seconds, sample_rate, max_decoded_samples)
        x = _clean(data, what)
    else:
        if isinstance(src, tuple):
            if len(src) != 2:
                raise AudioError("audio tuple must be (waveform, sample_rate)")
            what = "waveform"
            data, sr = src[0], _check_rate(src[1], "waveform")
        elif isinstance(src, np.ndarray):
            what, data, sr = "waveform", src, sample_rate
        else:
            raise AudioError(f"unsupported audio input of type {type(src).__name__}: "
                             "pass a path, bytes, a numpy waveform, or (waveform, sample_rate)")
        x = _clean(_to_mono(data, what), what)
    if x.size / sr > max_seconds:
        raise AudioError(f"{what}: {x.size / sr:.1f} s long, more than the limit of {max_seconds:g} s")
    return resample(x, sr, sample_rate)


def max_stream_seconds(max_seconds: float | None = None) -> float:
    """The longest recording :func:`stream_audio` reads: the argument, else ``$MATS_MAX_STREAM_SECONDS``,
    else :data:`MAX_STREAM_SECONDS`."""
    if max_seconds is None:
        env = os.environ.get("MATS_MAX_STREAM_SECONDS", "").strip()
        if not env:
            return MAX_STREAM_SECONDS
        try:
            max_seconds = float(env)
        except ValueError:
            raise AudioError(f"MATS_MAX_STREAM_SECONDS={env!r} is not a number of seconds") from None
    max_seconds = float(max_seconds)
    if not math.isfinite(max_seconds) or max_seconds <= 0:
        raise AudioError(f"the longest streamed recording must be a positive number of seconds, got {max_seconds:g}")
    return max_seconds


class _BlockResampler:
    """``resample`` of a signal handed over in blocks: each call returns the output samples whose
    polyphase filter lies inside the input seen so far. Every segment starts at a multiple of
    ``down`` input samples, so its outputs fall on the whole signal's output grid with the same
    filter taps; the result equals ``resample`` of the whole signal up to float rounding."""

    def __init__(self, sr_in: int, sr_out: int):
        g = math.gcd(int(sr_in), int(sr_out))
        self.up, self.down = int(sr_out) // g, int(sr_in) // g
        half_len = 10 * max(self.up, self.down)  # resample_poly's default filter half length (up-sampled)
        self.context = half_len // self.up + 2  # input samples either side an output depends on
        self.buf = np.zeros(0, np.float32)
        self.buf_start = 0  # input index of buf[0]
        self.seen = 0  # input samples handed over
        self.done = 0  # output samples returned

    def __call__(self, x: np.ndarray, final: bool = False) -> np.ndarray:
        self.buf = np.concatenate([self.buf, np.asarray(x, np.float32)])
        self.seen += len(x)
        if final:
            end = -(-self.seen * self.up // self.down)
        else:
            end = max(self.done, (self.seen - self.context) * self.up // self.down)
        if end <= self.done:
            return np.zeros(0, np.float32)
        first_input = self.done * self.down // self.up
        s0 = max(0, (first_input - self.context) // self.down * self.down)
        s0 = max(s0, self.buf_start)
        y = resample_poly(self.buf[s0 - self.buf_start:], self.up, self.down)
        offset = s0 * self.up // self.down
        out = y[self.done - offset:end - offset].astype(np.float32)
        self.done = end
        # keep only what the next outputs can reach back to
        keep = max(self.buf_start, (self.done * self.down // self.up - self.context) // self.down * self.down)
        self.buf, self.buf_start = self.buf[keep - self.buf_start:], keep
        return out


class AudioStream:
    """A recording as float32 mono blocks at ``sample_rate`` (iterate once). ``info``: its header (None for
    a waveform given in memory). Once iterated: ``seconds`` read; when the data ended before the header
    said (a truncated file), ``stopped_at`` (the seconds of good audio) and ``damage`` (why, in words)."""

    def __init__(self, blocks, sample_rate: int, what: str, info: AudioInfo | None = None):
        self._blocks, self.sample_rate, self.what, self.info = blocks, sample_rate, what, info
        self.samples = 0
        self.stopped_at: float | None = None
        self.damage: str | None = None

    def __iter__(self):
        for block in self._blocks(self):
            self.samples += block.size
            yield block

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate


def stream_audio(src, sample_rate: int, max_seconds: float | None = None,
                 max_decoded_samples: int | None = None, block_frames: int = BLOCK_FRAMES) -> AudioStream:
    """What :func:`load_audio` returns, handed over in blocks (see the module's "Streaming"); nothing is
    decoded before the first block is asked for. ``max_seconds``: :func:`max_stream_seconds`;
    ``max_decoded_samples`` (optional) also bounds ``frames x channels`` and the resampled length.
    Refused with :class:`AudioError` from the header, as :func:`load_audio` refuses; damage found while
    decoding ends the stream early instead (``stopped_at``, ``damage``), and a stream with no good sample
    before the damage is refused."""
    sample_rate = _check_rate(sample_rate, "target")
    limit = max_stream_seconds(max_seconds)
    if not (isinstance(src, (str, os.PathLike)) or _is_file_like(src)):
        wave = load_audio(src, sample_rate, max_seconds=limit)  # already in memory: nothing to stream
        return AudioStream(lambda stream: iter([wave]), sample_rate, "waveform")
    target, what = _source(src)
    sf_info, info = _header(target, what)
    if info.duration > limit:
        raise AudioError(f"{what}: {info.duration:.1f} s long, more than the limit of {limit:g} s for a streamed "
                         "recording; split it or raise MATS_MAX_STREAM_SECONDS")
    out_samples = math.ceil(info.frames * sample_rate / info.samplerate)
    if max_decoded_samples is not None and max(info.decoded_samples, out_samples) > max_decoded_samples:
        raise AudioError(f"{what}: too large: {info.frames} frames x {info.channels} channels at {info.samplerate} Hz "
                         f"({info.duration:.1f} s) is {max(info.decoded_samples, out_samples):,} samples, more than "
                         f"the budget of {max_decoded_samples:,}")
    try:
        _check_truncation(sf_info, what)
        cut = None
    except AudioError as e:
        cut = str(e).split(": ", 1)[1]

    def blocks(stream: AudioStream):
        yield from _stream_blocks(target, what, info, sample_rate, block_frames, stream)
        if cut and not stream.damage:
            stream.damage = cut
        if stream.damage:
            stream.stopped_at = stream.samples / sample_rate
            if not stream.samples:
                raise AudioError(f"{what}: no audio could be read before the damage ({stream.damage})")
    return AudioStream(blocks, sample_rate, what, info)


def _stream_blocks(target, what: str, info: AudioInfo, sample_rate: int, block_frames: int, stream: AudioStream):
    import soundfile as sf
    sr = info.samplerate
    whole = info.duration <= STREAM_WHOLE_SECONDS
    if whole and "MPEG" in info.format:
        block_frames = info.frames  # one piece, as load_audio reads it (MPEG rounds by read size)
    resampler = None if sr == sample_rate or whole else _BlockResampler(sr, sample_rate)
    held: list[np.ndarray] = []  # a short file's blocks, resampled at once as load_audio does
    pos = bad = 0
    if hasattr(target, "seek"):
        target.seek(0)
    try:
        with sf.SoundFile(target if hasattr(target, "read") else _fs_name(target)) as f:
            if f.seekable():
                f.seek(0)
            while pos < info.frames:
                block = f.read(min(block_frames, info.frames - pos), dtype="float32", always_2d=True)
                if len(block) == 0:
                    break
                mono = _mix(block)
                pos += len(block)
                unusable = ~np.isfinite(mono)
                bad += int(unusable.sum())
                if bad > MAX_NONFINITE_FRACTION * info.frames:
                    raise AudioError(f"{what}: more than {MAX_NONFINITE_FRACTION:.0%} of its samples are NaN, "
                                     f"infinite or beyond +-{MAX_ABS_AMPLITUDE:g}; the file is damaged")
                if unusable.any():
                    mono = np.where(unusable, 0.0, mono).astype(np.float32)
                if whole:
                    held.append(mono)
                elif resampler is None:
                    yield mono
                else:
                    out = resampler(mono)
                    if out.size:
                        yield out
    except AudioError:
        raise
    except Exception as e:  # noqa: BLE001 - damage mid-stream: what came before it is kept
        stream.damage = f"decoding failed ({_one_line(e)}); the file is damaged or truncated"
    if whole and held:
        yield resample(np.concatenate(held), sr, sample_rate)
    elif resampler is not None:
        out = resampler(np.zeros(0, np.float32), final=True)
        if out.size:
            yield out
    slack = 0
    if "MPEG" in info.format:
        slack = max(2304, info.frames // 100) if _mpeg_count_is_exact(target) else info.frames
    if pos < info.frames - slack and stream.damage is None:
        stream.damage = (f"truncated: the header promises {info.frames} frames but the data holds only {pos} "
                         f"({100 * pos / info.frames:.0f} %)")


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


def expand_paths(paths: Iterable[str | os.PathLike], keep_empty_dirs: bool = False) -> list[Path]:
    """Directories become their audio files (recursive, sorted, by extension, case-insensitive);
    anything else is passed through as given so the caller reports it per file. With
    ``keep_empty_dirs`` a folder holding no audio file is passed through as itself too (the loader
    then says so), instead of vanishing from the batch.

    Never raises for one bad entry: inside a folder, every entry with an audio extension that is
    not a folder is kept even when it cannot be read (a symbolic-link loop, a broken link, a
    mode-000 file), and a sub-folder that cannot be listed is kept as itself, so the loader names
    each of them instead of skipping them silently."""
    out: list[Path] = []
    for p in paths:
        p = Path(p).expanduser()
        try:
            is_dir = p.is_dir()
        except OSError:  # e.g. a parent without search permission, a name too long
            is_dir = False
        if is_dir:
            found = sorted(_audio_files_under(p))
            out.extend(found if found or not keep_empty_dirs else [p])
        else:
            out.append(p)
    return out


def _audio_files_under(folder: Path) -> list[Path]:
    found: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return [folder]  # reported by the loader ("cannot be listed")
    for entry in entries:
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir()  # follows links; a loop or broken link is not a folder
        except OSError:
            is_dir = False
        if is_dir:
            if not entry.is_symlink():  # as rglob: linked folders are not walked (no loops)
                found.extend(_audio_files_under(path))
        elif path.suffix.lower() in AUDIO_EXTENSIONS:
            found.append(path)
    return found


def expand_audio_args(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """What a command does with its PATH arguments: :func:`expand_paths` keeping folders without
    audio (each is then reported in the batch); refused with :func:`no_audio_files_error` when
    nothing but such folders is left."""
    paths = list(paths)
    files = expand_paths(paths, keep_empty_dirs=True)
    if all(_is_dir(f) for f in files):
        raise no_audio_files_error(paths)
    return files


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def no_audio_files_error(paths: Iterable[str | os.PathLike]) -> AudioError:
    """The error for a command whose paths held no audio file, naming them."""
    names = ", ".join(str(p) for p in paths) or "(no paths given)"
    return AudioError(f"no audio files found in {names} (looked for {', '.join(AUDIO_EXTENSIONS)})")
