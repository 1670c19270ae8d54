"""`mats serve`: the HTTP JSON API, on a tiny model and real recorded sounds, over a real socket."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import urllib.error
import urllib.request
from urllib.parse import quote

import numpy as np
import pytest

FAST = {"max_new_tokens": 6}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from mats.data.sounds import fetch_real_sounds, read_metadata
    try:
        folder = fetch_real_sounds()
        meta = read_metadata(folder)
    except Exception as e:  # neither a cache nor apt/http: nothing real to test on
        pytest.skip(f"real sound set unavailable: {e}")
    wanted = ["36-sheep.wav", "phone-incoming-call.oga"]
    found = [folder / r["file"] for w in wanted for r in meta if r["file"].endswith("/" + w)]
    if len(found) < 2:
        pytest.skip("the test clips are missing from the real sound set")
    d = tmp_path_factory.mktemp("server-clips")
    out = []
    for f in found:
        shutil.copy(f, d / f.name)
        out.append(d / f.name)
    return out


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory, clips):
    import soundfile as sf
    wave, sr = sf.read(str(clips[0]), dtype="float32", always_2d=True)
    wave = wave.mean(1)
    out = tmp_path_factory.mktemp("server-long") / "long.wav"
    sf.write(str(out), np.tile(wave, int(np.ceil(22 * sr / len(wave))))[: 22 * sr], sr)
    return out


@pytest.fixture(scope="module")
def model(tiny_model):
    from mats.pipeline import MATS
    return MATS.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def server(model):
    from mats.server import make_server
    srv = make_server(model, "127.0.0.1", 0, quiet=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(10)
    assert not thread.is_alive()


def call(srv, method: str, path: str, body=None, content_type: str | None = None):
    """(status, decoded JSON) for one request; error statuses are returned, not raised."""
    if isinstance(body, dict) or isinstance(body, list):
        body, content_type = json.dumps(body).encode(), content_type or "application/json"
    req = urllib.request.Request(srv.url + path, data=body, method=method)
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            assert r.headers["Content-Type"].startswith("application/json")
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        assert e.headers["Content-Type"].startswith("application/json")
        return e.code, json.loads(e.read())


def test_health_and_info(server, tiny_model):
    assert call(server, "GET", "/health") == (200, {"status": "ok"})
    status, info = call(server, "GET", "/v1/info")
    assert status == 200
    assert info["model"] == str(tiny_model)
    assert info["clap"]["name"] == "yamnet-minilm" and info["clap"]["dim"] == 384
    assert info["llm"] and set(info["tasks"]) == {"caption", "tag", "music", "ask"}
    assert "santa" in info["bridges"] and "none" in info["bridges"]
    assert info["max_body_bytes"] > 0


@pytest.mark.parametrize("endpoint,task", [("caption", "caption"), ("tag", "tags"), ("music", "music")])
def test_json_path(server, model, clips, endpoint, task):
    status, r = call(server, "POST", f"/v1/{endpoint}", {"path": str(clips[0]), **FAST})
    assert status == 200
    # the object `mats caption --format jsonl` prints for the file
    expected = next(model.run([clips[0]], task, **FAST)).to_dict()
    assert r == expected
    assert r["file"] == str(clips[0]) and r["task"] == task and isinstance(r["text"], str)
    if endpoint == "tag":
        assert isinstance(r["tags"], list) and all(isinstance(t, str) for t in r["tags"])
    status, top_beam = call(server, "POST", f"/v1/{endpoint}", {"path": str(clips[0]), "rerank": 0, **FAST})
    assert status == 200 and top_beam == next(model.run([clips[0]], task, rerank=0, **FAST)).to_dict()


def test_ask_json(server, clips):
    status, r = call(server, "POST", "/v1/ask", {"path": str(clips[1]), "question": "What is it?",
                                                 "bridge": "none", **FAST})
    assert status == 200
    assert r["task"] == "qa" and r["question"] == "What is it?" and r["bridge"] == "none"
    assert isinstance(r["text"], str)
    for body in ({"path": str(clips[1])}, {"path": str(clips[1]), "question": "  "}):
        status, r = call(server, "POST", "/v1/ask", body)
        assert status == 400 and "question" in r["error"]


def test_raw_upload(server, clips):
    # same bytes as the JSON path: same answer, under the upload's name
    _, by_path = call(server, "POST", "/v1/tag", {"path": str(clips[0]), **FAST})
    data = clips[0].read_bytes()
    status, r = call(server, "POST", "/v1/tag?max_new_tokens=6&filename=sheep.wav", data, "audio/wav")
    assert status == 200
    assert r["file"] == "sheep.wav" and r["text"] == by_path["text"] and r["tags"] == by_path["tags"]
    q = "Is it loud?"
    status, r = call(server, "POST", f"/v1/ask?question={quote(q)}&max_new_tokens=6",
                     clips[1].read_bytes(), "application/octet-stream")
    assert status == 200 and r["question"] == q and r["file"] == "upload" and isinstance(r["text"], str)


def test_per_window(server, long_clip):
    status, rows = call(server, "POST", "/v1/caption", {"path": str(long_clip), "per_window": True, **FAST})
    assert status == 200 and isinstance(rows, list) and len(rows) >= 2
    starts, ends = [r["start"] for r in rows], [r["end"] for r in rows]
    assert starts == sorted(set(starts)) and ends == sorted(set(ends)) and ends[-1] == pytest.approx(22, abs=0.05)
    status, rows = call(server, "POST", "/v1/caption?per_window=true&max_new_tokens=6",
                        long_clip.read_bytes(), "audio/wav")
    assert status == 200 and len(rows) == len(starts)


def test_client_errors(server, clips, tmp_path):
    bad = b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(200)
    status, r = call(server, "POST", "/v1/caption?filename=broken.wav", bad, "audio/wav")
    assert status == 400 and "broken.wav" in r["error"] and "mats-upload" not in r["error"]
    status, r = call(server, "POST", "/v1/ask", bad, "audio/wav")  # no question: refused before decoding
    assert status == 400 and "question" in r["error"]
    assert call(server, "POST", "/v1/caption", b"", "audio/wav")[0] == 400
    status, r = call(server, "POST", "/v1/translate", {"path": str(clips[0])})
    assert status == 404 and "unknown task" in r["error"] and "caption" in r["error"]
    assert call(server, "POST", "/v1/caption", b"{not json", "application/json")[0] == 400
    assert call(server, "POST", "/v1/caption", [str(clips[0])])[0] == 400
    assert call(server, "POST", "/v1/caption", {"file": str(clips[0])})[0] == 400  # unknown field
    assert call(server, "POST", "/v1/caption", {"question": "x"})[0] == 400
    status, r = call(server, "POST", "/v1/caption", {"path": str(clips[0]), "bridge": "magic"})
    assert status == 400 and "bridge" in r["error"]
    status, r = call(server, "POST", "/v1/caption", {"path": str(clips[0]), "per_window": "maybe"})
    assert status == 400 and "per_window" in r["error"]
    assert call(server, "POST", "/v1/caption", {"path": str(clips[0]), "max_new_tokens": 0})[0] == 400
    status, r = call(server, "POST", "/v1/caption", {"path": str(clips[0]), "rerank": -1})
    assert status == 400 and "rerank" in r["error"]
    assert call(server, "POST", "/v1/caption", {"path": str(tmp_path / "missing.wav")})[0] == 404
    assert call(server, "POST", "/v1/caption", {"path": str(tmp_path)})[0] == 400
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(bad)
    status, r = call(server, "POST", "/v1/caption", {"path": str(corrupt)})
    assert status == 400 and "corrupt.wav" in r["error"]
    assert call(server, "POST", "/v1/caption", b"hello", "text/plain")[0] == 415
    assert call(server, "GET", "/v1/caption")[0] == 405
    assert call(server, "GET", "/nowhere")[0] == 404
    assert call(server, "GET", "/health")[0] == 200  # still serving


def test_body_too_large(server, clips):
    data = clips[0].read_bytes()
    old = server.max_body_bytes
    server.max_body_bytes = len(data) - 1
    try:
        status, r = call(server, "POST", "/v1/caption", data, "audio/wav")
        assert status == 413 and str(len(data) - 1) in r["error"]
        status, _ = call(server, "POST", "/v1/caption", {"path": str(clips[0]), "pad": "x" * len(data)})
        assert status == 413
    finally:
        server.max_body_bytes = old


def test_concurrent_requests(server, clips):
    results = [None] * 3

    def go(i):
        results[i] = call(server, "POST", "/v1/caption", {"path": str(clips[i % 2]), **FAST})

    threads = [threading.Thread(target=go, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(r is not None and r[0] == 200 for r in results)
    assert results[0][1] == results[2][1]  # same clip, same answer


def test_serve_cli(capsys, monkeypatch, model, tiny_model):
    from mats.cli import main
    with pytest.raises(SystemExit) as e:
        main(["serve", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for word in ("--port", "--host", "--model", "--max-body-mb", "/v1/ask", "/health"):
        assert word in out
    # a port already taken: one clear line, exit code 2, no traceback
    import mats.pipeline
    monkeypatch.setattr(mats.pipeline.MATS, "from_pretrained", classmethod(lambda cls, *a, **k: model))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        rc = main(["serve", "--model", str(tiny_model), "--port", str(port)])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot listen" in err
