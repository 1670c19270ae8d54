"""When the model fails or a client leaves: the real default model under uvicorn on loopback, with
faults injected into its real methods (an out-of-memory error, an inference-engine error, an
exception that is not an Exception), and clients that go away after sending."""

from __future__ import annotations

import os
import socket
import statistics
import threading
import time

import pytest

from mats.server import Settings, create_app
from serving import LoopbackServer, default_model, real_clips
from test_serve_http import multipart, post


@pytest.fixture(scope="module")
def model():
    return default_model()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return real_clips(tmp_path_factory.mktemp("fault-clips"), 3)


@pytest.fixture(scope="module")
def served(model):
    settings = Settings(batch_window_ms=300, max_batch=8, keep_alive_s=1)
    app = create_app(model, settings)
    with LoopbackServer(app, settings) as server:
        yield app, server.port


def together(port, jobs):
    """Post every (endpoint, clip, fields) at once, from threads; (status, body) in job order."""
    out = [None] * len(jobs)

    def go(i, endpoint, clip, fields):
        out[i] = post(port, endpoint, clip, **fields)

    threads = [threading.Thread(target=go, args=(i, *job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return out


def is_error(reply, status):
    code, body = reply
    return code == status and set(body) == {"error", "status"} and body["status"] == status


QUICK = {"num_beams": 1, "rerank": 0, "max_new_tokens": 4}


def test_a_model_fault_fails_its_request_alone(served, model, clips, monkeypatch):
    """An out-of-memory error on one request of a batch: that request gets a 500 in the documented
    JSON, the others of its group their normal answers."""
    app, port = served
    alone = post(port, "ask", clips[0], question="What animal is this?", **QUICK)
    assert alone[0] == 200
    real = model.model.generate

    def oom_on_boom(z, requests, **kw):
        if any("boom" in r.instruction for r in requests):
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(z, requests, **kw)

    monkeypatch.setattr(model.model, "generate", oom_on_boom)
    before = app.state.batcher.batches
    out = together(port, [("ask", clips[0], {"question": "What animal is this?", **QUICK}),
                          ("ask", clips[1], {"question": "boom?", **QUICK})])
    assert app.state.batcher.batches - before == 1  # one group: the fault was met inside it
    assert out[0] == alone
    assert is_error(out[1], 500) and "RuntimeError" in out[1][1]["error"] and "/tmp" not in out[1][1]["error"]


def test_engine_error_is_a_500_bad_audio_a_400(served, model, clips, tmp_path, monkeypatch):
    """An internal error of the CLAP's inference engine is the server's fault (500), not bad audio."""
    _, port = served
    real = model.clap.encode_audio_windows

    odd = tmp_path / "engine" / clips[2].name  # the server sees its upload under a temporary name
    odd.parent.mkdir()
    odd.write_bytes(clips[2].read_bytes())
    assert clips[0].stat().st_size != odd.stat().st_size

    def engine_fails(audio, *args, **kwargs):
        if os.path.getsize(audio) == odd.stat().st_size:
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code")
        return real(audio, *args, **kwargs)

    monkeypatch.setattr(model.clap, "encode_audio_windows", engine_fails)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio at all")
    out = together(port, [("caption", odd, QUICK), ("caption", clips[0], QUICK), ("caption", broken, QUICK)])
    assert is_error(out[0], 500)
    assert out[1][0] == 200 and out[1][1]["text"]
    assert is_error(out[2], 400) and "broken.wav" in out[2][1]["error"]


class Crash(BaseException):
    """Not an Exception: before, it killed the worker thread and every later request got a 500."""


def test_the_server_goes_on_after_any_exception(served, model, clips, monkeypatch):
    _, port = served

    def crash(*args, **kwargs):
        raise Crash("not an Exception")

    with monkeypatch.context() as m:
        m.setattr(model.model, "generate", crash)
        t0 = time.time()
        assert is_error(post(port, "tag", clips[0], **QUICK), 500)
        assert time.time() - t0 < 60  # answered, not left hanging until the request timeout
    for _ in range(2):
        assert post(port, "tag", clips[0], **QUICK)[0] == 200


def test_abandoned_uploads_are_withdrawn(served, model, clips, monkeypatch):
    """Eight uploads whose clients leave right after sending cost the next request little: each
    waiting request watches its connection and withdraws its job."""
    app, port = served
    timings = []
    for _ in range(3):
        t0 = time.perf_counter()
        assert post(port, "caption", clips[1])[0] == 200
        timings.append(time.perf_counter() - t0)
    alone = statistics.median(timings)
    decoded = []
    real = model.model.generate

    def counting(z, requests, **kw):
        decoded.extend(r.instruction for r in requests)
        return real(z, requests, **kw)

    monkeypatch.setattr(model.model, "generate", counting)
    body, ctype = multipart({}, clips[0])
    head = (f"POST /v1/caption HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    for _ in range(8):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(head + body)
    t0 = time.perf_counter()
    assert post(port, "caption", clips[1])[0] == 200
    after = time.perf_counter() - t0
    assert after <= 2 * alone, (after, alone)
    # the request itself decodes one row (with its rerank candidates); the abandoned ones at most one batch
    assert len(decoded) <= 2, decoded
