"""Reading JSONL files with errors that point at the line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator


def iter_jsonl(path: str | Path, error: type[Exception] = ValueError) -> Iterator[tuple[str, object]]:
    """``(where, row)`` for each non-blank line; ``where`` is ``"path:line"`` for error messages."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
            yield f"{path}:{lineno}", row
