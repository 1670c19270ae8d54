"""The server's HTTP edge against hostile or careless clients: the API key on the route path
(mounted, root path, odd spellings, non-ASCII keys), the in-flight body budget, ``create_app``
leaving the caller's settings alone, the header deadline and connection cap of the protocol, small
validation errors off the event loop, and one log line for a client that leaves mid-upload.

The app serves the real default model, but none of this decodes audio: the requests are refused
before any audio is read."""

from __future__ import annotations

import asyncio
import functools
import http.client
import json
import logging
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from mats.server import Settings, create_app
from serving import LoopbackServer, default_model, refusal

KEY = "s3cret-key"


@functools.lru_cache(maxsize=1)
def served_model():
    """The real default model, loaded once: create_app and /v1/info read it; the requests of these
    tests are refused before any audio is decoded."""
    return default_model()


def stub_app(**settings):
    return create_app(served_model(), Settings(batch_window_ms=1, **settings))



def bearer(key: str) -> dict:
    return {"Authorization": b"Bearer " + key.encode("utf-8")}


# -- the API key ------------------------------------------------------------------------------------

def test_key_is_checked_when_mounted_under_a_prefix():
    outer = FastAPI()
    outer.mount("/api", stub_app(api_key=KEY))
    with TestClient(outer) as c:
        refusal(c.get("/api/v1/info"), 401, "API key")
        refusal(c.post("/api/v1/caption", json={"audio": "AAAA"}), 401)
        refusal(c.get("/api/v1/nowhere"), 401)
        r = c.get("/api/v1/info", headers=bearer(KEY))
        assert r.status_code == 200 and r.json()["limits"]["api_key"] is True
        assert c.get("/api/health").status_code == 200  # the liveness probe stays open


def test_key_is_checked_under_a_root_path():
    with TestClient(stub_app(api_key=KEY), root_path="/api") as c:
        refusal(c.get("/api/v1/info"), 401)
        assert c.get("/api/v1/info", headers=bearer(KEY)).status_code == 200


@pytest.mark.parametrize("path", ["/V1/info", "/v1/info/", "//v1/info", "/v1//info", "/v1/INFO", "/V1/caption",
                                  "/nowhere", "/v2/info"])
def test_key_default_deny(path):
    with TestClient(stub_app(api_key=KEY)) as c:
        refusal(c.get(path), 401)
        refusal(c.post(path, json={}), 401)


def test_public_paths_stay_open():
    from mats.server.middleware import is_public, route_path
    with TestClient(stub_app(api_key=KEY)) as c:
        for path in ("/", "/health", "/docs", "/openapi.json", "/static/app.js"):
            assert c.get(path).status_code == 200, path
    assert not is_public("/v1/info") and not is_public("/static") and is_public("//health/")
    assert route_path({"path": "/api/v1/info", "root_path": "/api"}) == "/v1/info"
    assert route_path({"path": "/apiv1/info", "root_path": "/api"}) == "/apiv1/info"


def test_non_ascii_key():
    key = "clé-ключ"
    with TestClient(stub_app(api_key=key)) as c:
        assert c.get("/v1/info", headers=bearer(key)).status_code == 200
        refusal(c.get("/v1/info", headers={"Authorization": b"Bearer " + key.encode("latin-1", "replace")}), 401)
        refusal(c.get("/v1/info", headers=bearer("clé")), 401)
        refusal(c.get("/v1/info"), 401)


# -- settings -------------------------------------------------------------------------------------

def test_create_app_leaves_the_callers_settings_alone(tmp_path):
    (tmp_path / "shared").mkdir()
    given = tmp_path / "shared" / ".." / "shared"
    settings = Settings(allow_dir=given)
    app = create_app(served_model(), settings)
    assert settings.allow_dir == given  # not resolved in place
    assert app.state.settings is not settings
    assert app.state.settings.allow_dir == (tmp_path / "shared").resolve()


# -- the in-flight body budget ----------------------------------------------------------------------

def _scope(length: int | None, path: str = "/v1/embed") -> dict:
    headers = [(b"content-type", b"application/json")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http", "method": "POST", "path": path, "root_path": "", "headers": headers}


def test_inflight_budget():
    """Bodies in flight together stay under Settings.max_inflight_bytes: announced by Content-Length
    (refused up front) or counted as they arrive; released when the request ends."""
    from mats.server.middleware import RequestGuard

    async def scenario():
        release = asyncio.Event()

        async def app(scope, receive, send):
            more = True
            while more:
                more = (await receive()).get("more_body", False)
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        guard = RequestGuard(app, Settings(max_upload_bytes=1000, max_inflight_bytes=2500))

        def call(length, chunks):
            sent = []
            queue = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                     for i, c in enumerate(chunks)]

            async def receive():
                if queue:
                    return queue.pop(0)
                await asyncio.sleep(3600)

            async def send(message):
                sent.append(message)
            return guard(_scope(length), receive, send), sent

        def answer(sent):
            start = next(m for m in sent if m["type"] == "http.response.start")
            body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
            return start["status"], dict(start["headers"]), body

        c1, s1 = call(1000, [b"x" * 1000])
        c2, s2 = call(1000, [b"x" * 500, b"x" * 500])
        t1, t2 = asyncio.create_task(c1), asyncio.create_task(c2)
        for _ in range(10):
            await asyncio.sleep(0)
        assert guard.inflight.used == 2000
        c3, s3 = call(1000, [b"x" * 1000])  # announced: 3000 > 2500
        await c3
        status, headers, body = answer(s3)
        assert status == 503 and headers[b"retry-after"] and json.loads(body)["status"] == 503
        c4, s4 = call(None, [b"x" * 300, b"x" * 300])  # chunked: counted as it comes, 2600 > 2500
        await c4
        status, headers, body = answer(s4)
        assert status == 503 and headers[b"retry-after"] and set(json.loads(body)) == {"error", "status"}
        release.set()
        await asyncio.gather(t1, t2)
        assert answer(s1)[0] == answer(s2)[0] == 200
        assert guard.inflight.used == 0  # released
        c5, s5 = call(1000, [b"x" * 1000])
        await c5
        assert answer(s5)[0] == 200 and guard.inflight.used == 0

    asyncio.run(scenario())


def test_inflight_budget_in_the_app():
    with TestClient(stub_app(max_upload_bytes=10_000, max_inflight_bytes=1000)) as c:
        # one body over the whole budget could never pass: 413, not "retry"
        refusal(c.post("/v1/embed", content=b"x" * 2000, headers={"content-type": "application/json"}), 413)
        refusal(c.post("/v1/embed", json={"audio": ""}), 422)  # under it: on to the endpoint


# -- validation errors stay small and off the event loop ---------------------------------------------

def test_validation_errors_are_capped():
    from mats.server.validation import MAX_LISTED, field_errors
    msg = field_errors([{"loc": ("body", f"f{i}"), "msg": "bad"} for i in range(500)])
    assert msg.count("bad") == MAX_LISTED and msg.endswith("and 490 more")
    with TestClient(stub_app()) as c:
        err = refusal(c.post("/v1/caption", json={"audio": "AAAA", **{f"k{i}": i for i in range(5000)}}), 422)
        assert "5,000 unknown fields" in err and "'k0'" in err and len(err) < 400
        refusal(c.post("/v1/caption", json={"audio": "AAAA", "file": "x.wav"}), 422, "file")


# -- on a real loopback server ------------------------------------------------------------------------

@pytest.fixture
def serve():
    servers = []

    def start(**settings):
        s = Settings(batch_window_ms=1, **settings)
        server = LoopbackServer(create_app(served_model(), s), s).__enter__()
        servers.append(server)
        return server.port
    yield start
    for server in servers:
        server.__exit__(None, None, None)


def _read_until_closed(sock: socket.socket, deadline: float) -> bytes | None:
    """What the server sent before closing, or None if it is still open at ``deadline``."""
    data = b""
    while True:
        sock.settimeout(max(0.01, deadline - time.time()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return None
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def _get(port: int, path: str = "/health", timeout: float = 10) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()



def wait_for_health(port, seconds: float = 10) -> None:
    """/health answers 200 within ``seconds`` (the stalled connections have been let go)."""
    deadline = time.time() + seconds
    while True:
        try:
            if _get(port)[0] == 200:
                return
        except OSError:
            pass
        assert time.time() < deadline, "/health not answered after the connections closed"
        time.sleep(0.1)

def test_unfinished_headers_are_closed(serve):
    """60 connections that never finish their headers are closed at the header deadline (a 408
    each, as part of a request had come); so is a kept-alive connection whose next request stalls."""
    port = serve(header_timeout_s=1.0, keep_alive_s=30)
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(60)]
    try:
        for s in socks:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        t0 = time.time()
        answers = [_read_until_closed(s, t0 + 15) for s in socks]
        assert all(a is not None for a in answers), f"{sum(a is None for a in answers)} of 60 still open"
        assert time.time() - t0 < 15
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[0]
        assert json.loads(answers[0].split(b"\r\n\r\n", 1)[1])["status"] == 408
    finally:
        for s in socks:
            s.close()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # nothing at all: closed quietly
        assert _read_until_closed(s, time.time() + 10) == b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # kept alive, then stalls
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b'{"status":"ok"}' not in data:
            data += s.recv(4096)
        time.sleep(0.5)
        s.sendall(b"GET /health HTTP/1.1\r\n")
        t0 = time.time()
        rest = _read_until_closed(s, t0 + 10)
        assert rest is not None and rest.startswith(b"HTTP/1.1 408") and time.time() - t0 < 5
    assert _get(port)[0] == 200


def test_connection_cap(serve, caplog):
    """Past max_connections a new connection gets a 503 and is closed; one log line, no traceback;
    once the others close the server answers again."""
    caplog.set_level(logging.INFO)
    port = serve(max_connections=20, header_timeout_s=30)
    socks = []
    try:
        for _ in range(40):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            time.sleep(0.005)
        deadline = time.time() + 10
        refused = [_read_until_closed(s, deadline) for s in socks[20:]]
        assert all(r is not None and r.startswith(b"HTTP/1.1 503") and b"connection: close" in r.lower()
                   for r in refused), refused
        assert json.loads(refused[0].split(b"\r\n\r\n", 1)[1])["status"] == 503
        held = socks[:20]
        for s in held:  # the first 20 are still open and served
            s.settimeout(0.05)
            with pytest.raises(socket.timeout):
                s.recv(1)
    finally:
        for s in socks:
            s.close()
    wait_for_health(port)
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 1 and "503" in lines[0]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_many_unknown_keys_small_answer_and_health_stays_quick(serve):
    port = serve()
    body = json.dumps({"audio": "AAAA", **{f"key{i:06d}": 0 for i in range(200_000)}}).encode()
    result = {}

    def big():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            conn.request("POST", "/v1/caption", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            result["status"], result["body"] = r.status, r.read()
        finally:
            conn.close()

    thread = threading.Thread(target=big)
    thread.start()
    worst = 0.0
    while thread.is_alive():
        t0 = time.perf_counter()
        assert _get(port, timeout=5)[0] == 200
        worst = max(worst, time.perf_counter() - t0)
        time.sleep(0.02)
    thread.join()
    assert result["status"] == 422 and len(result["body"]) < 64 * 1024, (result["status"], len(result["body"]))
    answer = json.loads(result["body"])
    assert answer["status"] == 422 and "200,000 unknown fields" in answer["error"]
    assert worst < 1.0, f"/health took {worst:.2f} s while the big body was validated"


def test_client_leaving_mid_upload_is_one_line(serve, caplog, capsys):
    caplog.set_level(logging.INFO)
    port = serve()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /v1/caption HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000000\r\n\r\n" + b'{"audio": "' + b"A" * 50_000)
        time.sleep(0.3)
    deadline = time.time() + 10
    while not [r for r in caplog.records if "went away" in r.getMessage()] and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    mine = [r.getMessage() for r in caplog.records if "/v1/caption" in r.getMessage()]
    assert len(mine) == 1 and "client went away during upload" in mine[0] and "POST /v1/caption" in mine[0], mine
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], \
        [r.getMessage() for r in caplog.records]
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err + caplog.text
    assert _get(port)[0] == 200


def test_serve_cli_new_flags(capsys):
    from mats.cli import main
    from mats.commands.serve import settings_from_args
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for word in ("--header-timeout", "--max-connections", "--max-inflight-mb"):
        assert word in out
    from mats.server.protocol import default_max_connections, protocol_class
    args = SimpleNamespace(port=0, max_body_mb=1.0, timeout=10.0, keep_alive=5.0, header_timeout=2.0,
                           max_inflight_mb=3.0, max_connections=7, batch_window_ms=1.0, max_batch=2,
                           max_decoded_samples=None, allow_dir=None, api_key="k")
    s = settings_from_args(args)
    assert s.header_timeout_s == 2.0 and s.max_connections == 7 and s.inflight_budget() == 3 * 2 ** 20
    cls = protocol_class(s)
    assert cls.max_connections == 7 and cls.header_timeout_s == 2.0
    assert 1 <= default_max_connections() <= 1000


_LOW_LIMIT_SERVER = """
import logging, resource, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
sys.path.insert(0, sys.argv[1])
from serving import LoopbackServer
from test_serve_edge import served_model
from mats.server import Settings, create_app
s = Settings(batch_window_ms=1, header_timeout_s=60)
app = create_app(served_model(), s)

@app.get("/block")
async def block():  # holds the event loop, so the connections queue up and are accepted in one burst
    time.sleep(1.5)
    return {}

with LoopbackServer(app, s) as server:
    print(server.port, flush=True)
    sys.stdin.read()
"""


def test_open_file_limit_is_never_reached():
    """With 256 open files allowed: 300 stalled connections at once. The default cap refuses those
    past it with a 503; a burst asyncio accepts before the cap sees it may still run out of
    descriptors, which is one log line, never a traceback; /health answers once they close."""
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-c", _LOW_LIMIT_SERVER, str(Path(__file__).parent)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    socks = []
    try:
        port = int(proc.stdout.readline())
        blocker = socket.create_connection(("127.0.0.1", port), timeout=10)
        socks.append(blocker)
        blocker.sendall(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        deadline = time.time() + 10
        answers = [_read_until_closed(s, deadline) for s in socks[-100:]]
        refused = [a for a in answers if a is not None and a.startswith(b"HTTP/1.1 503")]
        assert len(refused) == 100, f"{len(refused)} of the last 100 refused"
        for s in socks:
            s.close()
        socks = []
        wait_for_health(port)
    finally:
        for s in socks:
            s.close()
        proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert "Traceback" not in err and err.count("Too many open files") <= 1, err[-2000:]
    server_lines = [line for line in err.splitlines() if ":mats.server:" in line]
    assert err.count("refused") == 1 and len(server_lines) <= 5, err[-2000:]
