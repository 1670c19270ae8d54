"""Choose the change threshold of mats.events on the DEV packages of the real sound split (never test).

Builds multi-event recordings from dev clips: three clips of different labels, each repeated to 6-12 s,
either with 3 s of silence between them ("gaps") or back to back ("joined"), and reports for each
threshold how many true boundaries (onsets and offsets inside the recording) have a detected event
boundary within +-1 s, and how many detected boundaries match none.

    python benchmarks/events_threshold.py [--n 24] [--seed 1] [--out benchmarks/results/events_threshold.json]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import emit  # noqa: E402

from mats.clap.default import DefaultCLAP  # noqa: E402
from mats.data.sounds import fetch_sound_split, read_metadata  # noqa: E402
from mats.events import detect_events  # noqa: E402

THRESHOLDS = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6]


class CachedCLAP:
    """The CLAP with each window's embedding computed once (the sweep re-segments the same audio)."""

    def __init__(self, clap):
        self.clap, self.cache = clap, {}

    def __getattr__(self, name):
        return getattr(self.clap, name)

    def embed_windows(self, windows):
        keys = [hashlib.sha1(w.tobytes()).hexdigest() for w in windows]
        todo = [i for i, k in enumerate(keys) if k not in self.cache]
        if todo:
            for i, e in zip(todo, self.clap.embed_windows(windows[todo]), strict=True):
                self.cache[keys[i]] = e
        return np.stack([self.cache[k] for k in keys])


def load_clip(path: Path, sr: int) -> np.ndarray:
    from mats.audio import load_audio
    return load_audio(path, sr)


def build(clips, sr, rng, gap: float):
    """(waveform, true boundaries in s, [(start, end), ...] of the sounds)."""
    parts, spans, t = [], [], 0.0
    for i, c in enumerate(clips):
        if i and gap:
            parts.append(np.zeros(int(gap * sr), np.float32))
            t += gap
        secs = float(rng.uniform(6, 12))
        n = int(secs * sr)
        x = np.tile(c, -(-n // c.size))[:n]
        x = x / max(1e-6, float(np.abs(x).max())) * 0.5
        parts.append(x.astype(np.float32))
        spans.append((t, t + secs))
        t += secs
    wave = np.concatenate(parts)
    bounds = sorted({round(b, 3) for s in spans for b in s} - {0.0, round(t, 3)})
    return wave, bounds, spans


def score(events, bounds, tol=1.0):
    found = sorted({e.start for e in events[1:]})
    hit = sum(any(abs(f - b) <= tol for f in found) for b in bounds)
    false = sum(not any(abs(f - b) <= tol for b in bounds) for f in found)
    return hit, false


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24, help="recordings per layout")
    ap.add_argument("--hop", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--show", type=float, help="print each recording's events at this threshold (stderr)")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    folder = fetch_sound_split("dev")
    meta = [r for r in read_metadata(folder) if r["split"] == "dev"]
    clap = CachedCLAP(DefaultCLAP())
    sr = clap.sample_rate
    rng = np.random.default_rng(args.seed)
    recordings = []
    for layout, gap in (("gaps", 3.0), ("joined", 0.0)):
        for _ in range(args.n):
            while True:
                rows = [meta[i] for i in rng.choice(len(meta), 3, replace=False)]
                if len({r["labels"][0] for r in rows}) == 3 and len({r["source"] for r in rows}) >= 2:
                    break
            clips = [load_clip(folder / r["file"], sr) for r in rows]
            wave, bounds, _ = build(clips, sr, rng, gap)
            recordings.append((layout, [r["file"] for r in rows], wave, bounds))
    t0 = time.time()
    rows = []
    for th in THRESHOLDS:
        per = {}
        for layout, files, wave, bounds in recordings:
            ev = detect_events(clap, wave, hop=args.hop, threshold=th)
            hit, false = score(ev, bounds)
            if args.show == th:
                print(layout, files, [round(b, 1) for b in bounds], [(round(e.start, 1), e.kind) for e in ev],
                      file=sys.stderr)
            p = per.setdefault(layout, {"boundaries": 0, "hit": 0, "false": 0, "events": 0})
            p["boundaries"] += len(bounds)
            p["hit"] += hit
            p["false"] += false
            p["events"] += sum(e.kind == "sound" for e in ev)
        for p in per.values():
            p["hit_rate"] = round(p["hit"] / p["boundaries"], 3)
        rows.append({"threshold": th, **per})
        print(th, per, file=sys.stderr, flush=True)
    for r in rows:  # F1 of the boundaries over both layouts: 2 hit / (2 hit + missed + false)
        hit = sum(r[k]["hit"] for k in ("gaps", "joined"))
        total = sum(r[k]["boundaries"] for k in ("gaps", "joined"))
        false = sum(r[k]["false"] for k in ("gaps", "joined"))
        r["f1"] = round(2 * hit / (2 * hit + (total - hit) + false), 4)
    best = max(rows, key=lambda r: (r["f1"], -r["threshold"]))
    return emit({"split": "dev", "hop": args.hop, "seed": args.seed, "recordings_per_layout": args.n,
                 "seconds": round(time.time() - t0, 1), "sweep": rows, "best": best["threshold"]}, args.out)


if __name__ == "__main__":
    sys.exit(main())
