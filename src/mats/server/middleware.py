"""The HTTP edge of the app, as pure ASGI middleware: the API key, the body limits (per request and
in total), the request timeout, and the one log line per request.

- The key is checked on the *route path* (the path below the app's ``root_path``, as Starlette
  routes it), so mounting the app under a prefix or giving uvicorn a root path does not move
  anything out of its reach; and it is default-deny: with a key set every path needs it except the
  page, its files, the API reference and ``/health`` (:data:`PUBLIC_PATHS`). The header is compared
  as bytes with the key's UTF-8 bytes, so a non-ASCII key works.
- Request bodies are bounded one by one (``max_upload_bytes``, 413) and together: the bytes of all
  requests in flight (announced by Content-Length, or received so far) stay under
  ``Settings.inflight_budget()``; past it a request is answered 503 with ``Retry-After``.
- A client that goes away during its upload is one log line, not a traceback.

Every answer of its own is the documented JSON ``{"error": message, "status": N}``; on the
OpenAI-compatible paths (:func:`is_openai_path`) OpenAI's ``{"error": {"message", "type", "param",
"code"}}`` instead, so that OpenAI's clients read it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from .settings import Settings

__all__ = ["RequestGuard", "BodyTooLarge", "Overloaded", "route_path", "is_public", "PUBLIC_PATHS",
           "PUBLIC_PREFIXES", "error_body", "is_openai_path", "openai_error"]

log = logging.getLogger("mats.server")

# Open with a key set: the page and its files, the API reference and the liveness probe.
PUBLIC_PATHS = frozenset({"/", "/health", "/docs", "/openapi.json"})
PUBLIC_PREFIXES = ("/static/",)
RETRY_AFTER_S = 2  # what a 503 for the in-flight budget asks the client to wait


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"the request body is over this server's limit of {limit:,} bytes",
                         headers={"connection": "close"})


class Overloaded(HTTPException):
    """The bodies of the requests in flight together would pass the server's in-flight budget."""

    def __init__(self, budget: int):
        super().__init__(503, f"the server is receiving too much at once (over {budget:,} bytes of "
                              f"request bodies in flight); retry in a few seconds",
                         headers={"retry-after": str(RETRY_AFTER_S), "connection": "close"})


# The routes that speak OpenAI's protocol, errors included (mats.server.openai_api).
OPENAI_PATHS = ("/v1/chat/completions", "/v1/models")

_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 408: "timeout_error", 413: "invalid_request_error",
                 415: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error",
                 499: "client_closed_request", 503: "server_overloaded", 504: "timeout_error"}


def is_openai_path(path: str) -> bool:
    """Whether ``path`` (a route path) is one of the OpenAI-compatible routes."""
    p = _normalised(path)
    return any(p == o or p.startswith(o + "/") for o in OPENAI_PATHS)


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    """OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_body(status: int, message: str, openai: bool = False) -> bytes:
    if openai:
        return json.dumps(openai_error(status, message)).encode()
    return json.dumps({"error": message, "status": status}).encode()


def route_path(scope) -> str:
    """The path the app's router matches: ``scope["path"]`` without the ``root_path`` it was mounted
    under (what :func:`starlette._utils.get_route_path` does)."""
    path = scope.get("path") or "/"
    root = scope.get("root_path") or ""
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root):] if path[len(root)] == "/" else path


def _normalised(path: str) -> str:
    path = re.sub(r"/{2,}", "/", path or "/")
    return path.rstrip("/") or "/"


def is_public(path: str) -> bool:
    """Whether ``path`` (a route path) is open without the key. Anything not listed needs it."""
    p = _normalised(path)
    return p in PUBLIC_PATHS or any(p.startswith(prefix) for prefix in PUBLIC_PREFIXES)


def _authorised(headers: dict, key: str) -> bool:
    raw = headers.get(b"authorization", b"")
    scheme, _, token = raw.strip().partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(b" \t"), key.encode("utf-8"))


class _Inflight:
    """Bytes of request bodies the server holds or has been promised, over all requests."""

    def __init__(self):
        self.used = 0

    def take(self, n: int, budget: int) -> bool:
        if n > 0 and self.used + n > budget:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used = max(0, self.used - n)


class RequestGuard:
    """Pure ASGI middleware, outermost of ours: it sees every request once."""

    def __init__(self, app, settings: Settings):
        self.app = app
        self.settings = settings
        self.inflight = _Inflight()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        s = self.settings
        budget = s.inflight_budget()
        limit = min(s.max_upload_bytes, budget)  # one body over the whole budget could never pass
        t0 = time.perf_counter()
        state = {"status": None, "body_done": False, "received": 0, "held": 0, "gone": False}
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        openai = is_openai_path(route_path(scope))

        async def reply(status: int, message: str, extra: dict | None = None):
            body = error_body(status, message, openai)
            hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            hdrs += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
            state["status"] = status
            await send({"type": "http.response.start", "status": status, "headers": hdrs})
            await send({"type": "http.response.body", "body": body})

        async def guarded_receive():
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    raise BodyTooLarge(limit)
                extra = state["received"] - state["held"]
                if extra > 0:  # more than announced (or no Content-Length): count it as it comes
                    if not self.inflight.take(extra, budget):
                        raise Overloaded(budget)
                    state["held"] += extra
                state["body_done"] = not message.get("more_body", False)
            elif message["type"] == "http.disconnect" and not state["body_done"]:
                state["gone"] = True
            return message

        async def tracked_send(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            await send(message)

        try:
            if s.api_key and not is_public(route_path(scope)) and not _authorised(headers, s.api_key):
                return await reply(401, "this server needs an API key: send the header "
                                        "'Authorization: Bearer <key>'", {"www-authenticate": "Bearer"})
            length = headers.get(b"content-length")
            announced = int(length) if length is not None and length.isdigit() else 0
            if announced > limit:
                return await reply(413, f"the request body ({announced:,} bytes) is over this server's "
                                        f"limit of {limit:,} bytes", {"connection": "close"})
            if not self.inflight.take(announced, budget):
                e = Overloaded(budget)
                return await reply(503, e.detail, e.headers)
            state["held"] = announced
            try:
                await asyncio.wait_for(self.app(scope, guarded_receive, tracked_send), s.request_timeout_s)
            except asyncio.TimeoutError:
                if state["status"] is None:
                    if state["body_done"]:
                        await reply(504, f"no answer within this server's request timeout of "
                                         f"{s.request_timeout_s:g} s; try a shorter clip or retry later")
                    else:
                        await reply(408, f"the request body did not arrive within {s.request_timeout_s:g} s",
                                    {"connection": "close"})
            except ClientDisconnect:
                state["gone"] = True
            except HTTPException as e:  # raised by guarded_receive where no handler of the app saw it
                if state["status"] is not None:
                    raise
                await reply(e.status_code, str(e.detail), e.headers)
        finally:
            self.inflight.give(state["held"])
            ms = (time.perf_counter() - t0) * 1000
            if state["gone"] and state["status"] is None:
                log.info("client went away during upload: %s %s after %.0f ms", scope.get("method"),
                         scope.get("path"), ms)
            else:
                log.info("%s %s %s %.0f ms", scope.get("method"), scope.get("path"), state["status"] or "-", ms)
