"""Entry point of the `mats` command (``python -m mats.cli`` and ``torchrun -m mats.cli`` too)."""

import sys

from .commands import main

if __name__ == "__main__":
    sys.exit(main())
