"""`mats serve`: one model behind a web page and an HTTP API (FastAPI app under uvicorn)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

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
with fp32 weights (the CPU default) answers are the same as one at a time. The "path" field (a file
on the server) is off unless --allow-dir names the one folder it may read. With --api-key (or
MATS_API_KEY) every request needs 'Authorization: Bearer KEY' except the page (/, /static/), /docs,
/openapi.json and /health, wherever the app is mounted. One log line per request on stderr (--quiet:
none).

Limits against clients that hold the server: a body over --max-body-mb is a 413; request bodies in
flight together past --max-inflight-mb get a 503 with Retry-After; a connection whose request line and
headers are not complete within --header-timeout is closed; past --max-connections open connections a
new one gets a 503 and is closed. The open-file limit is raised to its hard limit at start."""


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    from ..server import Settings
    from . import add_device, add_runtime
    d = Settings()
    p = sub.add_parser("serve", help="serve a model: a web page and an HTTP API", parents=[common],
                       description="Serve one model over HTTP: a web page at / and a JSON API "
                                   "(caption, tag, music, ask, zero-shot, embed) with micro-batching.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model folder (default: the offline default model)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    add_device(p)
    add_runtime(p)
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
    p.add_argument("--max-inflight-mb", type=float,
                   help="request bodies in flight together, in MiB; more get a 503 "
                        "(default: 4 x --max-body-mb)")
    p.add_argument("--header-timeout", type=float, default=d.header_timeout_s,
                   help=f"seconds a connection has to send its request line and headers; then it is "
                        f"closed (default {d.header_timeout_s:g})")
    p.add_argument("--max-connections", type=int,
                   help="open connections at most; past it a new one gets a 503 and is closed "
                        "(default: min(1000, the open-file limit - 100))")
    p.add_argument("--allow-dir", metavar="DIR",
                   help="let the JSON/form field \"path\" read audio files under DIR (only there)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on all but the page, /docs and "
                                     "/health (default: $MATS_API_KEY)")
    p.set_defaults(func=_serve)


def settings_from_args(args):
    from ..server import Settings
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be 0-65535, got {args.port}")
    for name in ("max_body_mb", "timeout", "keep_alive", "header_timeout"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive")
    for name in ("max_inflight_mb", "max_connections"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive")
    if args.batch_window_ms < 0 or args.max_batch < 1:
        raise ValueError("--batch-window-ms must be >= 0 and --max-batch >= 1")
    if args.max_decoded_samples is not None and args.max_decoded_samples <= 0:
        raise ValueError("--max-decoded-samples must be positive")
    allow = None
    if args.allow_dir:
        if args.allow_dir.startswith("~"):
            raise ValueError(f"--allow-dir {args.allow_dir}: write the folder without '~'")
        allow = Path(args.allow_dir)
        if not allow.is_dir():
            raise ValueError(f"--allow-dir {args.allow_dir}: no such folder")
    return Settings(batch_window_ms=args.batch_window_ms, max_batch=args.max_batch,
                    max_upload_bytes=int(args.max_body_mb * 2 ** 20),
                    max_inflight_bytes=int(args.max_inflight_mb * 2 ** 20) if args.max_inflight_mb else None,
                    max_decoded_samples=args.max_decoded_samples, request_timeout_s=args.timeout,
                    keep_alive_s=args.keep_alive, header_timeout_s=args.header_timeout,
                    max_connections=args.max_connections, allow_dir=allow,
                    api_key=args.api_key or os.environ.get("MATS_API_KEY") or None)


def _serve(args) -> int:
    import uvicorn

    from ..pipeline import MATS
    from ..server import create_app
    from ..server.protocol import raise_open_file_limit
    from ..server.run import bind, exposure_warning, uvicorn_config

    settings = settings_from_args(args)
    raise_open_file_limit()  # before the connection cap's default is read from it
    sock = bind(args.host, args.port, settings.backlog)  # before the model loads: a taken port fails fast
    try:
        warning = exposure_warning(args.host, settings.api_key)
        if warning:
            log.warning(warning)
        m = MATS.from_pretrained(args.model, device=args.device, dtype=args.dtype, runtime=args.runtime)
        app = create_app(m, settings)
        host, port = sock.getsockname()[:2]
        # Printed even with --quiet: it is how a script (benchmarks/serve_load.py) finds the port.
        print(f"MATS serving on http://{host}:{port}/ (API reference at /docs; Ctrl-C stops)",
              file=sys.stderr, flush=True)
        uvicorn.Server(uvicorn_config(app, settings)).run(sockets=[sock])
    finally:
        sock.close()
    return 0
