"""Reading JSONL files with errors that point at the line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator


def iter_jsonl(path: str | Path, error: type[Exception] = ValueError) -> Iterator[tuple[str, object]]:
    """``(where, row)`` for each non-blank line; ``where`` is ``"path:line"`` for error messages.

    Every way a file can be bad ends in one ``error`` naming the file (and the line where there is
    one): unreadable (permission, a folder), invalid UTF-8, invalid JSON, nesting too deep."""
    lineno = 0
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise error(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
                except RecursionError:
                    raise error(f"{path}:{lineno}: invalid JSON (nested too deeply)") from None
                yield f"{path}:{lineno}", row
    except UnicodeDecodeError:
        raise error(_utf8_error(path)) from None
    except OSError as e:  # permission denied, a folder, a name too long: the system's own words
        raise error(f"{path}: cannot read: {(e.strerror or type(e).__name__).lower()}") from None


def _utf8_error(path: str | Path) -> str:
    """Where the first invalid UTF-8 byte is: text mode only says the offset in its buffer."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return (f"{path}:{lineno}: invalid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                        "save the file as UTF-8")
    return f"{path}: invalid UTF-8; save the file as UTF-8"
