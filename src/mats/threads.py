"""How many CPU threads MATS uses, set in one place for torch, onnxruntime and the text encoder.

Two things matter on small shared machines (docs/speed.md, "Threads"):

- OpenMP workers that spin while waiting for work steal the cores the other threads need; with the
  default active waiting, 2 torch threads on 2 busy cores run prefill and decode several times slower
  than one thread. ``OMP_WAIT_POLICY=PASSIVE`` removes that. OpenMP reads it once, when torch loads its
  runtime, so it is set when ``mats`` is imported (``import mats`` before ``import torch`` to get it).
- The thread count comes from the cores this process may actually run on (``sched_getaffinity``:
  containers and ``taskset`` give fewer than ``os.cpu_count()``), unless given explicitly
  (``configure(n)``, ``MATS_THREADS=n`` or the CLI's ``--threads``).
"""

from __future__ import annotations

import os
import sys

ENV = "MATS_THREADS"
_chosen: int | None = None


def set_passive_wait() -> None:
    """Passive OpenMP waiting unless the user chose otherwise (effective before torch is imported)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def resolve(threads: int | None = None) -> int:
    """The thread count: explicit value > ``MATS_THREADS`` > the cores available to this process."""
    if threads is None and os.environ.get(ENV, "").strip():
        raw = os.environ[ENV].strip()
        try:
            threads = int(raw)
        except ValueError:
            raise ValueError(f"{ENV} must be a positive integer, got {raw!r}") from None
    if threads is None:
        return _chosen or available_cores()
    if int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return int(threads)


def configure(threads: int | None = None) -> int:
    """Apply the thread count to torch (now if loaded, else through OMP_NUM_THREADS when it loads)
    and remember it for the onnxruntime sessions created later (``num_threads()``). Returns it."""
    global _chosen
    n = resolve(threads)
    _chosen = n
    set_passive_wait()
    os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ["MKL_NUM_THREADS"] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def num_threads() -> int:
    """The configured count (``configure``), else what ``resolve()`` gives now."""
    return _chosen or resolve()
