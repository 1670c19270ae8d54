"""`mats serve`: one model behind an HTTP API."""

from __future__ import annotations

import argparse
import sys



def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from ..server import DEFAULT_MAX_BODY_MB, EPILOG

    p = sub.add_parser("serve", help="serve a model over a small HTTP JSON API", parents=[common],
                       description="Serve one model over HTTP: caption, tag, music and ask endpoints "
                                   "answering in JSON (standard library server, one request generating "
                                   "at a time).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model folder (default: the offline default model)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: best available)")
    p.add_argument("--max-body-mb", type=float, default=DEFAULT_MAX_BODY_MB,
                   help=f"largest request body accepted, in MiB (default {DEFAULT_MAX_BODY_MB:g})")
    p.add_argument("--uploads-only", action="store_true",
                   help="refuse JSON requests naming a server-side path; accept uploaded audio only")
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    from ..pipeline import MATS
    from ..server import make_server

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be 0-65535, got {args.port}")
    if args.max_body_mb <= 0:
        raise ValueError("--max-body-mb must be positive")
    m = MATS.from_pretrained(args.model, device=args.device)
    try:
        server = make_server(m, args.host, args.port, max_body_bytes=int(args.max_body_mb * 2 ** 20),
                             uploads_only=args.uploads_only, quiet=args.quiet)
    except OSError as e:
        raise RuntimeError(f"cannot listen on {args.host}:{args.port}: {e}") from None
    print(f"MATS serving {m.folder} on {server.url} (GET /v1/info for details; Ctrl-C stops)",
          file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    finally:
        server.server_close()
    return 0
