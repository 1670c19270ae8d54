"""Entry point of the `mats` command (``python -m mats.cli`` and ``torchrun -m mats.cli`` too)."""

from .commands import main, run  # noqa: F401  (main: the in-process API; run: the console entry)

if __name__ == "__main__":
    run()
