"""uvicorn's h11 protocol with two defences against cheap hostile clients.

- **A deadline for the request line and headers.** uvicorn's keep-alive timeout starts only after an
  answer and the app's request timeout only once the headers are in, so a client that opens a
  connection and never finishes its headers would hold it (and a file descriptor) forever. Here a
  timer starts when the connection opens, and again when the first byte of the next request arrives
  on a keep-alive connection; it is cancelled once a request's headers are complete. On expiry the
  connection is closed (with a 408 if part of a request had arrived).
- **A cap on open connections.** Past ``max_connections`` a new connection gets a short 503 with
  ``Connection: close`` and is closed at once, so the process never runs out of file descriptors
  (which makes asyncio log a traceback for every failed ``accept``). At most one log line per
  :data:`LOG_EVERY_S` seconds says how many were refused.

Should the process still run out of descriptors (asyncio accepts a whole burst of queued connections
before any of them reaches the cap), :func:`event_loop` (``uvicorn.Config(loop=...)``) turns asyncio's
"socket.accept() out of system resource" tracebacks, logged once per failed accept, into one line per
:data:`LOG_EVERY_S`; asyncio itself pauses accepting for a second and goes on.

``protocol_class(settings)`` gives the class to pass to ``uvicorn.Config(http=...)``.
"""

from __future__ import annotations

import asyncio
import logging
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .middleware import error_body
from .settings import Settings

__all__ = ["LOG_EVERY_S", "MATSH11Protocol", "default_max_connections", "event_loop", "protocol_class",
           "raise_open_file_limit"]

log = logging.getLogger("mats.server")

LOG_EVERY_S = 10.0  # at most one "refused connections" line this often


def _open_file_limits() -> tuple[int, int] | None:
    try:
        import resource
    except ImportError:  # not on this platform (Windows)
        return None
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def default_max_connections(backlog: int = 0) -> int:
    """min(1000, the open-file soft limit - 100 - ``backlog``): room is left for the model's files,
    uploads' temporary files, the listening socket and a burst of queued connections accepted at once;
    at least half the limit."""
    limits = _open_file_limits()
    if limits is None:
        return 1000
    soft = limits[0]
    if soft < 0:  # RLIM_INFINITY
        return 1000
    return max(1, min(1000, max(soft // 2, soft - 100 - backlog)))


def raise_open_file_limit() -> tuple[int, int] | None:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit where allowed; the (old, new) soft
    limits, or None where there is no such limit."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, hard


def _raw_response(status: int, reason: str, message: str) -> bytes:
    body = error_body(status, message)
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class _RefusalLog:
    """Counts refused connections; logs one line per ``LOG_EVERY_S`` at most."""

    def __init__(self):
        self.last = -float("inf")
        self.pending = 0

    def refused(self, cap: int) -> None:
        self.pending += 1
        now = time.monotonic()
        if now - self.last >= LOG_EVERY_S:
            log.warning("refused %d connection(s) with 503: %d open, the limit (--max-connections)",
                        self.pending, cap)
            self.pending = 0
            self.last = now


class MATSH11Protocol(H11Protocol):
    """:class:`H11Protocol` with a header deadline and a connection cap (set by :func:`protocol_class`)."""

    header_timeout_s: float = 10.0
    max_connections: int = 1000
    refusals: _RefusalLog = _RefusalLog()

    _header_timer: asyncio.TimerHandle | None = None
    _refused: bool = False
    _partial: bool = False  # part of a request (not its whole headers) has arrived

    # -- the connection cap -----------------------------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections:
            self._refused = True
            self.transport = transport
            self.refusals.refused(self.max_connections)
            try:
                transport.write(_raw_response(503, "Service Unavailable",
                                              "the server has too many open connections; retry in a few "
                                              "seconds"))
            finally:
                transport.close()
            return
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        if self._refused:
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        awaiting = self.conn.their_state is h11.IDLE
        if awaiting and data and self._header_timer is None:  # the next request on a kept-alive connection
            self._arm_header_timer()
        if awaiting and data:
            self._partial = True
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
            # The headers are in (a request runs; the app's timeout governs it), or the connection ends.
            self._disarm_header_timer()
            self._partial = False

    # -- the header deadline ---------------------------------------------------------------------
    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        if self.header_timeout_s and self.header_timeout_s > 0:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self._partial and self.conn.our_state is h11.IDLE:
            self.transport.write(_raw_response(
                408, "Request Timeout",
                f"the request line and headers did not arrive within {self.header_timeout_s:g} s"))
        self.transport.close()


class _QuietAcceptErrors:
    """A loop exception handler: accept() out of descriptors is one line per ``LOG_EVERY_S`` at most,
    without a traceback; anything else goes to asyncio's default handler."""

    def __init__(self):
        self.last = -float("inf")
        self.count = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        if context.get("message") != "socket.accept() out of system resource":
            return loop.default_exception_handler(context)
        self.count += 1
        now = time.monotonic()
        if now - self.last >= LOG_EVERY_S:
            log.warning("cannot accept connections: %s (%d time(s)); retrying; raise the open-file limit "
                        "(ulimit -n) or lower --max-connections", context.get("exception"), self.count)
            self.count = 0
            self.last = now


def event_loop() -> asyncio.AbstractEventLoop:
    """uvicorn's own choice of event loop, with :class:`_QuietAcceptErrors` as its exception handler
    (given to uvicorn as ``loop="mats.server.protocol:event_loop"``)."""
    from uvicorn.loops.auto import auto_loop_factory
    loop = auto_loop_factory(use_subprocess=False)()
    loop.set_exception_handler(_QuietAcceptErrors())
    return loop


def protocol_class(settings: Settings) -> type[MATSH11Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with ``settings``' deadline and cap."""
    cap = settings.max_connections or default_max_connections(settings.backlog)
    return type("MATSH11Protocol", (MATSH11Protocol,), {
        "header_timeout_s": float(settings.header_timeout_s), "max_connections": int(cap),
        "refusals": _RefusalLog()})
