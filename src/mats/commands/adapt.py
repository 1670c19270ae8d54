"""`mats adapt`: a domain model folder from the domain's words (memory only, or a mixed fine-tune)."""

from __future__ import annotations

import argparse
import json
import logging

from ..adapt import GATE_MARGIN, AdaptConfig
from . import add_device

log = logging.getLogger("mats")


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "adapt", help="adapt a model to your sounds from text alone (memory in seconds, fine-tune in minutes)",
        parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Adapt a model to a domain described in words, no recordings needed. The domain is one of
  --texts FILE          one description per line ("A kettle whistles on the stove.")
  --corpus FILE.jsonl   rows in the training format ({"text", "task", "answer", ...})
  --labels "a,b,c"      sound names, expanded into captions, tags and QA like the default corpus

--steps 0 (the default) adds the domain's texts to the base model's Santa memory (and so to
the texts a retrieval-augmented model reads in its prompt; one text per name for --labels),
behind a gate: a clip sees them only when one is nearer to it than the base memory's best by
--gate, so other clips keep the base model's answers. The weights stay the base model's. Seconds.

--steps N fine-tunes mapper + LoRA from the base model for N steps on a mix: --mix of every
batch from the domain, the rest from the base model's own training corpus, so that it does not
forget the rest (--mix 1 trains on the domain alone, which forgets). Minutes; re-running the
same command after a kill resumes it.

Before and after: --eval DIR (a labelled folder: metadata.jsonl with "labels") is scored with
the base and the adapted model, and the dev split of the real sounds always is (what the
adaptation cost elsewhere; --no-check skips it). The numbers go into the folder's model card.
Nothing is written unless the whole adaptation succeeds; the last line on stdout is the folder.""")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--texts", metavar="FILE", help="text file, one description per line")
    src.add_argument("--corpus", metavar="FILE", help="JSONL corpus in the training format")
    src.add_argument("--labels", metavar="A,B,C", help="sound names, comma-separated")
    p.add_argument("--model", help="base model folder (default: the shipped default model)")
    p.add_argument("--steps", type=int, default=0, help="fine-tune steps (default 0: memory only)")
    p.add_argument("--mix", type=float, default=AdaptConfig.mix,
                   help=f"the domain's share of every fine-tune batch, in (0, 1] (default {AdaptConfig.mix:g}; "
                        "1: domain only)")
    p.add_argument("--batch-size", type=int, default=16, help="fine-tune batch (default 16)")
    p.add_argument("--lr", type=float, default=3e-4, help="fine-tune learning rate (default 3e-4)")
    p.add_argument("--base-corpus", nargs="+", metavar="FILE",
                   help="the base model's training corpus for the mix (default: the files its config names, "
                        "or the default corpus rebuilt for a model trained on it)")
    p.add_argument("--recluster", action="store_true",
                   help="re-run k-means over the old and new memory texts (default: each new text joins its "
                        "nearest old cluster)")
    gate = p.add_mutually_exclusive_group()
    gate.add_argument("--gate", type=float, metavar="MARGIN", default=None,
                      help="a clip sees the domain's texts only when one of them is nearer to its embedding than "
                           f"the base memory's best by this cosine margin (default: {GATE_MARGIN:g}, chosen on "
                           "the dev split; see docs/adapt.md)")
    gate.add_argument("--no-gate", action="store_true",
                      help="every clip sees the domain's texts alike (the general clips then change too)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval", metavar="DIR", help="labelled folder to score before and after")
    p.add_argument("--no-check", action="store_true",
                   help="skip the forgetting check on the dev split of the real sounds")
    p.add_argument("--eval-limit", type=int, metavar="N", help="score only the first N clips of each set")
    p.add_argument("--out", required=True, help="the new model folder (must not exist, or be empty)")
    add_device(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from ..adapt import adapt, describe

    config = AdaptConfig(out=args.out, model=args.model, texts=args.texts, corpus=args.corpus, labels=args.labels,
                         steps=args.steps, mix=args.mix, batch_size=args.batch_size, lr=args.lr,
                         base_corpus=args.base_corpus, recluster=args.recluster,
                         gate=None if args.no_gate else (GATE_MARGIN if args.gate is None else args.gate),
                         seed=args.seed,
                         device=args.device, dtype=args.dtype)
    if args.eval_limit is not None and args.eval_limit < 1:
        raise ValueError(f"--eval-limit must be >= 1, got {args.eval_limit}")
    evals = {}
    if args.eval:
        evals["eval"] = args.eval
    if not args.no_check:
        from ..data.sounds import fetch_sound_split
        evals["dev (forgetting check)"] = str(fetch_sound_split("dev"))
    report = adapt(config, evals=evals, progress=not args.quiet, eval_limit=args.eval_limit)
    s = report["seconds"]
    log.info("adapted (%s) in %.1f s (model load %.1f s); memory: %d + %d texts", report["how"], s["adapt"],
             s["load_base"], report["memory"]["base_texts"], report["memory"]["added"])
    for name, c in report["evaluation"].items():
        log.info("%s: tag keyword accuracy %.1f -> %.1f (%+.1f points; %d clips won, %d lost, of %d)", name,
                 100 * c["before"], 100 * c["after"], c["points"], c["won"], c["lost"], c["n"])
    if report["evaluation"]:
        log.info("%s", json.dumps(describe(report)["evaluation"]))
    print(report["_model"].folder)
    return 0
