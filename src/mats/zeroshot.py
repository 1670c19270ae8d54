"""Zero-shot audio classification with any CLAP: `mats zero-shot FILE... --labels "a,b,c"`.

Each label is written into ``prompt`` and embedded by the CLAP text encoder; each input's audio
embedding is compared by cosine similarity. Scores are ``softmax(100 * cosine)`` over the labels
(the logit scale CLAP models are trained with), so they sum to 1 per file and are comparable
across files only as a ranking, not as calibrated probabilities.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["zero_shot", "add_parser", "LOGIT_SCALE"]

LOGIT_SCALE = 100.0


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def _clean_labels(labels: Sequence[str]) -> list[str]:
    out, seen = [], set()
    for lab in labels:
        lab = lab.strip()
        if lab and lab not in seen:
            seen.add(lab)
            out.append(lab)
    if len(out) < 2:
        raise ValueError("zero-shot needs at least two distinct, non-empty labels")
    return out


def zero_shot(clap, inputs, labels: Sequence[str], prompt: str = "the sound of {label}",
              top_k: int = 5) -> list[dict]:
    """Classify each input among ``labels``. Returns one dict per input:
    ``{"file", "label", "score", "top_k": [{"label", "score"}, ...]}``. Errors are raised
    (the CLI catches them per file)."""
    labels = _clean_labels(labels)
    if "{label}" not in prompt:
        raise ValueError("prompt must contain '{label}'")
    text = clap.encode_text([prompt.format(label=lab) for lab in labels])
    if isinstance(inputs, (str, Path, np.ndarray, tuple)):
        inputs = [inputs]
    results = []
    for item in inputs:
        audio = clap.encode_audio([item])[0]
        probs = _softmax(LOGIT_SCALE * (text @ audio))
        order = np.argsort(-probs, kind="stable")[:max(1, top_k)]
        name = str(item) if isinstance(item, (str, Path)) else None
        results.append({"file": name, "label": labels[order[0]], "score": float(probs[order[0]]),
                        "top_k": [{"label": labels[i], "score": float(probs[i])} for i in order]})
    return results


# -- CLI --------------------------------------------------------------------------------------------

EPILOG = """\
examples:
  mats zero-shot dog.wav rain.flac --labels "dog barking,rain,car horn"
  mats zero-shot sounds/ --labels-file labels.txt --format jsonl > out.jsonl

Directories are searched recursively for audio files. A file that cannot be read is reported
(an {"file", "error"} line in jsonl) and the others are still classified; the exit code is 1 if
any file failed. Scores are softmax(100 x cosine) over the given labels.
"""


def add_parser(sub) -> None:
    p = sub.add_parser("zero-shot", help="classify audio files among labels you give (no training)",
                       description="Zero-shot classification: compare CLAP audio embeddings with the "
                                   "text embeddings of your labels.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files or folders")
    p.add_argument("--labels", default="", help='comma-separated labels, e.g. "dog,bell,rain"')
    p.add_argument("--labels-file", type=Path, help="a file with one label per line (added to --labels)")
    p.add_argument("--prompt", default="the sound of {label}", help="text template for each label (default: %(default)r)")
    p.add_argument("--top-k", type=int, default=5, help="how many ranked labels to show (default: %(default)s)")
    p.add_argument("--clap", default="yamnet-minilm", help="CLAP spec: yamnet-minilm (default), msclap-2023:PATH, laion:PATH")
    p.add_argument("--format", choices=("text", "jsonl"), default="text", help="output format (default: %(default)s)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from .audio import expand_paths
    from .clap import load_clap

    labels = [x for x in args.labels.split(",")]
    if args.labels_file:
        if not args.labels_file.is_file():
            raise FileNotFoundError(f"labels file {args.labels_file} not found")
        labels += args.labels_file.read_text(encoding="utf-8").splitlines()
    labels = _clean_labels(labels)
    files = expand_paths(args.files)
    if not files:
        raise ValueError("no audio files found in the given paths")
    clap = load_clap(args.clap)
    failed = 0
    for f in files:
        try:
            row = zero_shot(clap, [f], labels, prompt=args.prompt, top_k=args.top_k)[0]
        except (ValueError, OSError) as e:
            failed += 1
            if args.format == "jsonl":
                print(json.dumps({"file": str(f), "error": str(e)}), flush=True)
            else:
                print(f"{f}\tERROR\t{e}", flush=True)
            print(f"mats zero-shot: {e}", file=sys.stderr)
            continue
        if args.format == "jsonl":
            print(json.dumps(row), flush=True)
        else:
            ranked = ", ".join(f"{t['label']} {t['score']:.2f}" for t in row["top_k"])
            print(f"{f}\t{row['label']}\t{row['score']:.3f}\t[{ranked}]", flush=True)
    return 1 if failed else 0
