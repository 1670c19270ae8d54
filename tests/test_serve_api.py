"""The HTTP API (mats.server.create_app) with the real default model on real recorded clips.

Most tests go through FastAPI's TestClient (the app in-process); tests/test_serve_http.py runs it
under uvicorn on a loopback socket."""

from __future__ import annotations

import base64
import json
import logging
import os

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mats.server import Settings, create_app
from mats.server.guard import PATH_REFUSED
from serving import default_model, long_clip, real_clips, refusal, upload


@pytest.fixture(scope="module")
def model():
    return default_model()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return real_clips(tmp_path_factory.mktemp("serve-clips"), 3)


@pytest.fixture(scope="module")
def long(tmp_path_factory, clips):
    return long_clip(clips[0], tmp_path_factory.mktemp("serve-long") / "long.wav", 22)


def as_json(client, endpoint, clip, **fields):
    return client.post(f"/v1/{endpoint}", json={"audio": base64.b64encode(clip.read_bytes()).decode(),
                                                 "filename": clip.name, **fields})



# -- what is served ------------------------------------------------------------------------------

def test_health_info_page_and_docs(client, model):
    assert client.get("/health").json() == {"status": "ok"}
    r = client.get("/v1/info")
    info = r.json()
    assert info["model"] == "default" and info["clap"]["name"] == model.clap.name
    assert {t["endpoint"] for t in info["tasks"]} == {"/v1/caption", "/v1/tag", "/v1/music", "/v1/ask"}
    assert [t["needs_question"] for t in info["tasks"] if t["endpoint"] == "/v1/ask"] == [True]
    assert "santa" in info["bridges"] and info["default_bridge"] == "santa"
    assert info["retrieval_k"] == model.model.config.retrieval.k
    assert info["batch_invariant"] is True  # fp32 weights: an answer never depends on its batch
    assert info["limits"]["path_field"] is False and info["limits"]["max_decoded_samples"] > 0
    assert str(model.folder) not in r.text and os.path.expanduser("~") not in r.text  # no server paths
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page.text and client.get(asset).status_code == 200
    assert "http" not in page.text.replace("http-equiv", "")  # nothing from a CDN
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    for path in ("/v1/caption", "/v1/tag", "/v1/music", "/v1/ask", "/v1/zero-shot", "/v1/embed"):
        content = spec["paths"][path]["post"]["requestBody"]["content"]
        assert {"application/json", "multipart/form-data"} <= set(content)


# -- every endpoint, multipart and JSON, against the pipeline called directly ---------------------

@pytest.mark.parametrize("endpoint,task", [("caption", "caption"), ("tag", "tags"), ("music", "music")])
def test_task_endpoints_match_the_pipeline(client, model, clips, endpoint, task):
    clip = clips[0]
    expected = next(model.run([clip], task)).to_dict()
    by_form = upload(client, endpoint, clip)
    assert by_form.status_code == 200, by_form.text
    r = by_form.json()
    assert r["file"] == clip.name and r["task"] == task and r["text"] == expected["text"]
    assert r["bridge"] == "santa" and r["duration"] == pytest.approx(1.318, abs=0.01)
    if task == "tags":
        assert r["tags"] == expected["tags"] and r["tags"]
    by_json = as_json(client, endpoint, clip)
    assert by_json.status_code == 200 and by_json.json() == r


def test_ask(client, model, clips):
    q = "What animal is making this sound?"
    expected = next(model.run([clips[1]], "qa", question=q, bridge="none")).to_dict()
    r = upload(client, "ask", clips[1], question=q, bridge="none")
    assert r.status_code == 200 and r.json()["text"] == expected["text"]
    assert r.json()["question"] == q and r.json()["bridge"] == "none"
    assert as_json(client, "ask", clips[1], question=q, bridge="none").json() == r.json()


def test_zero_shot_and_embed(client, model, clips):
    from mats.zeroshot import zero_shot
    labels = ["sheep", "cow", "telephone ringing", "rain"]
    expected = zero_shot(model.clap, [clips[0]], labels, top_k=3)[0]
    r = upload(client, "zero-shot", clips[0], labels=",".join(labels), top_k=3)
    assert r.status_code == 200, r.text
    assert r.json() == {**expected, "file": clips[0].name}
    assert r.json()["label"] == "sheep"  # a real recording of a sheep
    assert as_json(client, "zero-shot", clips[0], labels=labels, top_k=3).json() == r.json()
    e = upload(client, "embed", clips[2]).json()
    assert e["dim"] == model.clap.dim == len(e["embedding"]) and e["clap"] == model.clap.name
    np.testing.assert_allclose(e["embedding"], model.embed_audio([clips[2]])[0], rtol=0, atol=1e-6)
    assert as_json(client, "embed", clips[2]).json() == e


def test_timeline_and_why(client, model, long):
    r = upload(client, "tag", long, per_window=True, explain=True, top_k=5)
    assert r.status_code == 200, r.text
    body = r.json()
    # the pooled answer and the timeline are what the pipeline gives for the clip and its windows
    assert body["text"] == next(model.run([long], "tags")).text
    rows = next(model.run([long], "tags", per_window=True)).windows
    assert [(w["start"], w["end"], w["text"]) for w in body["windows"]] == \
        [(row.start, row.end, row.text) for row in rows]
    assert len(body["windows"]) == 3 and body["windows"][-1]["end"] == pytest.approx(22, abs=0.05)
    assert all(w["tags"] for w in body["windows"])
    why = body["retrieved"]
    assert len(why) == 5 and all(set(x) == {"text", "score", "weight"} and x["text"] for x in why)
    assert [x["score"] for x in why] == sorted((x["score"] for x in why), reverse=True)
    assert 0 < sum(x["weight"] for x in why) <= 1 + 1e-6


# -- refusals -------------------------------------------------------------------------------------

def test_bad_fields_are_422_naming_the_field(client, clips):
    clip = clips[0]
    raw = {"content": b'{"audio": "AAAA", "seed": 1e400}', "headers": {"content-type": "application/json"}}
    refusal(client.post("/v1/caption", **raw), 422, "seed")
    refusal(as_json(client, "caption", clip, seed="x"), 422, "seed")
    refusal(as_json(client, "caption", clip, max_new_tokens=0), 422, "max_new_tokens")
    refusal(upload(client, "caption", clip, rerank=-1), 422, "rerank")
    refusal(upload(client, "caption", clip, num_beams="many"), 422, "num_beams")
    refusal(upload(client, "caption", clip, per_window="maybe"), 422, "per_window")
    refusal(as_json(client, "caption", clip, file="x.wav"), 422, "file")  # unknown field
    refusal(upload(client, "caption", clip, bridge="magic"), 422, "bridge", "santa")
    refusal(upload(client, "ask", clip), 422, "question")
    refusal(upload(client, "ask", clip, question="   "), 422, "question")
    refusal(upload(client, "caption", clip, question="why?"), 422, "question")
    refusal(upload(client, "zero-shot", clip, labels="dog"), 422, "labels")
    refusal(upload(client, "zero-shot", clip, labels="dog,cat", prompt="no placeholder"), 422, "prompt")
    refusal(client.post("/v1/caption", data={"bridge": "santa"}), 422, "file")
    refusal(client.post("/v1/caption", json={"filename": "x.wav"}), 422, "audio")
    refusal(client.post("/v1/caption", json={"audio": "not base64!"}), 422, "audio")
    refusal(client.post("/v1/caption", json=["a list"]), 422, "object")


def test_bad_bodies(client):
    deep = b'{"audio": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    refusal(client.post("/v1/caption", content=deep, headers={"content-type": "application/json"}), 400, "JSON")
    refusal(client.post("/v1/caption", content=b"{nope", headers={"content-type": "application/json"}), 400)
    refusal(client.post("/v1/caption", content=b"hello", headers={"content-type": "text/plain"}), 415)
    refusal(client.post("/v1/caption", content=b"hello"), 415)
    broken = b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(200)
    err = refusal(client.post("/v1/tag", files={"file": ("broken.wav", broken, "audio/wav")}), 400, "broken.wav")
    assert "mats-upload" not in err and "/tmp" not in err  # the client's name, never the server's
    refusal(client.post("/v1/tag", files={"file": ("empty.wav", b"", "audio/wav")}), 422, "empty")
    assert client.get("/v1/caption").status_code == 405
    assert client.get("/nowhere").status_code == 404
    assert client.get("/health").status_code == 200  # still serving


def test_upload_size_limit(client, settings, clips):
    data = clips[0].read_bytes()
    settings.max_upload_bytes = len(data) - 1
    refusal(upload(client, "caption", clips[0]), 413, f"{len(data) - 1:,}")

    def chunks():  # no Content-Length: the limit is counted as the body arrives
        for i in range(0, len(data), 4096):
            yield data[i:i + 4096]
    refusal(client.post("/v1/caption", content=chunks(), headers={"content-type": "application/json"}), 413)


def test_decoded_size_budget(client, settings, tmp_path):
    """A small compressed file that would decode to many samples is refused from its header."""
    import soundfile as sf
    f = tmp_path / "hostile.flac"
    sf.write(str(f), np.zeros(384000 * 30, np.int16), 384000, format="FLAC")  # 30 s at 384 kHz
    assert f.stat().st_size < 200_000
    settings.max_decoded_samples = 5_000_000
    err = refusal(upload(client, "caption", f), 413, "hostile.flac", "11,520,000", "5,000,000")
    assert "/tmp" not in err
    refusal(upload(client, "zero-shot", f, labels="a,b"), 413)
    refusal(upload(client, "embed", f), 413)


def test_one_decoded_size_budget(client, settings, clips, monkeypatch):
    """The server's budget is the one its worker decodes under (the environment's is the CLI's)."""
    monkeypatch.setenv("MATS_MAX_DECODED_SAMPLES", "1000")
    settings.max_decoded_samples = 50_000_000
    assert upload(client, "embed", clips[0]).status_code == 200
    r = upload(client, "tag", clips[0], num_beams=1, rerank=0, max_new_tokens=3)
    assert r.status_code == 200, r.text


def test_batch_invariance_is_promised_only_for_fp32(caplog):
    from mats.pipeline import MATS
    bf16 = MATS.from_pretrained(dtype="bf16")
    assert not bf16.batch_invariant
    with caplog.at_level(logging.WARNING, logger="mats.server"):
        app = create_app(bf16, Settings())
    assert any("may differ with the batch" in r.getMessage() for r in caplog.records)
    with TestClient(app) as c:
        assert c.get("/v1/info").json()["batch_invariant"] is False


def test_path_field(client, settings, clips, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "sheep.wav").write_bytes(clips[0].read_bytes())
    (shared / "sub").mkdir()
    (shared / "escape.wav").symlink_to(clips[1])  # a link out of the folder
    outside = tmp_path / "outside.wav"
    outside.write_bytes(clips[1].read_bytes())
    refusal(client.post("/v1/caption", json={"path": "sheep.wav"}), 403, "--allow-dir")  # off by default
    settings.allow_dir = shared.resolve()
    ok = client.post("/v1/caption", json={"path": "sheep.wav"})
    assert ok.status_code == 200 and ok.json()["text"] == upload(client, "caption", clips[0]).json()["text"]
    assert client.post("/v1/caption", json={"path": str(shared / "sheep.wav")}).status_code == 200
    assert client.post("/v1/caption", data={"path": "sheep.wav"}).status_code == 200  # a form field too
    errors = set()
    for bad in ["missing.wav", str(outside), "../outside.wav", "sub/../../outside.wav", "escape.wav",
                "/etc/shadow", "/etc/passwd", "/root", "sub", "~/sheep.wav", "~", "sheep.wav\x00x", ""]:
        r = client.post("/v1/caption", json={"path": bad})
        errors.add((r.status_code, r.text))
    assert errors == {(404, json.dumps({"error": PATH_REFUSED, "status": 404}, separators=(",", ":")))}


def test_api_key(client, settings, clips):
    settings.api_key = "s3cret-key"
    refusal(upload(client, "tag", clips[0]), 401, "Bearer")
    refusal(client.get("/v1/info", headers={"Authorization": "Bearer wrong"}), 401)
    refusal(client.get("/v1/info", headers={"Authorization": "s3cret-key"}), 401)
    assert client.get("/v1/info", headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
    assert client.get("/health").status_code == 200 and client.get("/").status_code == 200


def test_request_timeout(client, settings, clips):
    settings.request_timeout_s = 0.05
    refusal(upload(client, "caption", clips[2]), 504, "timeout")
    settings.request_timeout_s = 300
    assert upload(client, "tag", clips[0]).status_code == 200  # the worker is still fine


def test_one_log_line_per_request(client, clips, caplog):
    caplog.set_level(logging.INFO, logger="mats.server")
    client.get("/health")
    upload(client, "tag", clips[0], bridge="magic")
    lines = [r.getMessage() for r in caplog.records if r.name == "mats.server"]
    assert len(lines) == 2
    assert lines[0].startswith("GET /health 200 ") and lines[0].endswith(" ms")
    assert lines[1].startswith("POST /v1/tag 422 ")
