"""Same answers on ONNX Runtime as on torch? The default decoding of every clip of the real-sound splits on
both runtimes, side by side (issue 22).

For each split (dev, test: :func:`mats.data.sounds.fetch_sound_split`) and each command task (caption,
tag: the task's default decoding, Santa bridge, 8 beam candidates reranked by the CLAP), both runtimes
answer every clip in batches of 8; printed: how many answers are identical, every clip whose answer
differs (both answers), and the keyword accuracy of each runtime as ``benchmarks/quality.py`` scores it
(``keyword_hits``), in clips. The audio is embedded once (the CLAP's audio side is the same ONNX
Runtime YAMNet on both).

    python benchmarks/runtime_parity.py [--model DIR] [--splits dev,test] [--limit N] [--out FILE]
"""

from __future__ import annotations

import argparse
import time

from _output import emit  # benchmarks/ is on sys.path when a script runs

TASKS = {"caption": "caption", "tag": "tags"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="model folder (default: the offline default model)")
    ap.add_argument("--splits", default="dev,test")
    ap.add_argument("--limit", type=int, help="first N clips of each split (smoke runs)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)

    from mats.data.sounds import fetch_sound_split
    from mats.evaluation.adapters import load_eval_benchmark
    from mats.evaluation.runner import Evaluation
    from mats.evaluation.scoring import keyword_hits
    from mats.pipeline import MATS

    t0 = time.perf_counter()
    models = {name: MATS.from_pretrained(args.model, runtime=name) for name in ("torch", "onnx")}
    result: dict = {"splits": {}}
    for split in [s.strip() for s in args.splits.split(",") if s.strip()]:
        ev = Evaluation(models["torch"], load_eval_benchmark(fetch_sound_split(split)), limit=args.limit,
                        progress=False)
        names = [str(it.file.name) if hasattr(it.file, "name") else str(it.file) for it in ev.items]
        rows = {}
        for task, prompt_task in TASKS.items():
            answers, seconds = {}, {}
            for name, m in models.items():
                t = time.perf_counter()
                answers[name] = m.generate(ev.embeddings, prompt_task, batch_size=args.batch_size)
                seconds[name] = round(time.perf_counter() - t, 1)
            pairs = list(zip(answers["torch"], answers["onnx"], strict=True))
            hits = {name: int(sum(keyword_hits(ev.items, a))) for name, a in answers.items()}
            rows[task] = {
                "identical": sum(a == b for a, b in pairs), "n": len(pairs),
                "identical_share": round(sum(a == b for a, b in pairs) / max(len(pairs), 1), 4),
                "keyword_hits": hits, "keyword_hits_difference": hits["onnx"] - hits["torch"],
                "decode_s": seconds,
                "differences": [{"clip": names[i], "torch": a, "onnx": b}
                                for i, (a, b) in enumerate(pairs) if a != b]}
        result["splits"][split] = {"n_clips": len(ev.items), "tasks": rows}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return emit(result, args.out, indent=2)


if __name__ == "__main__":
    raise SystemExit(main())
