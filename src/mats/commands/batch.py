"""What every batch command shares for big collections: ``--shard I/N`` (a stable share of the
inputs, so N machines or array jobs split one collection without talking to each other), ``--out
FILE`` (one JSON object per input, written and flushed line by line) and ``--resume`` (skip the
inputs a killed run already answered in that file)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from pathlib import Path
from typing import IO, Sequence

__all__ = ["add_batch_options", "parse_shard", "shard", "ResultsFile", "check_resume", "open_results",
           "BATCH_EPILOG"]

BATCH_EPILOG = """\
Big collections:
  --shard I/N   sorts the inputs (by path) and keeps every N-th, starting at the I-th: the N shards
                of one collection are disjoint and together complete, whatever machine runs them
                (`--shard $((SLURM_ARRAY_TASK_ID+1))/$SLURM_ARRAY_TASK_COUNT` in an array job).
  --out FILE    writes one JSON object per input (the jsonl format) to FILE, each line flushed as
                soon as its input is answered, instead of printing results on stdout.
  --resume      with --out: skips the inputs FILE already answers (an error row counts as an
                answer; delete its line to try it again) and appends the rest. A last line cut off
                by a kill is dropped first. Without --resume an existing non-empty FILE is refused."""


def add_batch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shard", metavar="I/N", type=parse_shard,
                   help="answer only the I-th of N shares of the sorted inputs (1 <= I <= N)")
    p.add_argument("--out", metavar="FILE", type=Path,
                   help="write one JSON object per input to FILE, flushed line by line (stdout stays empty)")
    p.add_argument("--resume", action="store_true",
                   help="with --out: skip the inputs already answered in FILE and append the others")


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` as ``(I, N)``; refused unless 1 <= I <= N."""
    i, sep, n = str(text).partition("/")
    try:
        if not sep:
            raise ValueError
        i, n = int(i), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give the shard as I/N, e.g. 1/4") from None
    if n < 1 or not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"{text!r}: the shard I/N needs 1 <= I <= N")
    return i, n


def shard(files: Sequence, spec: tuple[int, int] | None) -> list:
    """The inputs of shard ``spec`` = (I, N): every N-th of the inputs sorted by path, from the I-th.
    None: all inputs, in the order given."""
    if spec is None:
        return list(files)
    i, n = spec
    return sorted(files, key=str)[i - 1::n]


class ResultsFile:
    """``--out FILE``: rows appended one per line, flushed at once; with ``resume`` the files it
    already answers are known (``done``) and a half-written last line is cut off first."""

    def __init__(self, path: Path, resume: bool):
        self.path = Path(path)
        self.done: set[str] = set()
        if resume:
            self._recover()
        elif self.path.exists() and self.path.stat().st_size > 0:
            raise ValueError(f"--out {self.path}: the file exists and is not empty; add --resume to continue "
                             "it, or give a new file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] = open(self.path, "a" if resume else "w", encoding="utf-8")

    def _recover(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1  # everything after the last newline was cut off by the kill
        if end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(end)
        for lineno, line in enumerate(data[:end].splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise ValueError(f"--resume: {self.path}:{lineno} is not a JSON line; is this the --out file "
                                 "of an earlier run?") from None
            if not isinstance(row, dict) or "file" not in row:
                raise ValueError(f"--resume: {self.path}:{lineno} has no \"file\"; is this the --out file of "
                                 "an earlier run?")
            self.done.add(str(row["file"]))

    def pending(self, files: Sequence) -> list:
        """The inputs the file does not answer yet."""
        return [f for f in files if str(f) not in self.done]

    def write(self, row: dict) -> None:
        self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())  # a row written is a row kept, even if the machine goes down next

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def check_resume(args) -> None:
    """``--resume`` continues an ``--out FILE``; refused alone, before anything loads."""
    if args.resume and args.out is None:
        raise ValueError("--resume continues an --out FILE: give --out too")


def open_results(args) -> contextlib.AbstractContextManager[ResultsFile | None]:
    """``with open_results(args) as out:`` the ``--out`` file (None without one), closed at the end."""
    check_resume(args)
    return ResultsFile(args.out, args.resume) if args.out is not None else contextlib.nullcontext(None)
