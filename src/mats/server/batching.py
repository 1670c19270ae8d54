"""Micro-batching: one worker thread owns the model; requests that arrive close together share a call.

The event loop hands a job to :meth:`MicroBatcher.submit` and awaits an asyncio future; it never
runs model code itself. The worker takes the first waiting job, keeps collecting for ``window_s``
seconds (or until ``max_batch`` jobs), groups them by key and calls ``process(key, items)`` once per
group. Jobs only share a group when they may share a call without changing anyone's answer (same
task, bridge, seed and decoding options: see :mod:`mats.server.inference`).

``process`` returns one result per item, in order; an item whose result is an exception fails
alone. If ``process`` itself raises (anything, ``BaseException`` included), every job of the group
gets that error and the worker goes on; if the worker thread dies all the same, the next
``submit`` starts a new one. Every job is settled: answered, failed, or -- queued when the batcher
stops -- refused with :class:`Busy`. A job whose future is already done (its client went away) is
skipped without being processed.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

__all__ = ["MicroBatcher", "Busy", "WorkerFailed"]

log = logging.getLogger("mats.server")


class Busy(RuntimeError):
    """The queue is full or the server is stopping: the client should retry later."""


class WorkerFailed(RuntimeError):
    """``process`` raised for a whole group (the server answers 500)."""


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


def _hand_over(job: _Job, result: Any) -> None:
    try:
        job.loop.call_soon_threadsafe(_settle, job.future, result)
    except RuntimeError:  # its event loop has closed: nobody is waiting any more
        pass


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
        self._name = name
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._start_lock = threading.Lock()
        self._stopped = False
        self.restarts = 0  # worker threads started again after one died
        self.batches = 0  # calls made to ``process`` (what the tests and the benchmark look at)
        self.largest_batch = 0

    def start(self) -> "MicroBatcher":
        """Start the worker (idempotent: a sub-app mounted elsewhere gets no lifespan events, so
        the first request starts it too); start a new one if the last died."""
        with self._start_lock:
            if self._stopped or self._thread.is_alive():
                return self
            if self._thread.ident is not None:  # it ran and died: a thread cannot be started twice
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self.restarts += 1
            self._thread.start()
        return self

    @property
    def healthy(self) -> bool:
        """Whether a job submitted now would be worked on."""
        return not self._stopped

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in hand, refuse the jobs still queued (:class:`Busy`), stop the worker."""
        with self._start_lock:
            self._stopped = True
        self._refuse_queued()
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)
        self._refuse_queued()

    def _refuse_queued(self) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not _STOP:
                _hand_over(job, Busy("the server is shutting down; retry shortly"))

    async def submit(self, key: Hashable, item: Any) -> Any:
        self.start()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._start_lock:  # no job slips into the queue after stop() has emptied it
            if self._stopped:
                raise Busy("the server is shutting down; retry shortly")
            try:
                self._queue.put_nowait(_Job(key, item, future, loop))
            except queue.Full:
                raise Busy(f"the server is busy ({self._queue.maxsize} requests waiting); retry shortly") from None
        return await future

    # -- the worker ------------------------------------------------------------------------------
    def _collect(self, first: _Job) -> list[_Job]:
        batch, deadline = [first], time.monotonic() + self.window_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:  # stop() has set the flag: the loop ends after this batch
                break
            batch.append(job)
        return batch

    def _loop(self) -> None:
        try:
            while not self._stopped:
                first = self._queue.get()
                if first is _STOP:
                    break
                if self._stopped:  # stopping: what is still queued is refused, not started
                    _hand_over(first, Busy("the server is shutting down; retry shortly"))
                    break
                batch = self._collect(first)
                groups: dict[Hashable, list[_Job]] = {}
                for job in batch:
                    if not job.future.done():  # a job whose request is gone costs nothing
                        groups.setdefault(job.key, []).append(job)
                for key, jobs in groups.items():
                    self._run_group(key, jobs)
        except BaseException:  # noqa: BLE001 - a bug of the worker itself: the next submit starts a new one
            log.exception("the model worker stopped on an error; the next request starts a new one")
        finally:
            if self._stopped:
                self._refuse_queued()

    def _run_group(self, key: Hashable, jobs: list[_Job]) -> None:
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(jobs))
        try:
            results = list(self.process(key, [j.item for j in jobs]))
            if len(results) != len(jobs):
                raise RuntimeError(f"process gave {len(results)} results for {len(jobs)} items")
        except BaseException as e:  # noqa: BLE001 - any failure is handed to the waiting requests
            log.error("the model worker failed on a batch of %d: %s: %s", len(jobs), type(e).__name__, e,
                      exc_info=(type(e), e, e.__traceback__))
            failure = WorkerFailed(f"the model failed on this request ({type(e).__name__}); "
                                   "the server log has the details")
            results = [failure] * len(jobs)
        for job, result in zip(jobs, results, strict=True):
            _hand_over(job, result)
