"""``python -m mats ...`` is the `mats` command."""

from .cli import run

run()
