"""Running the app: the listening socket, uvicorn's settings, and when to warn about exposure."""

from __future__ import annotations

import ipaddress
import socket

__all__ = ["is_loopback", "exposure_warning", "bind", "uvicorn_config"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, api_key: str | None) -> str | None:
    if is_loopback(host) or api_key:
        return None
    return (f"listening on {host} without an API key: anyone who can reach this "
            "port can use the model (set --api-key or MATS_API_KEY)")


def bind(host: str, port: int, backlog: int) -> socket.socket:
    """A listening socket with a normal backlog (uvicorn then serves on it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise RuntimeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(backlog)
    return sock


def uvicorn_config(app, settings):
    """uvicorn's own access log is off: RequestGuard writes the one line per request. The HTTP
    protocol is uvicorn's h11 one with a deadline for the request headers and a cap on open
    connections (:mod:`mats.server.protocol`)."""
    import uvicorn

    from .protocol import protocol_class
    return uvicorn.Config(app, access_log=False, log_level="warning", lifespan="on",
                          http=protocol_class(settings), loop="mats.server.protocol:event_loop",
                          timeout_keep_alive=max(1, int(round(settings.keep_alive_s))),
                          backlog=settings.backlog, timeout_graceful_shutdown=5, log_config=None)
