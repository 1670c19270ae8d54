"""An upload on its way to the model: the audio saved to a temporary file (or a shared file), the
options that came with it, and the name the answer gives it. Shared by every endpoint that takes
audio (the task endpoints, zero-shot, embed and the OpenAI-compatible chat completions)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Upload", "write_temp", "write_temp_bytes"]


@dataclass
class Upload:
    options: Any  # the request's validated options (a pydantic model)
    path: Path  # the audio to read: a temporary copy of the upload, or an allowed file
    name: str  # what the answer calls it
    temporary: bool

    def close(self):
        if self.temporary:
            self.path.unlink(missing_ok=True)


def suffix_of(name: str | None) -> str:
    """The file name's extension when it is a plausible one (it helps the decoder guess), else ""."""
    suffix = Path(name or "").suffix.lower()
    return suffix if suffix.isascii() and 1 < len(suffix) <= 6 and suffix[1:].isalnum() else ""


async def write_temp(write, name: str | None) -> Path:
    """A new temporary file filled by ``await write(f)``; removed again if writing fails."""
    fd, tmp = tempfile.mkstemp(prefix="mats-upload-", suffix=suffix_of(name))
    try:
        with os.fdopen(fd, "wb") as f:
            await write(f)
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


async def write_temp_bytes(data: bytes, name: str | None) -> Path:
    async def write(f):
        f.write(data)
    return await write_temp(write, name)
