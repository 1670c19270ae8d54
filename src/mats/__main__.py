"""``python -m mats ...`` is the `mats` command."""

from .commands import run

run()
