"""`mats corpus`: build the default text corpus or validate corpus files."""

from __future__ import annotations

import argparse
import json
import sys

from ..tasks import TASKS
from . import add_format


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "corpus", help="build or check a text-only training corpus", parents=[common],
        description="A corpus is JSONL, one row per sample: "
                    f'{{"text": description standing in for the audio, "task": {"|".join(TASKS)}, '
                    f'"instruction": optional (required for '
                    f'{"/".join(t.name for t in TASKS.values() if t.needs_question)}), '
                    '"answer": target text, "source": name}.')
    csub = p.add_subparsers(dest="corpus_command", metavar="ACTION")
    b = csub.add_parser("build", help="build the default corpus from AudioSet vocabularies (no audio)",
                        parents=[common],
                        description="Writes captions.jsonl, tags.jsonl and qa.jsonl from the 521 AudioSet "
                                    "class names and the label sets of AudioSet's balanced training segments.")
    b.add_argument("--out", default="data/corpus", help="output folder (default: data/corpus)")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(func=_build)
    c = csub.add_parser("check", help="validate corpus files; errors name file and line", parents=[common])
    c.add_argument("files", nargs="+")
    add_format(c, ("text", "jsonl"))
    c.set_defaults(func=_check)
    p.set_defaults(func=lambda a: p.print_help())


def _build(args) -> int:
    from ..data.default_corpus import build_default_corpus
    print(json.dumps(build_default_corpus(args.out, seed=args.seed), indent=2))
    return 0


def _check(args) -> int:
    from collections import Counter

    from ..data.corpus import CorpusError, read_jsonl
    bad = 0
    for f in args.files:
        try:
            rows = read_jsonl(f)
        except CorpusError as e:  # reported, and the other files are still checked
            bad += 1
            print(f"mats: error: {e}", file=sys.stderr, flush=True)
            continue
        tasks = dict(Counter(r.task for r in rows))
        if args.format == "jsonl":
            print(json.dumps({"file": str(f), "rows": len(rows), "tasks": tasks}))
        else:
            print(f"{f}: {len(rows)} rows ok; tasks {tasks}", flush=True)
    return 2 if bad else 0
