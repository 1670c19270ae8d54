"""What the server refuses, and why, before any audio is decoded.

- ``check_audio``: reads the header only; audio whose decoded size (frames x channels, and its
  length once resampled) would pass the sample budget is refused, so a small compressed upload
  cannot make the server allocate gigabytes.
- ``resolve_allowed``: the ``path`` field, off unless the server was started with ``--allow-dir``;
  one identical answer for a file that is missing, unreadable or outside the folder, so the port
  does not tell anyone which files exist.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["AudioRefused", "PathRefused", "AudioHeader", "check_audio", "resolve_allowed",
           "PATH_REFUSED", "default_budget"]

PATH_REFUSED = "path: no readable audio file by that name in the folder this server shares"


class AudioRefused(ValueError):
    """Client audio the server will not decode; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class PathRefused(ValueError):
    """The ``path`` field refused: 403 when the server shares no folder, else always the same 404."""

    def __init__(self, message: str, status: int = 404):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class AudioHeader:
    frames: int
    channels: int
    samplerate: int
    duration: float


def default_budget() -> int:
    """The budget the command line decodes under (mats.audio), so CLI and API agree."""
    from ..audio import decoded_samples_budget
    return decoded_samples_budget()


def check_audio(path: Path, name: str, budget: int, target_rate: int,
                max_seconds: float | None = None) -> AudioHeader:
    """The header of ``path`` (an upload or an allowed file) if it may be decoded; ``name`` is what
    the client calls it (never the server's temporary path). ``max_seconds``: the CLAP's longest input."""
    from ..audio import AudioError, probe_audio
    try:
        info = probe_audio(path)
    except AudioError as e:
        raise AudioRefused(str(e).replace(str(path), name)) from None
    resampled = math.ceil(info.frames * target_rate / info.samplerate)
    if max(info.decoded_samples, resampled) > budget:
        raise AudioRefused(
            f"{name}: too large to decode: {info.frames} frames x {info.channels} channels at "
            f"{info.samplerate} Hz ({info.duration:.1f} s) is {max(info.decoded_samples, resampled):,} "
            f"samples, over this server's budget of {budget:,}; send a shorter clip", status=413)
    if max_seconds is not None and info.duration > max_seconds:
        raise AudioRefused(f"{name}: {info.duration:.1f} s long, more than this model's limit of {max_seconds:g} s; "
                           "send a shorter clip", status=413)
    return AudioHeader(info.frames, info.channels, info.samplerate, info.duration)


def resolve_allowed(raw: str, allow_dir: Path | None) -> Path:
    """The real file ``raw`` names under ``allow_dir`` (relative names are taken from there).
    Symbolic links are followed before the check, so a link cannot lead out of the folder; ``~``
    is just a character. Every refusal is the same :class:`PathRefused`."""
    if allow_dir is None:
        raise PathRefused("path: this server does not read files by path; upload the audio instead "
                          "(the operator can enable it for one folder with --allow-dir)", status=403)
    try:
        if "\x00" in raw or not raw.strip():
            raise OSError
        root = allow_dir.resolve(strict=True)
        candidate = Path(raw) if os.path.isabs(raw) else root / raw
        real = candidate.resolve(strict=True)
        if not real.is_relative_to(root) or not real.is_file():
            raise OSError
        with open(real, "rb"):  # readable by this process, not just present
            pass
    except (OSError, ValueError, RuntimeError):
        raise PathRefused(PATH_REFUSED) from None
    return real
