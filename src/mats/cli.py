"""Entry point of the `mats` command (``python -m mats.cli`` and ``torchrun -m mats.cli`` too)."""

import os
import sys

from .commands import main


def run() -> None:
    """The console entry: ``main()``, then, once the output is flushed, exit without the interpreter's
    teardown (1.4-1.6 s of module and thread clean-up after a model run). Training keeps the normal
    exit: its process groups and writers shut down in order."""
    rc = main()
    if "train" in sys.argv[1:2]:
        sys.exit(rc)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    run()
