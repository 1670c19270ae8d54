"""`mats demo`: the main job on the offline default, end to end on real recorded sounds.

Fetches the labelled real-sound set (Debian sound packages, see ``mats.data.sounds``), picks a few clips
of different classes, and prints for each: the CLAP's zero-shot label, then the MATS model's caption,
tags and one answer. Nothing here was seen in training: the model learned from text only.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

from . import add_format

log = logging.getLogger(__name__)

DEMO_CLASSES = ("bird", "train", "telephone", "laughter", "thunder", "sheep", "applause", "explosion")


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("demo", help="run the offline default on real recorded sounds", parents=[common],
                       description="Fetch real labelled sounds (Debian packages), then zero-shot-classify, "
                                   "caption, tag and question a few of them with the offline default model.")
    p.add_argument("--model", help="model folder (default: the offline default model)")
    p.add_argument("--classes", default=",".join(DEMO_CLASSES),
                   help="comma-separated classes of the real set to show (one clip each)")
    p.add_argument("--question", default="What is making this sound?")
    add_format(p, ("text", "jsonl"))
    p.set_defaults(func=_run)


def _run(args) -> int:
    from ..data.sounds import fetch_real_sounds, read_metadata
    from ..pipeline import MATS
    from ..zeroshot import zero_shot

    t0 = time.time()
    folder = fetch_real_sounds()
    rows = read_metadata(folder)
    wanted = [c.strip() for c in args.classes.split(",") if c.strip()]
    picks = []
    for cls in wanted:
        match = next((r for r in rows if r["labels"][0] == cls), None)
        if match:
            picks.append(match)
    if not picks:
        raise ValueError(f"none of the classes {wanted} is in the real-sound set at {folder}")
    files = [folder / r["file"] for r in picks]
    all_labels = sorted({r["labels"][0] for r in rows})
    log.info("[mats] %d real clips from %s (%d clips, %d classes); loading the model…",
             len(files), folder, len(rows), len(all_labels))
    m = MATS.from_pretrained(args.model)
    t_load = time.time()
    zs = zero_shot(m.clap, files, all_labels, top_k=3)
    captions = {r.file: r.text for r in m.run(files, "caption")}
    tags = {r.file: r.tags for r in m.run(files, "tags")}
    answers = {r.file: r.text for r in m.run(files[:1], "qa", question=args.question)}
    for f, row, z in zip(files, picks, zs, strict=True):
        out = {"file": str(f.relative_to(folder)), "true_label": row["labels"][0],
               "zero_shot": z["label"], "caption": captions[str(f)], "tags": tags[str(f)]}
        if str(f) in answers:
            out["question"] = args.question
            out["answer"] = answers[str(f)]
        if args.format == "jsonl":
            print(json.dumps(out, ensure_ascii=False))
        else:
            print(f"\n{out['file']}  (label from its name: {out['true_label']})")
            print(f"  zero-shot CLAP : {out['zero_shot']}")
            print(f"  caption        : {out['caption']}")
            print(f"  tags           : {', '.join(out['tags'])}")
            if "answer" in out:
                print(f"  Q: {out['question']}\n  A: {out['answer']}")
    log.info("\n[mats] model load %.1f s, %d clips in %.1f s", t_load - t0, len(files), time.time() - t_load)
    return 0
