"""The settings of one server (no web framework imported here, so `mats --help` stays quick)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .guard import default_budget

__all__ = ["Settings"]


@dataclass
class Settings:
    """Limits and batching of one server. The defaults suit a laptop serving a few people."""
    batch_window_ms: float = 20.0  # how long the worker waits for more requests to join a batch
    max_batch: int = 16  # requests decoded together at most
    max_queue: int = 256  # requests waiting for the model; more are answered 503
    max_upload_bytes: int = 50 * 2 ** 20
    max_inflight_bytes: int | None = None  # request bodies in flight together; None: 4 x max_upload_bytes
    max_decoded_samples: int | None = None  # None: the audio front end's budget (same as the CLI)
    max_windows: int = 60  # per_window answers per request (10 minutes of 10 s windows)
    request_timeout_s: float = 300.0  # a whole request: upload, queue and model
    keep_alive_s: float = 5.0  # idle keep-alive connections are closed after this
    backlog: int = 1024  # the listen queue of the socket
    header_timeout_s: float = 10.0  # a request line and headers must arrive within this; else closed
    max_connections: int | None = None  # open connections at most; None: from the open-file limit
    allow_dir: Path | None = None  # the `path` field reads files under this folder only; None: off
    api_key: str | None = None  # bearer token required on all but the page, /docs, /health; None: open

    def inflight_budget(self) -> int:
        return int(self.max_inflight_bytes) if self.max_inflight_bytes else 4 * int(self.max_upload_bytes)

    def budget(self) -> int:
        return int(self.max_decoded_samples) if self.max_decoded_samples else default_budget()
