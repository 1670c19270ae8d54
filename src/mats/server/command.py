"""`mats serve`: load a model and serve the API and the page with uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
import sys
from pathlib import Path

EPILOG = """\
Open http://127.0.0.1:8000/ for the page; the API reference is at /docs.

Endpoints (POST takes JSON or multipart/form-data):
  GET  /health   /v1/info
  POST /v1/caption  /v1/tag  /v1/music  /v1/ask  /v1/zero-shot  /v1/embed

  curl -s localhost:8000/v1/caption -F file=@dog.wav
  curl -s localhost:8000/v1/ask -F file=@dog.wav -F question='What animal is it?'
  curl -s localhost:8000/v1/zero-shot -F file=@dog.wav -F labels='dog,cat,rain'
  curl -s localhost:8000/v1/tag -H 'Content-Type: application/json' \\
       -d "{\\"audio\\": \\"$(base64 -w0 dog.wav)\\", \\"explain\\": true}"

Fields: question (ask), bridge, per_window, explain, top_k, seed, max_new_tokens, num_beams, rerank,
filename. Errors are {"error": ..., "status": N}; a bad field is a 422 naming it.

Requests arriving within --batch-window-ms of each other are decoded together (up to --max-batch);
answers are the same as one at a time. The "path" field (a file on the server) is off unless
--allow-dir names the one folder it may read. With --api-key (or MATS_API_KEY) every /v1/ request
needs 'Authorization: Bearer KEY'."""


def add_parser(sub) -> None:
    from .app import Settings
    d = Settings()
    p = sub.add_parser("serve", help="serve a model: a web page and an HTTP API",
                       description="Serve one model over HTTP: a web page at / and a JSON API "
                                   "(caption, tag, music, ask, zero-shot, embed) with micro-batching.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model folder (default: the offline default model)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: best available)")
    p.add_argument("--batch-window-ms", type=float, default=d.batch_window_ms,
                   help=f"how long a request waits for others to share its batch (default {d.batch_window_ms:g})")
    p.add_argument("--max-batch", type=int, default=d.max_batch,
                   help=f"most requests decoded together (default {d.max_batch})")
    p.add_argument("--max-body-mb", type=float, default=d.max_upload_bytes / 2 ** 20,
                   help=f"largest request body, in MiB (default {d.max_upload_bytes / 2 ** 20:g})")
    p.add_argument("--max-decoded-samples", type=int,
                   help="refuse audio that decodes to more samples than this (default: the CLI's budget)")
    p.add_argument("--timeout", type=float, default=d.request_timeout_s,
                   help=f"seconds one request may take, upload included (default {d.request_timeout_s:g})")
    p.add_argument("--keep-alive", type=float, default=d.keep_alive_s,
                   help=f"seconds an idle connection stays open (default {d.keep_alive_s:g})")
    p.add_argument("--allow-dir", metavar="DIR",
                   help="let the JSON/form field \"path\" read audio files under DIR (only there)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1/ (default: $MATS_API_KEY)")
    p.add_argument("--quiet", action="store_true", help="no per-request log lines on stderr")
    p.set_defaults(func=_serve)


def settings_from_args(args):
    from .app import Settings
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be 0-65535, got {args.port}")
    for name in ("max_body_mb", "timeout", "keep_alive"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive")
    if args.batch_window_ms < 0 or args.max_batch < 1:
        raise ValueError("--batch-window-ms must be >= 0 and --max-batch >= 1")
    allow = None
    if args.allow_dir:
        if args.allow_dir.startswith("~"):
            raise ValueError(f"--allow-dir {args.allow_dir}: write the folder without '~'")
        allow = Path(args.allow_dir)
        if not allow.is_dir():
            raise ValueError(f"--allow-dir {args.allow_dir}: no such folder")
    return Settings(batch_window_ms=args.batch_window_ms, max_batch=args.max_batch,
                    max_upload_bytes=int(args.max_body_mb * 2 ** 20),
                    max_decoded_samples=args.max_decoded_samples, request_timeout_s=args.timeout,
                    keep_alive_s=args.keep_alive, allow_dir=allow,
                    api_key=args.api_key or os.environ.get("MATS_API_KEY") or None)


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
    return (f"mats serve: warning: listening on {host} without an API key: anyone who can reach this "
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
    """uvicorn's own access log is off: RequestGuard writes the one line per request."""
    import uvicorn
    return uvicorn.Config(app, access_log=False, log_level="warning", lifespan="on",
                          timeout_keep_alive=max(1, int(round(settings.keep_alive_s))),
                          backlog=settings.backlog, timeout_graceful_shutdown=5, log_config=None)


def setup_logging(quiet: bool) -> None:
    logger = logging.getLogger("mats.server")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def _serve(args) -> int:
    import uvicorn

    from ..pipeline import MATS
    from .app import create_app

    settings = settings_from_args(args)
    sock = bind(args.host, args.port, settings.backlog)  # before the model loads: a taken port fails fast
    try:
        setup_logging(args.quiet)
        warning = exposure_warning(args.host, settings.api_key)
        if warning:
            print(warning, file=sys.stderr)
        m = MATS.from_pretrained(args.model, device=args.device)
        app = create_app(m, settings)
        host, port = sock.getsockname()[:2]
        print(f"MATS serving on http://{host}:{port}/ (API reference at /docs; Ctrl-C stops)",
              file=sys.stderr, flush=True)
        server = uvicorn.Server(uvicorn_config(app, settings))
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0
