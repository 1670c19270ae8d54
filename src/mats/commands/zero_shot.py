"""`mats zero-shot FILE... --labels "a,b,c"`: classify audio among labels with the CLAP alone."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

from . import add_format
from .batch import BATCH_EPILOG, ResultsFile, add_batch_options, check_resume, open_results, shard

log = logging.getLogger(__name__)


EPILOG = """\
examples:
  mats zero-shot dog.wav rain.flac --labels "dog barking,rain,car horn"
  mats zero-shot sounds/ --labels-file labels.txt --format jsonl > out.jsonl

Directories are searched recursively for audio files. A file that cannot be read is reported
(an {"file", "error"} line in jsonl) and the others are still classified; the exit code is 1 if
any file failed. Scores are softmax(100 x cosine) over the given labels.

""" + BATCH_EPILOG


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("zero-shot", help="classify audio files among labels you give (no training)",
                       parents=[common],
                       description="Zero-shot classification: compare CLAP audio embeddings with the "
                                   "text embeddings of your labels.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files or folders")
    p.add_argument("--labels", default="", help='comma-separated labels, e.g. "dog,bell,rain"')
    p.add_argument("--labels-file", type=Path, help="a file with one label per line (added to --labels)")
    p.add_argument("--prompt", default="the sound of {label}",
                   help="text template for each label (default: %(default)r)")
    p.add_argument("--top-k", type=int, default=5, help="how many ranked labels to show (default: %(default)s)")
    p.add_argument("--clap", default="yamnet-minilm",
                   help="CLAP spec: yamnet-minilm (default), msclap-2023:PATH, laion:PATH")
    add_format(p)
    add_batch_options(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from ..audio import expand_audio_args
    from ..zeroshot import clean_labels

    labels = [x for x in args.labels.split(",")]
    if args.labels_file:
        if not args.labels_file.is_file():
            raise FileNotFoundError(f"labels file {args.labels_file} not found")
        labels += args.labels_file.read_text(encoding="utf-8").splitlines()
    labels = clean_labels(labels)
    check_resume(args)
    files = shard(expand_audio_args(args.files), args.shard)
    with open_results(args) as out:
        files = out.pending(files) if out is not None else files
        return _classify(args, files, labels, out) if files else 0


def _classify(args, files, labels, out: ResultsFile | None) -> int:
    from ..clap import load_clap
    from ..zeroshot import zero_shot

    clap = load_clap(args.clap)
    failed = 0
    writer = csv.writer(sys.stdout) if args.format == "csv" and out is None else None
    if writer:
        writer.writerow(["file", "label", "score", "top_k", "error"])
    for f in files:
        try:
            row = zero_shot(clap, [f], labels, prompt=args.prompt, top_k=args.top_k)[0]
        except (ValueError, OSError) as e:
            failed += 1
            if out is not None:
                out.write({"file": str(f), "error": str(e)})
            elif args.format == "jsonl":
                print(json.dumps({"file": str(f), "error": str(e)}), flush=True)
            elif writer:
                writer.writerow([str(f), "", "", "", str(e)])
            else:
                print(f"{f}\tERROR\t{e}", flush=True)
            log.warning("mats zero-shot: %s", e)
            continue
        if out is not None:
            out.write({**row, "file": str(f)})
        elif args.format == "jsonl":
            print(json.dumps(row), flush=True)
        elif writer:
            writer.writerow([row["file"], row["label"], f"{row['score']:.6f}",
                             ";".join(t["label"] for t in row["top_k"]), ""])
        else:
            ranked = ", ".join(f"{t['label']} {t['score']:.2f}" for t in row["top_k"])
            print(f"{f}\t{row['label']}\t{row['score']:.3f}\t[{ranked}]", flush=True)
    return 1 if failed else 0
