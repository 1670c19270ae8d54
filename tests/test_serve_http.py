"""`mats serve` over a real loopback socket: uvicorn, backlog, keep-alive, micro-batching, client
disconnects and the command line, with the real default model on real recorded clips; and what
happens when the model fails (faults injected into its real methods: an out-of-memory error, an
inference-engine error, an exception that is not an Exception) or clients leave after sending."""

from __future__ import annotations

import http.client
import logging
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time

import pytest

from mats.server import Settings, create_app
from mats.server.run import exposure_warning
from serving import LoopbackServer, default_model, multipart, post, post_together, real_clips


@pytest.fixture(scope="module")
def model():
    return default_model()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return real_clips(tmp_path_factory.mktemp("http-clips"), 4)


@pytest.fixture(scope="module")
def served(model):
    """(app, port): the app under uvicorn on 127.0.0.1, in this process."""
    settings = Settings(batch_window_ms=300, max_batch=8, keep_alive_s=1)
    app = create_app(model, settings)
    with LoopbackServer(app, settings) as server:
        yield app, server.port


def test_many_connections_at_once(served):
    """A burst of 64 simultaneous connections: no reset, every one answered (normal backlog)."""
    _, port = served
    statuses = []

    def hit():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            conn.request("GET", "/health")
            statuses.append(conn.getresponse().status)
        except OSError as e:
            statuses.append(repr(e))
        finally:
            conn.close()

    threads = [threading.Thread(target=hit) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [200] * 64


def test_idle_connections_are_closed(served):
    _, port = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        while b'{"status":"ok"}' not in data:
            data += s.recv(4096)
        assert data.startswith(b"HTTP/1.1 200")
        t0 = time.time()
        assert s.recv(4096) == b""  # the server closed the idle keep-alive connection
        assert time.time() - t0 < 5


def test_slow_upload_times_out(served, clips):
    """A client that stops sending half way gets a 408 when the request timeout runs out."""
    app, port = served
    settings = app.state.settings
    body, ctype = multipart({}, clips[0])
    old, settings.request_timeout_s = settings.request_timeout_s, 1.0
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(f"POST /v1/tag HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2])
            t0 = time.time()
            data = b""
            while b"}" not in data:
                chunk = s.recv(4096)
                assert chunk, "closed without an answer"
                data += chunk
        assert data.startswith(b"HTTP/1.1 408") and b"did not arrive" in data
        assert time.time() - t0 < 5
    finally:
        settings.request_timeout_s = old


def test_micro_batching_gives_one_at_a_time_answers(served, model, clips):
    """Requests that arrive together share generate calls; each answer is what the pipeline gives the
    clip alone. Tags and questions are different groups (their decoding differs)."""
    app, port = served
    batcher = app.state.batcher
    jobs = [("tag", c, {}) for c in clips] + \
           [("ask", clips[0], {"question": "What animal is this?"}), ("ask", clips[2], {"question": "Is it loud?"})]
    before = batcher.batches
    results = post_together(port, jobs)
    assert [s for s, _ in results] == [200] * len(jobs), results
    assert batcher.batches - before < len(jobs) and batcher.largest_batch >= 2  # really batched
    for (endpoint, clip, fields), (_, r) in zip(jobs, results, strict=True):
        task = "tags" if endpoint == "tag" else "qa"
        alone = next(model.run([clip], task, question=fields.get("question"))).to_dict()
        assert r["text"] == alone["text"] and r.get("tags") == alone.get("tags"), (clip.name, r, alone)


def test_client_disconnect_is_not_an_error(served, clips, caplog):
    app, port = served
    caplog.set_level(logging.INFO)
    batcher = app.state.batcher
    before = batcher.batches
    body, ctype = multipart({}, clips[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"POST /v1/caption HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.5)  # the request is in; the client goes away before the answer
    deadline = time.time() + 120
    while batcher.batches == before and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    assert post(port, "tag", clips[0])[0] == 200  # still serving
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], \
        [r.getMessage() for r in caplog.records]


def test_exposure_warning():
    assert exposure_warning("127.0.0.1", None) is None and exposure_warning("::1", None) is None
    assert exposure_warning("localhost", None) is None
    assert "without an API key" in exposure_warning("0.0.0.0", None)
    assert exposure_warning("0.0.0.0", "key") is None


def test_serve_cli_help_and_taken_port(capsys):
    from mats.cli import main
    with pytest.raises(SystemExit) as e:
        main(["serve", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for word in ("--port", "--host", "--allow-dir", "--api-key", "--batch-window-ms", "--max-batch",
                 "--max-body-mb", "--timeout", "--keep-alive", "/v1/zero-shot", "/docs"):
        assert word in out
    with socket.socket() as s:  # a port already taken: one clear line, exit code 2, before loading
        s.bind(("127.0.0.1", 0))
        s.listen()
        rc = main(["serve", "--port", str(s.getsockname()[1])])
    assert rc == 2 and "cannot listen" in capsys.readouterr().err
    assert main(["serve", "--allow-dir", "~/x"]) == 2 and "'~'" in capsys.readouterr().err


def test_mats_serve_end_to_end(clips):
    """`mats serve` as a user starts it: the page, an upload, and one log line per request."""
    proc = subprocess.Popen([sys.executable, "-m", "mats.cli", "serve", "--port", "0"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "MATS_API_KEY": ""})
    try:
        port = None
        deadline = time.time() + 120
        while port is None and time.time() < deadline:
            line = proc.stderr.readline()
            assert line, "mats serve exited before serving"
            m = re.search(r"serving on http://127\.0\.0\.1:(\d+)/", line)
            port = int(m.group(1)) if m else None
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/")
        page = conn.getresponse()
        assert page.status == 200 and b"<title>MATS" in page.read()
        conn.close()
        status, r = post(port, "tag", clips[0])
        assert status == 200 and r["tags"]
        log = proc.stderr.readline() + proc.stderr.readline()
        assert re.search(r"GET / 200 \d+ ms", log) and re.search(r"POST /v1/tag 200 \d+ ms", log), log
    finally:
        proc.terminate()
        proc.wait(30)


# -- when the model fails or a client leaves: faults injected into the real model's methods --------

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
    out = post_together(port, [("ask", clips[0], {"question": "What animal is this?", **QUICK}),
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
    out = post_together(port, [("caption", odd, QUICK), ("caption", clips[0], QUICK), ("caption", broken, QUICK)])
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
