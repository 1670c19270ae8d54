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

``speed`` (the speed issue; ``--speed-only`` skips the rows above), every variant side by side in
one run, round-robin clip by clip, with ratios to ``before``:

* ``decode``: caption per clip alone and in batches of 8 (default decoding: beam 8 + rerank 8) for
  ``before`` (peft-wrapped LoRA, one prefill per beam, fp32: main before the speed work),
  ``prefill_once`` (peft, the prompt's KV cache computed once per clip), ``merged`` (LoRA merged +
  prefill once: the new default) and ``bf16`` (merged + prefill once + ``dtype="fast"``); whether
  each variant's captions equal ``before``'s; a greedy decode step (ms per token, one row) beside the
  bandwidth floor (LLM weight bytes / measured read bandwidth);
* ``start``: fresh processes: ``python -c pass``, ``import mats.pipeline`` (the import floor of an
  inference run), ``mats --help`` and ``mats tag FILE``; the 521 label embeddings encoded vs read
  from the disk cache;
* ``threads``: a fresh ``mats tag FILE`` with 2 threads and spinning OpenMP workers
  (``OMP_WAIT_POLICY=ACTIVE``: the old default), 2 threads waiting passively (the new default) and
  1 thread.

Every figure is reported as median, min and max with the raw samples. Prints JSON; ``--out FILE``
also writes it.

    python benchmarks/latency.py [--model DIR] [--clips 8] [--repeats 3] [--speed-only] [--out FILE]
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

from _output import emit  # benchmarks/ is on sys.path when a script runs


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
    ap.add_argument("--speed-only", action="store_true", help="only the speed-issue rows (see above)")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.speed_only:
        return speed_main(args)

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
    return emit(result, args.out, indent=2)


def fresh(cmd: list[str], repeats: int, env: dict | None = None) -> dict:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, **(env or {})})
        times.append(time.perf_counter() - t)
    return summary(times)


def read_bandwidth_gbs() -> float:
    import torch
    a = torch.ones(2 ** 28 // 4 * 4)  # 1 GiB of float32
    a.sum()
    times = [timed(a.sum) for _ in range(5)]
    return round(a.numel() * 4 / statistics.median(times) / 1e9, 1)


def speed_rows(args, clips: list[Path]) -> dict:
    import torch

    from mats.model import MATSModel
    from mats.pipeline import MATS

    fast = MATS.from_pretrained(args.model, device=args.device)  # merged LoRA, prefill once
    wrapped = MATSModel.from_pretrained(fast.folder, device=args.device, merge=False)
    peft = MATS(wrapped, fast.clap, fast.folder, fast.santa, fast.shift)
    bf16 = MATS.from_pretrained(args.model, device=args.device, dtype="fast", clap=fast.clap)

    def before(files, **kw):
        wrapped.prefill_once = False
        try:
            return peft.caption(files, **kw)
        finally:
            wrapped.prefill_once = True

    variants = {"before": before, "prefill_once": peft.caption, "merged": fast.caption, "bf16": bf16.caption}
    for fn in variants.values():
        fn(clips[:1])  # warm-up
    b1 = {k: [] for k in variants}
    b8 = {k: [] for k in variants}
    texts = {k: [] for k in variants}
    for c in clips:
        for k, fn in variants.items():
            t = time.perf_counter()
            texts[k].extend(fn([c]))
            b1[k].append(time.perf_counter() - t)
    for _ in range(args.repeats):
        for k, fn in variants.items():
            b8[k].append(timed(lambda fn=fn: fn(clips[:8], batch_size=8)) / 8)
    decode = {"bf16_weights": str(bf16.model.llm.dtype), "clips": len(clips)}
    for k in variants:
        decode[k] = {"caption_batch1_s": summary(b1[k]), "caption_batch8_per_clip_s": summary(b8[k]),
                     "speedup_batch1": round(statistics.median(b1["before"]) / statistics.median(b1[k]), 3),
                     "speedup_batch8": round(statistics.median(b8["before"]) / statistics.median(b8[k]), 3),
                     "captions_equal_to_before": sum(a == b for a, b in zip(texts[k], texts["before"]))}
    # A greedy decode step of one row against the bandwidth floor (weights read once per token).
    emb = fast.embed_audio(clips[:1])
    bw = read_bandwidth_gbs()
    steps = {}
    for name, m in (("fp32", fast), ("bf16", bf16)):
        t1 = [timed(lambda: m.generate(emb, "caption", num_beams=1, rerank=0, max_new_tokens=1, min_new_tokens=1))
              for _ in range(3)]
        t21 = [timed(lambda: m.generate(emb, "caption", num_beams=1, rerank=0, max_new_tokens=21, min_new_tokens=21))
               for _ in range(3)]
        nbytes = sum(p.numel() * p.element_size() for p in m.model.llm.parameters())
        steps[name] = {"decode_step_ms": round(1000 * (statistics.median(t21) - statistics.median(t1)) / 20, 2),
                       "llm_weight_bytes": nbytes, "bandwidth_floor_ms": round(1000 * nbytes / (bw * 1e9), 2)}
    decode["greedy_decode_step"] = {"read_bandwidth_gb_s": bw, **steps}

    # Label embeddings: encoded (what every fresh run did) vs read from the disk cache.
    clap = fast.clap
    texts_ = [clap.label_prompt.format(label=n) for n in clap.class_names]
    enc = [timed(lambda: clap.encode_text(texts_)) for _ in range(args.repeats)]
    cached = []
    for _ in range(args.repeats):
        clap._label_cache = {}
        cached.append(timed(clap.label_embeddings))
    py = [sys.executable]
    tag = py + ["-m", "mats.cli", "tag", str(clips[0])] + (["--model", args.model] if args.model else [])
    start = {
        "python_s": fresh(py + ["-c", "pass"], args.repeats),
        "import_mats_pipeline_s": fresh(py + ["-c", "import mats.pipeline"], args.repeats),
        "import_torch_s": fresh(py + ["-c", "import torch"], args.repeats),
        "mats_help_s": fresh(py + ["-m", "mats.cli", "--help"], args.repeats),
        "mats_tag_fresh_s": fresh(tag, args.repeats),
        "label_embeddings_encode_s": summary(enc),
        "label_embeddings_disk_cache_s": summary(cached),
    }
    threads = {
        "tag_2_threads_spinning_s": fresh(tag, args.repeats, {"OMP_WAIT_POLICY": "ACTIVE", "MATS_THREADS": "2"}),
        "tag_2_threads_passive_s": fresh(tag, args.repeats, {"OMP_WAIT_POLICY": "PASSIVE", "MATS_THREADS": "2"}),
        "tag_1_thread_passive_s": fresh(tag, args.repeats, {"OMP_WAIT_POLICY": "PASSIVE", "MATS_THREADS": "1"}),
    }
    return {"machine": {"platform": platform.platform(), "cpus_available": len(os.sched_getaffinity(0)),
                        "torch": torch.__version__, "torch_threads": torch.get_num_threads()},
            "decode": decode, "start": start, "threads": threads}


def speed_main(args) -> int:
    from mats.data.sounds import fetch_real_sounds

    clips = sorted((fetch_real_sounds() / "clips").rglob("*.wav"))[: args.clips]
    result = {"speed": speed_rows(args, clips), "clips": [c.name for c in clips]}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
