"""The micro-batching worker on its own: windows, batch limits, grouping, failures, a full queue."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from mats.server.batching import Busy, MicroBatcher, WorkerFailed


class Recorder:
    """A ``process`` that records each call; item "bad" fails alone, key "boom" fails its group."""

    def __init__(self, delay: float = 0.0):
        self.calls: list[tuple] = []
        self.delay = delay
        self.threads: set[str] = set()

    def __call__(self, key, items):
        self.threads.add(threading.current_thread().name)
        self.calls.append((key, list(items)))
        time.sleep(self.delay)
        if key == "boom":
            raise RuntimeError("the whole group failed")
        return [ValueError(f"{it} refused") if it == "bad" else (key, it) for it in items]


async def submit_all(batcher, jobs, gap: float = 0.0):
    tasks = []
    for key, item in jobs:
        tasks.append(asyncio.ensure_future(batcher.submit(key, item)))
        if gap:
            await asyncio.sleep(gap)
    return await asyncio.gather(*tasks, return_exceptions=True)


def run(batcher, coro):
    batcher.start()
    try:
        return asyncio.run(coro)
    finally:
        batcher.stop()


def test_requests_in_one_window_share_a_call_grouped_by_key():
    rec = Recorder()
    b = MicroBatcher(rec, window_s=0.2, max_batch=16)
    jobs = [("a", 1), ("b", 2), ("a", 3), ("a", "bad"), ("b", 4)]
    out = run(b, submit_all(b, jobs))
    assert out[:3] == [("a", 1), ("b", 2), ("a", 3)] and out[4] == ("b", 4)
    assert isinstance(out[3], ValueError) and "bad refused" in str(out[3])  # fails alone
    assert rec.calls == [("a", [1, 3, "bad"]), ("b", [2, 4])]  # one call per key, arrival order kept
    assert rec.threads == {"mats-model"} and b.largest_batch == 3


def test_max_batch_and_window_bound_a_batch():
    rec = Recorder()
    b = MicroBatcher(rec, window_s=0.2, max_batch=2)
    run(b, submit_all(b, [("a", i) for i in range(5)]))
    assert [len(items) for _, items in rec.calls] == [2, 2, 1]
    rec = Recorder()
    b = MicroBatcher(rec, window_s=0.0, max_batch=8)  # no window: whatever is already waiting
    run(b, submit_all(b, [("a", i) for i in range(3)], gap=0.05))
    assert [len(items) for _, items in rec.calls] == [1, 1, 1]


def test_a_failing_group_fails_only_its_requests():
    rec = Recorder()
    b = MicroBatcher(rec, window_s=0.1)
    out = run(b, submit_all(b, [("boom", 1), ("ok", 2), ("boom", 3)]))
    assert isinstance(out[0], RuntimeError) and isinstance(out[2], RuntimeError) and out[1] == ("ok", 2)


def test_full_queue_is_busy_not_a_hang():
    rec = Recorder(delay=0.3)
    b = MicroBatcher(rec, window_s=0.0, max_batch=1, max_queue=2)
    out = run(b, submit_all(b, [("a", i) for i in range(6)]))
    assert any(isinstance(r, Busy) for r in out) and any(r == ("a", 0) for r in out)


def test_abandoned_requests_cost_nothing():
    rec = Recorder(delay=0.3)
    b = MicroBatcher(rec, window_s=0.0, max_batch=1)

    async def go():
        first = asyncio.ensure_future(b.submit("a", 1))
        await asyncio.sleep(0.05)  # the worker is busy with the first
        gone = asyncio.ensure_future(b.submit("a", 2))
        await asyncio.sleep(0.01)
        gone.cancel()  # its client left (or it timed out) while it waited
        return await first

    assert run(b, go()) == ("a", 1)
    assert [items for _, items in rec.calls] == [[1]]


def test_bad_settings():
    with pytest.raises(ValueError, match="window"):
        MicroBatcher(Recorder(), window_s=-1)
    with pytest.raises(ValueError, match="batch"):
        MicroBatcher(Recorder(), max_batch=0)


def test_first_request_starts_the_worker():
    """A sub-app mounted in another service gets no lifespan events: submitting starts the worker."""
    rec = Recorder()
    b = MicroBatcher(rec, window_s=0.0)
    try:
        assert asyncio.run(b.submit("a", 1)) == ("a", 1)
    finally:
        b.stop()


class Crash(BaseException):
    """Not an Exception: what escaped ``except Exception`` and killed the worker before."""


def test_the_worker_survives_any_exception():
    calls = []

    def process(key, items):
        calls.append(key)
        if key == "crash":
            raise Crash("not an Exception")
        return [(key, it) for it in items]

    b = MicroBatcher(process, window_s=0.0)

    async def go():
        first = await asyncio.gather(b.submit("crash", 1), return_exceptions=True)
        return first[0], await b.submit("a", 2)

    failed, later = run(b, go())
    assert isinstance(failed, WorkerFailed) and "Crash" in str(failed)  # settled, not left hanging
    assert later == ("a", 2) and calls == ["crash", "a"]  # and the next request is served


def test_a_dead_worker_thread_is_started_again():
    b = MicroBatcher(lambda key, items: [(key, it) for it in items], window_s=0.0)
    b.start()
    b._queue.put(None)  # not a job: the thread dies on it, as on any bug of its own
    b._thread.join(5)
    assert not b._thread.is_alive()
    try:
        assert asyncio.run(b.submit("a", 1)) == ("a", 1) and b.restarts == 1
    finally:
        b.stop()


def test_jobs_still_queued_at_stop_are_refused_not_left_waiting():
    release = threading.Event()

    def slow(key, items):
        release.wait(5)
        return [(key, it) for it in items]

    b = MicroBatcher(slow, window_s=0.0, max_batch=1)

    async def go():
        jobs = [asyncio.ensure_future(b.submit("a", i)) for i in range(3)]
        await asyncio.sleep(0.2)  # the first is in the worker's hands, two wait in the queue
        stopper = threading.Thread(target=b.stop)
        stopper.start()
        await asyncio.sleep(0.2)
        release.set()
        out = await asyncio.wait_for(asyncio.gather(*jobs, return_exceptions=True), 10)
        stopper.join(10)
        return out

    b.start()
    out = asyncio.run(go())
    assert out[0] == ("a", 0)  # the batch in hand finishes
    assert all(isinstance(r, Busy) and "shutting down" in str(r) for r in out[1:])
    assert not b.healthy
    with pytest.raises(Busy):
        asyncio.run(b.submit("a", 9))
