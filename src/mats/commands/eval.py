"""`mats eval`: score a model on a local benchmark copy, optionally with the full bridge ablation."""

from __future__ import annotations

import argparse
import json
import logging

from . import add_decoding, add_device, add_format, add_runtime

log = logging.getLogger(__name__)

EPILOG = """\
examples:
  mats eval --data data/clotho --task caption --out eval/clotho
  mats eval --data data/clotho --task caption --ablation --out eval/clotho-ablation
  mats eval --data ~/.cache/mats/sounds --task tag --ablation --quick --limit 20 --out eval/sounds
  mats eval --data data/esc50 --task classify --sweep lam=0,0.3,1 --sweep tau=10,100 --out eval/esc50

Benchmarks (--benchmark, detected from the files when omitted): audiocaps, clotho, esc50,
urbansound8k, vggsound, fsd50k, musiccaps, clothoaqa, mmau, folder (metadata.jsonl with
captions / labels [+ synonyms] / question+answer per file).

Writes OUTDIR/results.json (config, per-clip predictions, "metrics", timings, failed clips) and
OUTDIR/report.md; with --ablation also bridges.png and sweeps.png. Audio is embedded once per
run and reused by every bridge and sweep point. A clip whose audio cannot be read is listed under
"failed" and left out of the metrics; each is named on stderr and the exit code is 1 (--keep-going:
0). For sets with labels the report adds keyword_accuracy (the text mentions the label or a
synonym) and the CLAP zero-shot accuracy on the same clips (the ceiling).

--ablation runs the bridges none, noise, santa, nearest, projection, shift (shift needs the model's
shift.safetensors or --shift FILE; otherwise it is listed as skipped) and sweeps Santa's lam, tau,
top_l (L) and noise_variance one at a time around the model's defaults (grid: lam 0,.1,.3,.5,.7,1;
tau 1,10,30,100; L 1,8,32,128; variance 0,.002,.006,.015; --quick: two points each). --sweep
PARAM=V1,V2 replaces the grid: only the parameters given are swept (implies --ablation).
"""


def add_parser(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from ..bridge.config import BRIDGES, DEFAULT_BRIDGE
    from ..tasks import EVAL_TASKS

    p = sub.add_parser("eval", help="evaluate a model on a benchmark (metrics, report, bridge ablation)",
                       parents=[common],
                       description="Evaluate a MATS model on a local benchmark copy.", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, metavar="DIR", help="benchmark folder")
    p.add_argument("--benchmark", metavar="NAME", help="benchmark layout (default: detected)")
    p.add_argument("--split", help="split / fold (default: the benchmark's test split)")
    p.add_argument("--model", metavar="DIR", help="model folder (default: the offline default model)")
    p.add_argument("--task", required=True, choices=tuple(EVAL_TASKS),
                   help="what to ask the model and how to score it")
    p.add_argument("--bridge", choices=BRIDGES, help=f"bridge of the main run (default: {DEFAULT_BRIDGE})")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate the first N clips only")
    p.add_argument("--seed", type=int, default=0, help="seed of the bridges' noise (default 0)")
    p.add_argument("--batch-size", type=int, default=8)
    add_decoding(p)
    p.add_argument("--metrics", help="caption metrics, comma-separated (default: all; e.g. bleu,cider,rouge,meteor)")
    p.add_argument("--out", required=True, metavar="OUTDIR", help="folder for results.json and report.md")
    p.add_argument("--ablation", action="store_true", help="every bridge + Santa parameter sweeps")
    p.add_argument("--sweep", action="append", default=[], metavar="PARAM=V1,V2,...",
                   help="sweep values for one Santa parameter (lam, tau, top_l, noise_variance); repeatable")
    p.add_argument("--quick", action="store_true", help="small sweep grid (two values per parameter)")
    p.add_argument("--no-sweeps", action="store_true", help="with --ablation: compare the bridges only")
    p.add_argument("--shift", metavar="FILE", help="shift vector (shift.safetensors / .npy) for the shift bridge")
    add_device(p)
    add_runtime(p)
    p.add_argument("--no-zero-shot", action="store_true", help="skip the CLAP zero-shot ceiling")
    p.add_argument("--no-plot", "--no-plots", dest="no_plot", action="store_true",
                   help="do not draw the ablation PNGs")
    add_format(p, ("text", "jsonl"))
    p.add_argument("--keep-going", action="store_true",
                   help="exit code 0 even when clips failed to load or were missing (they are still listed)")
    p.add_argument("--strict", action="store_true", help=argparse.SUPPRESS)  # the default since 0.x; kept for scripts
    p.set_defaults(func=_run)
    return p


def _run(args) -> int:
    from ..evaluation.ablation import parse_sweep
    from ..evaluation.runner import EvalConfig, evaluate

    config = EvalConfig(data=args.data, task=args.task, benchmark=args.benchmark, split=args.split,
                        model=args.model, bridge=args.bridge, limit=args.limit, seed=args.seed,
                        batch_size=args.batch_size, out=args.out, ablation=args.ablation,
                        sweep=parse_sweep(args.sweep) or None, quick=args.quick,
                        sweeps=not args.no_sweeps, shift=args.shift,
                        num_beams=args.beams, max_new_tokens=args.max_new_tokens, rerank=args.rerank,
                        metrics=[m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None,
                        device=args.device, dtype=args.dtype, runtime=args.runtime,
                        zero_shot=not args.no_zero_shot, progress=not args.quiet,
                        plots=not args.no_plot)
    results = evaluate(config)
    m = results["metrics"]
    pm = results.get("primary_metric")
    if args.format == "jsonl":
        print(json.dumps({"benchmark": results["benchmark"]["name"], "task": results["task"],
                          "n_evaluated": results["n_evaluated"], "n_failed": results["n_failed"],
                          "primary_metric": pm, "metrics": m, "out": str(args.out)}))
    else:
        summary = ", ".join(f"{k}={v:.4f}" for k, v in m.items() if isinstance(v, float))
        print(f"{results['benchmark']['name']} {results['task']}: {results['n_evaluated']} clips"
              f"{f' ({pm} = {m[pm]:.4f})' if pm and m.get(pm) is not None else ''}")
        print(f"  {summary}")
    log.info("wrote %s/results.json and %s/report.md", args.out, args.out)
    for f in results["failed"]:
        log.warning("mats eval: skipped %s", f["error"])
    missing = results.get("benchmark", {}).get("missing") or []
    for name in missing:
        log.warning("mats eval: skipped %s: listed in the benchmark but not found", name)
    n_missing = results.get("benchmark", {}).get("n_missing_audio", len(missing))
    if results["n_failed"] or n_missing:
        log.warning("mats eval: %d clip(s) could not be read and %d were not found; they are left out of "
                    "the metrics%s", results["n_failed"], n_missing,
                    "" if args.keep_going else " (exit code 1; --keep-going for 0)")
        return 0 if args.keep_going else 1
    return 0
