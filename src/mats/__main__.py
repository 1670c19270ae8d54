"""``python -m mats ...`` is the `mats` command."""

import sys

from .commands import main

sys.exit(main())
