"""`mats serve`: a small HTTP JSON API around one loaded model (standard library only).

Endpoints::

    GET  /health                    {"status": "ok"}
    GET  /v1/info                   model folder, CLAP, LLM, tasks, bridges, limits
    POST /v1/caption | /v1/tag | /v1/music | /v1/ask

A POST carries the audio in one of two ways:

- JSON (``Content-Type: application/json``): ``{"path": "/data/clip.wav", "question": "...",
  "bridge": "santa", "per_window": false, "seed": 0, "max_new_tokens": null, "num_beams": null,
  "rerank": null}``,
  where ``path`` is a file on the *server* machine (refused when started with ``--uploads-only``).
- Raw audio (``Content-Type: audio/*`` or ``application/octet-stream``): the body is the file's bytes;
  the other fields go in the query string, e.g. ``POST /v1/ask?question=What%20is%20it%3F``
  (``filename=`` names the upload in the answer).

The answer is the object ``mats caption --format jsonl`` prints for the file
(``{"file", "task", "text", "bridge"[, "tags", "question"]}``); with ``per_window`` a JSON array of
such objects, one per CLAP window, with ``start``/``end`` seconds. Failures are JSON too:
``{"error": "..."}`` with 400 (unreadable audio, missing question, bad field), 404 (unknown task or
path), 411 (no Content-Length), 413 (body over the limit), 415 (other content types).

One model serves every request; generation runs under a lock, one request at a time (torch on CPU
gains nothing from parallel requests), while other connections wait their turn.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["MATSServer", "make_server", "ENDPOINT_TASKS", "DEFAULT_MAX_BODY_MB", "EPILOG"]

# endpoint name -> pipeline task
ENDPOINT_TASKS = {"caption": "caption", "tag": "tags", "music": "music", "ask": "qa"}
DEFAULT_MAX_BODY_MB = 50.0
_DRAIN_LIMIT = 32 << 20  # an oversized body up to this size is read and dropped, so the 413 arrives cleanly
_FIELDS = ("path", "question", "bridge", "per_window", "seed", "max_new_tokens", "num_beams", "rerank",
           "filename")
_SUFFIXES = {"audio/wav": ".wav", "audio/x-wav": ".wav", "audio/wave": ".wav", "audio/vnd.wave": ".wav",
             "audio/flac": ".flac", "audio/x-flac": ".flac", "audio/ogg": ".ogg", "audio/opus": ".opus",
             "audio/mpeg": ".mp3", "audio/mp3": ".mp3", "audio/aiff": ".aiff", "audio/x-aiff": ".aiff"}

EPILOG = """\
Endpoints:
  GET  /health        {"status": "ok"}
  GET  /v1/info       model folder, CLAP, LLM, tasks, bridges
  POST /v1/caption    /v1/tag    /v1/music    /v1/ask

Send audio as JSON naming a file on the server machine:
  curl -s localhost:8000/v1/caption -H 'Content-Type: application/json' -d '{"path": "/data/dog.wav"}'
  curl -s localhost:8000/v1/ask -d '{"path": "/data/dog.wav", "question": "What animal is it?"}' \\
       -H 'Content-Type: application/json'
or upload the bytes (other fields in the query string):
  curl -s localhost:8000/v1/tag -H 'Content-Type: audio/wav' --data-binary @dog.wav
  curl -s 'localhost:8000/v1/ask?question=Is%20it%20loud%3F' -H 'Content-Type: audio/ogg' --data-binary @x.ogg

JSON fields / query parameters: path, question (ask), bridge, per_window, seed, max_new_tokens,
num_beams, rerank (CLAP-scored beam candidates, 0 = off), filename (the name given to an upload in the answer). The answer is the object
`mats caption --format jsonl` prints; per_window gives a JSON array, one object per window. Errors
are {"error": ...} with status 400/404/411/413/415.

The JSON "path" form reads any audio file the server process can read: keep the default host
127.0.0.1, or use --uploads-only when others can reach the port."""


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = int(status)
        self.message = message


class MATSServer(ThreadingHTTPServer):
    """An HTTP server holding one loaded :class:`mats.pipeline.MATS`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, mats, max_body_bytes: int = int(DEFAULT_MAX_BODY_MB * 2 ** 20),
                 uploads_only: bool = False, quiet: bool = False):
        self.mats = mats
        self.max_body_bytes = int(max_body_bytes)
        self.uploads_only = uploads_only
        self.quiet = quiet
        self.lock = threading.Lock()
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def info(self) -> dict:
        m = self.mats
        clap = m.clap.describe() if hasattr(m.clap, "describe") else {"name": m.clap.name}
        return {
            "model": str(m.folder),
            "clap": clap,
            "llm": m.model.config.llm,
            "tasks": {name: task for name, task in ENDPOINT_TASKS.items()},
            "bridges": available_bridges(m),
            "default_bridge": "santa",
            "max_body_bytes": self.max_body_bytes,
            "uploads_only": self.uploads_only,
        }


def available_bridges(m) -> list[str]:
    return list(m.bridges)


def make_server(mats, host: str = "127.0.0.1", port: int = 8000, max_body_bytes: int | None = None,
                uploads_only: bool = False, quiet: bool = False) -> MATSServer:
    """A bound (not yet serving) server; port 0 picks a free port (see ``server.server_address``)."""
    limit = int(DEFAULT_MAX_BODY_MB * 2 ** 20) if max_body_bytes is None else int(max_body_bytes)
    return MATSServer((host, port), mats, max_body_bytes=limit, uploads_only=uploads_only, quiet=quiet)


# -- request parsing ----------------------------------------------------------------------------------

def _as_bool(value, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off", ""):
        return False
    raise HTTPError(400, f"{name} must be true or false, got {value!r}")


def _as_int(value, name: str, lo: int, hi: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise HTTPError(400, f"{name} must be an integer, got {value!r}")
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise HTTPError(400, f"{name} must be an integer, got {value!r}") from None
    if isinstance(value, float) and v != value:
        raise HTTPError(400, f"{name} must be an integer, got {value!r}")
    if not lo <= v <= hi:
        raise HTTPError(400, f"{name} must be between {lo} and {hi}, got {v}")
    return v


def _as_str(value, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise HTTPError(400, f"{name} must be a string, got {type(value).__name__}")
    return value


def parse_options(fields: dict, task: str, bridges: list[str]) -> dict:
    """Validated run options from JSON fields or query parameters."""
    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:
        raise HTTPError(400, f"unknown field(s) {', '.join(unknown)}; known: {', '.join(_FIELDS)}")
    question = _as_str(fields.get("question"), "question")
    if task == "qa":
        if not question or not question.strip():
            raise HTTPError(400, "this task needs a non-empty \"question\" (JSON field, or ?question= "
                                 "with a raw audio body)")
        question = question.strip()
    elif question is not None:
        raise HTTPError(400, "\"question\" only applies to /v1/ask")
    bridge = _as_str(fields.get("bridge"), "bridge") or "santa"
    if bridge not in bridges:
        raise HTTPError(400, f"unknown or unavailable bridge {bridge!r}; available: {', '.join(bridges)}")
    return {"question": question, "bridge": bridge,
            "per_window": _as_bool(fields.get("per_window", False), "per_window"),
            "seed": _as_int(fields.get("seed"), "seed", 0, 2 ** 31 - 1) or 0,
            "max_new_tokens": _as_int(fields.get("max_new_tokens"), "max_new_tokens", 1, 1024),
            "num_beams": _as_int(fields.get("num_beams"), "num_beams", 1, 16),
            "rerank": _as_int(fields.get("rerank"), "rerank", 0, 16)}


class Handler(BaseHTTPRequestHandler):
    server: MATSServer
    server_version = "mats-serve"

    # -- plumbing -------------------------------------------------------------------------------
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        if not self.server.quiet:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def _send_json(self, status: int, obj) -> None:
        body = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._send_json(status, {"error": message, "status": status})

    def _route(self) -> tuple[str, dict]:
        parts = urlsplit(self.path)
        path = unquote(parts.path).rstrip("/") or "/"
        return path, parse_qs(parts.query, keep_blank_values=True)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            raise HTTPError(411, "chunked uploads are not supported; send a Content-Length")
        raw = self.headers.get("Content-Length")
        if raw is None:
            raise HTTPError(411, "a Content-Length header is required")
        try:
            length = int(raw)
            if length < 0:
                raise ValueError
        except ValueError:
            raise HTTPError(400, f"bad Content-Length {raw!r}") from None
        limit = self.server.max_body_bytes
        if length > limit:
            if length <= _DRAIN_LIMIT:
                self.rfile.read(length)  # so the client, still sending, is not cut off
            else:
                self.close_connection = True
            raise HTTPError(413, f"request body of {length} bytes is over the limit of {limit} bytes "
                                 "(see mats serve --max-body-mb)")
        return self.rfile.read(length) if length else b""

    # -- methods --------------------------------------------------------------------------------
    def do_GET(self):  # noqa: N802
        path, _ = self._route()
        if path == "/health":
            return self._send_json(200, {"status": "ok"})
        if path in ("/v1/info", "/info"):
            return self._send_json(200, self.server.info())
        if path.startswith("/v1/") and path[4:] in ENDPOINT_TASKS:
            return self._error(405, f"use POST for {path}")
        return self._error(404, f"no such endpoint {path}; try GET /v1/info")

    def do_HEAD(self):  # noqa: N802
        self.do_GET()

    def do_POST(self):  # noqa: N802
        try:
            path, query = self._route()
            if not path.startswith("/v1/"):
                raise HTTPError(404, f"no such endpoint {path}; POST /v1/<task> with task one of "
                                     f"{', '.join(ENDPOINT_TASKS)}")
            name = path[4:]
            if name not in ENDPOINT_TASKS:
                raise HTTPError(404, f"unknown task {name!r}; known: {', '.join(ENDPOINT_TASKS)}")
            status, answer = self._answer(ENDPOINT_TASKS[name], query)
            self._send_json(status, answer)
        except HTTPError as e:
            self._error(e.status, e.message)
        except Exception as e:  # a bug, not the client's fault: say so, keep serving
            traceback.print_exc()
            self._error(500, f"internal error: {type(e).__name__}: {e}")

    def _other(self):
        self._error(405, f"method {self.command} is not supported; use GET or POST")

    do_PUT = do_DELETE = do_PATCH = _other  # noqa: N815

    # -- the work -------------------------------------------------------------------------------
    def _answer(self, task: str, query: dict) -> tuple[int, object]:
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        bridges = available_bridges(self.server.mats)
        if ctype == "application/json":
            body = self._read_body()
            try:
                fields = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise HTTPError(400, f"the body is not valid JSON: {e}") from None
            if not isinstance(fields, dict):
                raise HTTPError(400, "the JSON body must be an object like {\"path\": \"clip.wav\"}")
            fields = {**{k: v[-1] for k, v in query.items()}, **fields}
            opts = parse_options(fields, task, bridges)
            path = fields.get("path")
            if not isinstance(path, str) or not path.strip():
                raise HTTPError(400, "the JSON body needs \"path\" (an audio file on the server); "
                                     "to send the audio itself use Content-Type audio/* with the bytes")
            if self.server.uploads_only:
                raise HTTPError(403, "this server takes uploads only (started with --uploads-only); "
                                     "send the audio bytes with Content-Type audio/*")
            p = Path(path).expanduser()
            if not p.exists():
                raise HTTPError(404, f"{path}: no such file on the server")
            if p.is_dir():
                raise HTTPError(400, f"{path} is a directory; send one audio file per request")
            return self._run(p, fields.get("filename") or path, task, opts)
        if ctype.startswith("audio/") or ctype == "application/octet-stream":
            fields = {k: v[-1] for k, v in query.items()}
            if "path" in fields:
                raise HTTPError(400, "\"path\" goes in a JSON body; with raw audio the body is the file")
            opts = parse_options(fields, task, bridges)  # before reading: a bad request fails fast
            body = self._read_body()
            if not body:
                raise HTTPError(400, "the audio body is empty")
            name = os.path.basename(fields.get("filename") or "") or "upload"
            suffix = Path(name).suffix.lower() or _SUFFIXES.get(ctype, "")
            fd, tmp = tempfile.mkstemp(prefix="mats-upload-", suffix=suffix)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(body)
                return self._run(Path(tmp), name, task, opts)
            finally:
                os.unlink(tmp)
        if not ctype:
            raise HTTPError(415, "missing Content-Type: use application/json with {\"path\": ...} or "
                                 "audio/* (or application/octet-stream) with the audio bytes")
        raise HTTPError(415, f"unsupported Content-Type {ctype!r}: use application/json or audio/*")

    def _run(self, file: Path, name: str, task: str, opts: dict) -> tuple[int, object]:
        m = self.server.mats
        with self.server.lock:
            try:
                results = list(m.run([file], task, question=opts["question"], per_window=opts["per_window"],
                                     bridge=opts["bridge"], seed=opts["seed"], batch_size=8,
                                     max_new_tokens=opts["max_new_tokens"], num_beams=opts["num_beams"],
                                     rerank=opts["rerank"]))
            except ValueError as e:
                raise HTTPError(400, str(e).replace(str(file), name)) from None
        rows = []
        for r in results:
            d = r.to_dict()
            d["file"] = name
            if r.error:
                raise HTTPError(400, r.error.replace(str(file), name))
            rows.append(d)
        if opts["per_window"]:
            return 200, rows
        return 200, rows[0]
