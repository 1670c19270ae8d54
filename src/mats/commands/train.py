"""`mats train`: text-only training from a config file plus command-line overrides."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "train", help="train mapper + LoRA on a text corpus (no audio needed)", parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Train a MATS model from text only. The config (JSON or TOML) has two sections, "model"
(CLAP, LLM, mapper, LoRA, prompt style) and "train" (corpus files with sampling weights,
schedule, noise, checkpoints); see configs/default.json and configs/paper-msclap-vicuna7b.json.

Every value can be overridden with --set section.key=value (JSON values), e.g.
  mats train --config configs/default.json --set train.steps=200 --set train.lr=1e-4

The run folder (train.out_dir) receives run_config.json, log.csv, checkpoints/ (resumable:
re-running the same command continues from the last checkpoint) and, at the end, model/
(config.json, mapper.safetensors, lora/, santa/, loss.png) which `--model` accepts everywhere.

Several processes: torchrun --nproc-per-node N -m mats.cli train --config ...

Progress and status go to stderr; the last line on stdout is the model folder.""")
    p.add_argument("--config", help="JSON or TOML run config (default: built-in defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable)")
    p.add_argument("--out", help="shortcut for --set train.out_dir=DIR")
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints in out_dir")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from ..train.config import RunConfig
    from ..train.trainer import train
    overrides = list(args.overrides) + ([f"train.out_dir={args.out}"] if args.out else [])
    cfg = RunConfig.load(args.config, overrides)
    if not cfg.train.corpus:
        raise ValueError("no corpus configured: set train.corpus in the config "
                         "(run `mats corpus build` for the default corpus)")
    import os
    final = train(cfg, resume=not args.no_resume, progress=not args.quiet)
    if os.environ.get("RANK", "0") == "0":
        print(final)
    return 0
