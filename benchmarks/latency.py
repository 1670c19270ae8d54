"""Inference latency on this machine: model load, and caption time per clip.

Measured, all in one run, on the real sound set (:func:`mats.data.sounds.fetch_real_sounds`):

* ``load_s``: ``MATS.from_pretrained()`` in this process (files in the OS cache, as for any run after
  the first), ``--repeats`` times;
* ``cli_first_output_s``: wall time of a fresh ``mats caption ONE_FILE`` process (Python start,
  imports, load, one caption), ``--repeats`` times;
* ``caption_batch1_s``: ``MATS.caption([clip])`` for each of ``--clips`` clips, one at a time
  (audio read + CLAP + Santa + beam search);
* ``caption_batch8_per_clip_s``: ``MATS.caption(clips)`` on batches of 8 divided by 8, ``--repeats``
  times.

Captions use the task's default decoding (beam 8, the CLAP reranks the 8 candidates); the same two
per-clip timings with ``rerank=0`` (the top beam of 4) are reported beside them as ``*_top_beam``,
with the ratios, interleaved clip by clip so both see the same machine state.

Every figure is reported as median, min and max with the raw samples. Prints JSON; ``--out FILE``
also writes it.

    python benchmarks/latency.py [--model DIR] [--clips 8] [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path


def summary(samples: list[float]) -> dict:
    return {"median": round(statistics.median(samples), 4), "min": round(min(samples), 4),
            "max": round(max(samples), 4), "n": len(samples), "samples": [round(s, 4) for s in samples]}


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="model folder (default: the offline default model)")
    ap.add_argument("--clips", type=int, default=8, help="clips for the per-clip timings")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", help="cpu, cuda, ... (default: best available)")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)

    import torch

    from mats.pipeline import MATS
    from mats.data.sounds import fetch_real_sounds

    clips = sorted((fetch_real_sounds() / "clips").rglob("*.wav"))[: args.clips]
    if len(clips) < args.clips:
        raise SystemExit(f"only {len(clips)} clips in the sound set")

    loads = [timed(lambda: MATS.from_pretrained(args.model, device=args.device)) for _ in range(args.repeats)]
    mats = MATS.from_pretrained(args.model, device=args.device)
    mats.caption(clips[:1])  # warm-up: first-call allocations, YAMNet session, prompt cache

    batch1, batch1_top, batch8, batch8_top = [], [], [], []
    for c in clips:
        batch1.append(timed(lambda c=c: mats.caption([c])))
        batch1_top.append(timed(lambda c=c: mats.caption([c], rerank=0)))
    for _ in range(args.repeats):
        batch8.append(timed(lambda: mats.caption(clips[:8], batch_size=8)) / 8)
        batch8_top.append(timed(lambda: mats.caption(clips[:8], batch_size=8, rerank=0)) / 8)

    cli = [sys.executable, "-m", "mats.cli", "caption", str(clips[0])]
    if args.model:
        cli += ["--model", args.model]
    fresh = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        subprocess.run(cli, check=True, capture_output=True, env=dict(os.environ))
        fresh.append(time.perf_counter() - t)

    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "device": str(mats.model.device)},
        "model": str(mats.folder), "clips": [c.name for c in clips],
        "load_s": summary(loads),
        "cli_first_output_s": summary(fresh),
        "caption_batch1_s": summary(batch1),
        "caption_batch8_per_clip_s": summary(batch8),
        "caption_batch1_s_top_beam": summary(batch1_top),
        "caption_batch8_per_clip_s_top_beam": summary(batch8_top),
        "rerank_cost_ratio_batch1": round(statistics.median(batch1) / statistics.median(batch1_top), 3),
        "rerank_cost_ratio_batch8": round(statistics.median(batch8) / statistics.median(batch8_top), 3),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
