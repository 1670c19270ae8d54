"""One BLAS thread for the bridge's products: numpy's OpenBLAS threads stall on small, busy machines.

Santa's search multiplies at most a few dozen queries by the bank (8,192 x 384 for the default model,
at most ``exact_max_rows`` rows before faiss takes over): a few milliseconds on one core. With
OpenBLAS's default of one thread per core, each product waits for a worker thread to be scheduled;
on 2 cores shared with other processes that wait was a whole scheduler slice, ~8 ms per call,
20x the product itself (benchmarks/santa_speed.py). torch, whose OpenMP threads MATS makes wait
passively (:mod:`mats.threads`), did not show it. So the bridge runs its products on one BLAS thread
(set through threadpoolctl; one thread multiplies 64 queries by the default bank in ~3-4 ms).

The limit is process-wide (a BLAS library has one thread count), so nested and concurrent users
share it: the first to enter sets one thread, the last to leave restores the count it found.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

__all__ = ["one_blas_thread"]

_lock = threading.Lock()
_state = {"depth": 0, "restore": None, "controller": None}


@contextmanager
def one_blas_thread():
    """Run the block with numpy's BLAS on one thread (restored afterwards)."""
    with _lock:
        if _state["depth"] == 0:
            if _state["controller"] is None:
                from threadpoolctl import ThreadpoolController

                _state["controller"] = ThreadpoolController()  # the BLAS libraries loaded now (numpy's)
            _state["restore"] = _state["controller"].limit(limits=1, user_api="blas")
        _state["depth"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                _state["restore"].restore_original_limits()
                _state["restore"] = None
