"""How every benchmark ends: its result as JSON on stdout, and in a file with --out."""

import json
from pathlib import Path


def emit(result: dict, out: str | None, indent: int = 1) -> int:
    text = json.dumps(result, indent=indent)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
    return 0
