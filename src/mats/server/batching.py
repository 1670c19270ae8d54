"""Micro-batching: one worker thread owns the model; requests that arrive close together share a call.

The event loop hands a job to :meth:`MicroBatcher.submit` and awaits an asyncio future; it never
runs model code itself. The worker takes the first waiting job, keeps collecting for ``window_s``
seconds (or until ``max_batch`` jobs), groups them by key and calls ``process(key, items)`` once per
group. Jobs only share a group when they may share a call without changing anyone's answer (same
task, bridge, seed and decoding options: see :mod:`mats.server.inference`).

``process`` returns one result per item, in order; an item whose result is an exception fails
alone. If ``process`` itself raises, every job of the group gets that exception.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

__all__ = ["MicroBatcher", "Busy"]


class Busy(RuntimeError):
    """The queue is full: the server is saturated and the client should retry later."""


@dataclass
class _Job:
    key: Hashable
    item: Any
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


_STOP = object()


def _settle(future: asyncio.Future, result: Any) -> None:
    if future.done():  # the request timed out or its client left while the model worked
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class MicroBatcher:
    def __init__(self, process: Callable[[Hashable, Sequence[Any]], Sequence[Any]], window_s: float = 0.02,
                 max_batch: int = 16, max_queue: int = 256, name: str = "mats-model"):
        if window_s < 0:
            raise ValueError(f"the batching window must be >= 0 s, got {window_s}")
        if max_batch < 1:
            raise ValueError(f"the largest batch must be >= 1, got {max_batch}")
        self.process = process
        self.window_s = float(window_s)
        self.max_batch = int(max_batch)
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._start_lock = threading.Lock()
        self._stopped = False
        self.batches = 0  # calls made to ``process`` (what the tests and the benchmark look at)
        self.largest_batch = 0

    def start(self) -> "MicroBatcher":
        """Start the worker (idempotent: a sub-app mounted elsewhere gets no lifespan events, so
        the first request starts it too)."""
        with self._start_lock:
            if not self._thread.is_alive() and not self._stopped:
                self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        with self._start_lock:
            self._stopped = True
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    async def submit(self, key: Hashable, item: Any) -> Any:
        self.start()
        if self._stopped:
            raise Busy("the server is shutting down")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        try:
            self._queue.put_nowait(_Job(key, item, future, loop))
        except queue.Full:
            raise Busy(f"the server is busy ({self._queue.maxsize} requests waiting); retry shortly") from None
        return await future

    # -- the worker ------------------------------------------------------------------------------
    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        batch, deadline = [first], time.monotonic() + self.window_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                return batch, True
            batch.append(job)
        return batch, False

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            batch, stop = self._collect(first)
            groups: dict[Hashable, list[_Job]] = {}
            for job in batch:
                if not job.future.done():  # a job whose request is gone costs nothing
                    groups.setdefault(job.key, []).append(job)
            for key, jobs in groups.items():
                self.batches += 1
                self.largest_batch = max(self.largest_batch, len(jobs))
                try:
                    results = list(self.process(key, [j.item for j in jobs]))
                    if len(results) != len(jobs):
                        raise RuntimeError(f"process gave {len(results)} results for {len(jobs)} items")
                except Exception as e:  # noqa: BLE001 - handed to the waiting requests, not swallowed
                    results = [e] * len(jobs)
                for job, result in zip(jobs, results):
                    job.loop.call_soon_threadsafe(_settle, job.future, result)
