"""Peak memory of ``mats.audio.load_audio`` at the edge of the decoded-size budget.

Each case runs in a fresh process (peak RSS from ``getrusage``): the largest files the default
budget (``MAX_DECODED_SAMPLES``) lets through, resampled the expensive ways (48 kHz mono and
8 kHz mono to 16 kHz, 44.1 kHz stereo to 48 kHz), and the issue's 10 min / 384 kHz FLAC, which the
header check refuses before decoding. Files are written to a temporary folder (``--tmp``, default
/dev/shm) and deleted afterwards. Prints JSON; ``--out FILE`` also writes it.

    python benchmarks/audio_memory.py [--tmp DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _output import emit  # benchmarks/ is on sys.path when a script runs

MEASURE = r"""
import json, resource, sys, time
from mats.audio import AudioError, load_audio
path, rate = sys.argv[1], int(sys.argv[2])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
try:
    y = load_audio(path, rate)
    outcome = f"{y.size} samples"
except AudioError as e:
    outcome = "refused: " + str(e).split(": ", 1)[1][:60]
print(json.dumps({"outcome": outcome, "seconds": round(time.perf_counter() - t, 2),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "rss_before_mb": round(before / 1024)}))
"""


def write_noise(path: Path, frames: int, rate: int, channels: int, fmt: str = "WAV") -> None:
    import numpy as np
    import soundfile as sf
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", rate, channels, "PCM_16", format=fmt) as f:
        for i in range(0, frames, 1 << 22):
            n = min(1 << 22, frames - i)
            f.write((rng.standard_normal((n, channels)) * 0.1).astype(np.float32))


def flac_claiming(path: Path, seconds: float, rate: int = 384000) -> None:
    import numpy as np
    import soundfile as sf
    sf.write(str(path), np.zeros(rate // 10, np.int16), rate, format="FLAC")
    data = bytearray(path.read_bytes())
    bits = int.from_bytes(data[18:26], "big")
    data[18:26] = ((bits & ~((1 << 36) - 1)) | int(seconds * rate)).to_bytes(8, "big")
    path.write_bytes(bytes(data))


def main(argv=None) -> int:
    from mats.audio import MAX_DECODED_SAMPLES as B
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tmp", default="/dev/shm" if Path("/dev/shm").is_dir() else None)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    cases = [("48k-mono-at-budget", B, 48000, 1, 16000), ("8k-mono-upsampled-to-budget", B // 2, 8000, 1, 16000),
             ("44k1-stereo-at-budget", B // 2, 44100, 2, 48000)]
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for name, frames, rate, channels, target in cases:
            path = Path(tmp) / f"{name}.wav"
            write_noise(path, frames, rate, channels)
            p = subprocess.run([sys.executable, "-c", MEASURE, str(path), str(target)], capture_output=True, text=True)
            rows.append({"case": name, "frames": frames, "channels": channels, "rate": rate, "target_rate": target,
                         "file_mb": round(path.stat().st_size / 1e6, 1), **json.loads(p.stdout)})
            path.unlink()
        path = Path(tmp) / "384k-10min.flac"
        flac_claiming(path, 600)
        p = subprocess.run([sys.executable, "-c", MEASURE, str(path), "16000"], capture_output=True, text=True)
        rows.append({"case": "flac-10min-384k-header", "frames": 600 * 384000, "channels": 1, "rate": 384000,
                     "target_rate": 16000, "file_mb": round(path.stat().st_size / 1e6, 3), **json.loads(p.stdout)})
    result = {"benchmark": "audio_memory", "max_decoded_samples": B, "cases": rows}
    return emit(result, args.out, indent=1)


if __name__ == "__main__":
    sys.exit(main())
