"""The bad inputs of the bad-input matrix, built as real files on disk.

Each audio kind is a file (or a path that cannot be opened) next to good, real recordings; the
expected message is a pattern that must follow the file's own name in the error line. Corpus
kinds are JSONL files with the line the message must name.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf


@dataclass
class Kind:
    id: str
    path: Path
    pattern: str  # regex the message must match after "<path>: "
    needs_permissions: bool = False  # only bad when file modes bind the process (not plain root)


def _tone(seconds=1.0, sr=16000, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return np.stack([x] * channels, 1) if channels > 1 else x


def _write(path, x, sr, fmt=None, subtype=None):
    sf.write(str(path), x, sr, format=fmt, subtype=subtype)
    return path


def _cut_to_third(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def _patch(path, offset, value: bytes):
    data = bytearray(path.read_bytes())
    data[offset:offset + len(value)] = value
    path.write_bytes(bytes(data))
    return path


def _flac_claiming(path, seconds, rate=384000):
    _write(path, np.zeros(rate // 10, np.int16), rate, "FLAC")
    data = bytearray(path.read_bytes())
    bits = int.from_bytes(data[18:26], "big")
    bits = (bits & ~((1 << 36) - 1)) | int(seconds * rate)
    data[18:26] = bits.to_bytes(8, "big")
    path.write_bytes(bytes(data))
    return path


UNREADABLE = r"not a readable audio file"


def build_audio_kinds(root: Path) -> list[Kind]:
    """At least 30 kinds of bad audio under ``root`` (a folder of its own)."""
    root.mkdir(parents=True, exist_ok=True)
    k: list[Kind] = []

    def add(id_, path, pattern, needs_permissions=False):
        k.append(Kind(id_, Path(path), pattern, needs_permissions))

    add("missing", root / "missing.wav", r"no such file")
    (root / "empty.wav").write_bytes(b"")
    add("empty", root / "empty.wav", r"file is empty")
    (root / "text.wav").write_text("this is a text file with a .wav name\n" * 20)
    add("text-as-wav", root / "text.wav", UNREADABLE)
    (root / "page.mp3").write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>\n" * 10)
    add("html-download-as-mp3", root / "page.mp3", UNREADABLE)
    with zipfile.ZipFile(root / "archive.flac", "w") as zf:
        zf.writestr("a.txt", "zip, not flac" * 100)
    add("zip-as-flac", root / "archive.flac", UNREADABLE)
    (root / "png.ogg").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    add("png-as-ogg", root / "png.ogg", UNREADABLE)
    _write(root / "zero-frames.wav", np.zeros(0, np.float32), 16000)
    add("zero-frames", root / "zero-frames.wav", r"zero-length")
    _write(root / "zero-frames.flac", np.zeros(0, np.int16), 16000, "FLAC")
    add("zero-frames-flac", root / "zero-frames.flac", r"zero-length|file is empty")
    (root / "folder.wav").mkdir()
    add("directory", root / "folder.wav", r"is a directory with no audio files in it")
    add("name-too-long", root / ("n" * 300 + ".wav"), r"file name too long \(304 bytes")
    (root / "loop.wav").symlink_to(root / "loop.wav")
    add("symlink-loop", root / "loop.wav", r"symbolic link loop")
    (root / "dangling.wav").symlink_to(root / "gone-away.wav")
    add("broken-symlink", root / "dangling.wav", r"broken symbolic link")
    os.mkfifo(root / "fifo.wav")
    add("named-pipe", root / "fifo.wav", r"not a regular file")
    _write(root / "mode000.wav", _tone(0.5), 16000)
    os.chmod(root / "mode000.wav", 0)
    add("mode-000", root / "mode000.wav", r"permission denied", needs_permissions=True)
    (root / "locked-dir").mkdir()
    _write(root / "locked-dir" / "inside.wav", _tone(0.5), 16000)
    os.chmod(root / "locked-dir", 0)
    add("unsearchable-folder", root / "locked-dir" / "inside.wav", r"permission denied", needs_permissions=True)
    add("wav-cut-to-a-third", _cut_to_third(_write(root / "cut.wav", _tone(3), 16000)), r"truncated")
    add("float-wav-cut", _cut_to_third(_write(root / "cutf.wav", _tone(3), 16000, subtype="FLOAT")), r"truncated")
    add("aiff-cut", _cut_to_third(_write(root / "cut.aiff", _tone(3), 16000, "AIFF")), r"truncated")
    add("flac-cut", _cut_to_third(_write(root / "cut.flac", _tone(3), 16000, "FLAC")), r"truncated|decoding failed")
    add("ogg-cut", _cut_to_third(_write(root / "cut.ogg", _tone(3), 16000, "OGG", "VORBIS")),
        r"truncated|decoding failed|" + UNREADABLE)
    add("mp3-cut", _cut_to_third(_write(root / "cut.mp3", _tone(3), 16000, "MP3")), r"truncated|decoding failed")
    huge = np.full((16000, 2), 3e38, np.float32)
    huge[1::2] *= -1
    add("float-3e38", _write(root / "huge.wav", huge, 16000, subtype="FLOAT"), r"beyond \+-8")
    add("float-1e30", _write(root / "e30.wav", np.full(16000, 1e30, np.float32), 16000, subtype="FLOAT"),
        r"beyond \+-8")
    nan = _tone(1)
    nan[::10] = np.nan
    add("float-10%-nan", _write(root / "nan.wav", nan, 16000, subtype="FLOAT"), r"NaN")
    add("double-inf", _write(root / "inf.wav", np.full(8000, np.inf), 16000, subtype="DOUBLE"), r"infinite")
    add("rate-7-hz", _write(root / "r7.wav", np.zeros(2000, np.int16), 7), r"sample rate 7 Hz is outside")
    add("rate-1-mhz", _write(root / "r1m.wav", np.zeros(2000, np.int16), 1_000_000),
        r"sample rate 1000000 Hz is outside")
    add("rate-0-in-header", _patch(_write(root / "r0.wav", _tone(0.5), 16000), 24, b"\0\0\0\0"),
        r"sample rate|" + UNREADABLE)
    add("channels-0-in-header", _patch(_write(root / "c0.wav", _tone(0.5), 16000), 22, b"\0\0"),
        UNREADABLE + r"|channels")
    (root / "header.wav").write_bytes(_write(root / "h.wav", _tone(0.5), 16000).read_bytes()[:20])
    (root / "h.wav").unlink()
    add("header-only", root / "header.wav", UNREADABLE)
    (root / "riff.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage, not a chunk")
    add("riff-garbage", root / "riff.wav", UNREADABLE)
    big = _write(root / "bigclaim.wav", _tone(0.5), 16000)
    data = bytearray(big.read_bytes())
    i = data.index(b"data")
    data[i + 4:i + 8] = (2_000_000_000).to_bytes(4, "little")  # a 2 GB data chunk in a 16 kB file
    big.write_bytes(bytes(data))
    add("data-size-lies", big, r"truncated")
    add("over-decoded-budget", _flac_claiming(root / "384k-10min.flac", 600), r"too large to decode")
    add("longer-than-an-hour", _write(root / "long.wav", np.zeros(3_601_000, np.int16), 1000),
        r"3601.0 s long, more than the limit")
    return k


def unlock(root: Path) -> None:
    """Give back the permissions taken away above, so the folder can be deleted by anyone."""
    for d in (root / "locked-dir",):
        if d.is_dir() or os.path.lexists(d):
            os.chmod(d, 0o755)


def good_clips(root: Path, n: int = 2) -> list[Path]:
    """``n`` short real recordings (the labelled Debian sound set), copied under ``root``."""
    from mats.data.sounds import fetch_real_sounds, read_metadata
    src = fetch_real_sounds()
    rows = sorted(read_metadata(src), key=lambda r: (src / r["file"]).stat().st_size)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for r in rows[:n]:
        dest = root / Path(r["file"]).name
        shutil.copy(src / r["file"], dest)
        out.append(dest)
    return out


def good_clip_with_odd_name(root: Path, clip: Path) -> Path:
    """A good recording whose file name is not valid UTF-8 (bytes 'caf\\xe9')."""
    root.mkdir(parents=True, exist_ok=True)
    dest = Path(os.fsdecode(os.fsencode(root) + b"/caf\xe9 " + os.fsencode(clip.name)))
    shutil.copy(clip, dest)
    return dest


# -- corpora ----------------------------------------------------------------------------------------
GOOD_ROW = {"text": "a dog barks", "task": "caption", "answer": "A dog barks."}


@dataclass
class CorpusKind:
    id: str
    path: Path
    line: int | None  # the line the message must name (None: the file as a whole)
    pattern: str


def build_corpus_kinds(root: Path) -> list[CorpusKind]:
    root.mkdir(parents=True, exist_ok=True)
    good = json.dumps(GOOD_ROW) + "\n"
    k: list[CorpusKind] = []

    def add(id_, content: bytes | None, line, pattern, name=None):
        path = root / (name or f"{id_}.jsonl")
        if content is not None:
            path.write_bytes(content)
        k.append(CorpusKind(id_, path, line, pattern))

    add("invalid-json", (good + '{"text": "x", "task": \n').encode(), 2, r"invalid JSON")
    add("invalid-utf8", (good + good).encode() + b'{"text": "caf\xe9", "task": "caption", "answer": "x"}\n', 3,
        r"invalid UTF-8 \(byte 0xe9")
    add("missing-field", (good + json.dumps({"text": "x", "task": "caption"}) + "\n").encode(), 2,
        r"missing field 'answer'")
    add("unknown-task", (good + json.dumps({"text": "x", "task": "dance", "answer": "y"}) + "\n").encode(), 2,
        r"unknown task 'dance'")
    add("not-an-object", (good + "[1, 2, 3]\n").encode(), 2, r"expected a JSON object")
    add("empty-string", (good + json.dumps({"text": " ", "task": "caption", "answer": "y"}) + "\n").encode(), 2,
        r"'text' must be a non-empty string")
    add("qa-without-question", (good + json.dumps({"text": "x", "task": "qa", "answer": "y"}) + "\n").encode(), 2,
        r"needs an 'instruction'")
    add("unknown-field", (good + json.dumps({**GOOD_ROW, "lable": 1}) + "\n").encode(), 2, r"unknown field")
    add("lone-surrogate", (good + '{"text": "a \\ud800 dog", "task": "caption", "answer": "x"}\n').encode(), 2,
        r"unpaired surrogate")
    add("nested-too-deep", (good + "[" * 100000 + "\n").encode(), 2, r"nested too deeply")
    add("empty-file", b"", None, r"the corpus is empty")
    add("missing-file", None, None, r"does not exist")
    add("directory", None, None, r"does not exist|is a directory", name="folder.jsonl")
    (root / "folder.jsonl").mkdir(exist_ok=True)
    add("mode-000", good.encode(), None, r"permission denied")
    os.chmod(root / "mode-000.jsonl", 0)
    return k
