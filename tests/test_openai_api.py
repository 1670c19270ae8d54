"""The OpenAI-compatible routes, through the official ``openai`` client against a real uvicorn server
on 127.0.0.1, with the real default model on real recorded clips: answers, streams, the model list,
bad input in OpenAI's error shape, the API key, and a client that leaves mid-stream."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import time

import openai
import pytest

from mats.server import Settings, create_app
from serving import LoopbackServer, default_model, real_clips

MODEL_ID = "mats-default"
GREEDY = {"num_beams": 1, "rerank": 0}


@pytest.fixture(scope="module")
def model():
    return default_model()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return real_clips(tmp_path_factory.mktemp("openai-clips"), 2)


@pytest.fixture(scope="module")
def served(model):
    settings = Settings(batch_window_ms=20)
    app = create_app(model, settings)
    with LoopbackServer(app, settings) as server:
        yield app, server


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served[1].url + "/v1", api_key="unused", max_retries=0, timeout=300)


def b64(clip) -> str:
    return base64.b64encode(clip.read_bytes()).decode()


def audio_message(clip, text: str | None = None) -> list[dict]:
    parts = [{"type": "text", "text": text}] if text else []
    parts.append({"type": "input_audio", "input_audio": {"data": b64(clip), "format": "wav"}})
    return [{"role": "user", "content": parts}]


def streamed(stream) -> tuple[list[str], list]:
    chunks = list(stream)
    return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content], chunks


def test_models_list(client):
    assert [m.id for m in client.models.list()] == [MODEL_ID]
    assert client.models.retrieve(MODEL_ID).id == MODEL_ID
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_answer_and_stream_are_the_run_loops(client, model, clips):
    """The default decoding (8 beams + CLAP rerank): the answer is the run loop's caption, and the
    stream (the answer once chosen) concatenates to it; usage counts tokens."""
    clip = clips[0]
    r = client.chat.completions.create(model=MODEL_ID, messages=audio_message(clip))
    text = r.choices[0].message.content
    assert text and text == next(model.run([clip], model.decoding("caption"))).text
    assert r.object == "chat.completion" and r.model == MODEL_ID and r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    pieces, chunks = streamed(client.chat.completions.create(
        model=MODEL_ID, messages=audio_message(clip), stream=True, stream_options={"include_usage": True}))
    assert "".join(pieces) == text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_greedy_streams_token_by_token(client, model, clips):
    clip = clips[1]
    r = client.chat.completions.create(model=MODEL_ID, messages=audio_message(clip), extra_body=GREEDY)
    text = r.choices[0].message.content
    assert text == next(model.run([clip], model.decoding("caption", num_beams=1, rerank=0))).text
    pieces, _ = streamed(client.chat.completions.create(model=MODEL_ID, messages=audio_message(clip),
                                                        stream=True, extra_body=GREEDY))
    assert len(pieces) > 1 and "".join(pieces) == text, pieces


def test_question_and_vllm_audio_url(client, model, clips):
    """Text in the message asks it (the ask task); vLLM's audio_url part with a data: URL works too."""
    clip, question = clips[0], "What animal is it?"
    content = [{"type": "audio_url", "audio_url": {"url": f"data:audio/wav;base64,{b64(clip)}"}},
               {"type": "text", "text": question}]
    r = client.chat.completions.create(model=MODEL_ID, messages=[
        {"role": "system", "content": "You describe sounds."}, {"role": "user", "content": content}])
    assert r.choices[0].message.content == next(model.run([clip], model.decoding("qa"), question=question)).text
    tags = client.chat.completions.create(model=MODEL_ID, messages=audio_message(clip), extra_body={"task": "tag"})
    assert tags.choices[0].message.content == next(model.run([clip], model.decoding("tags"))).text


def _bad_requests(clip):
    audio = {"type": "input_audio", "input_audio": {"data": b64(clip), "format": "wav"}}
    return {
        "no audio part": ({"messages": [{"role": "user", "content": "What is this?"}]}, "messages"),
        "two audio parts": ({"messages": [{"role": "user", "content": [audio, audio]}]}, "messages[0].content[1]"),
        "data: URL not audio": ({"messages": [{"role": "user", "content": [
            {"type": "audio_url", "audio_url": {"url": "data:text/plain;base64,aGVsbG8="}}]}]},
            "messages[0].content[0].audio_url.url"),
        "bad base64": ({"messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "not base64 at all!", "format": "wav"}}]}]},
            "messages[0].content[0].input_audio.data"),
        "unknown model": ({"model": "gpt-4o"}, "model"),
        "n > 1": ({"n": 2}, "n"),
        "unknown field": ({"extra_body": {"beams": 3}}, "beams"),
        "unknown bridge": ({"extra_body": {"bridge": "telepathy"}}, "bridge"),
        "max_tokens out of range": ({"max_tokens": 100000}, "max_tokens"),
        "bytes that are not audio": ({"messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": base64.b64encode(b"hello" * 100).decode(),
                                                    "format": "wav"}}]}]}, "messages"),
    }


@pytest.mark.parametrize("case", [
    "no audio part", "two audio parts", "data: URL not audio", "bad base64", "unknown model", "n > 1",
    "unknown field", "unknown bridge", "max_tokens out of range", "bytes that are not audio"])
def test_bad_input_is_a_400_naming_the_field(client, clips, case):
    change, param = _bad_requests(clips[0])[case]
    kwargs = {"model": MODEL_ID, "messages": audio_message(clips[0]), **change}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**kwargs)
    err = e.value.body
    assert e.value.status_code == 400 and err["type"] == "invalid_request_error", err
    assert err["param"] == param and err["message"], err


def test_error_shape_on_the_wire(served, clips):
    """The raw body is OpenAI's {"error": {message, type, param, code}}, also for the middleware's own
    answers (a body over the limit) and for a route's 405."""
    _, server = served
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps({"model": MODEL_ID, "messages": []}),
                     {"Content-Type": "application/json"})
        r = conn.getresponse()
        body = json.loads(r.read())
        assert r.status == 400 and set(body) == {"error"} and body["error"]["param"] == "messages"
        assert set(body["error"]) == {"message", "type", "param", "code"}
        conn.request("GET", "/v1/chat/completions")
        r = conn.getresponse()
        assert r.status == 405 and set(json.loads(r.read())["error"]) == {"message", "type", "param", "code"}
        conn.request("POST", "/v1/chat/completions", b"x" * 10, {"Content-Type": "application/json",
                                                               "Content-Length": str(10 ** 10)})
        r = conn.getresponse()
        assert r.status == 413 and json.loads(r.read())["error"]["type"] == "invalid_request_error"
    finally:
        conn.close()


def test_api_key(model, clips):
    settings = Settings(api_key="sesame")
    with LoopbackServer(create_app(model, settings), settings) as server:
        wrong = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as e:
            wrong.models.list()
        assert e.value.body["type"] == "authentication_error"
        right = openai.OpenAI(base_url=server.url + "/v1", api_key="sesame", max_retries=0, timeout=300)
        assert [m.id for m in right.models.list()] == [MODEL_ID]


def test_client_leaving_mid_stream_stops_the_decoding(served, client, clips, caplog):
    """A greedy stream forced long (min_tokens = max_tokens); the client reads its first words and
    leaves: the worker stops that decoding within a token and answers the next request."""
    app, server = served
    caplog.set_level(logging.INFO, logger="mats.server")
    body = json.dumps({"model": MODEL_ID, "messages": audio_message(clips[0]), "stream": True,
                       "max_tokens": 256, "min_tokens": 256, **GREEDY})
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("content-type").startswith("text/event-stream")
    content = 0
    while content < 1:  # the role chunk, then the first piece of the answer
        line = r.fp.readline()
        assert line, "the stream ended early"
        if line.startswith(b"data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
            content += 1
    conn.sock.close()
    conn.close()
    deadline = time.time() + 120
    stopped = []
    while not stopped and time.time() < deadline:
        stopped = [rec.getMessage() for rec in caplog.records if "stopped after" in rec.getMessage()]
        time.sleep(0.1)
    assert stopped, [rec.getMessage() for rec in caplog.records]
    tokens = int(stopped[0].split("stopped after ")[1].split()[0])
    assert 0 < tokens < 256, stopped
    r = client.chat.completions.create(model=MODEL_ID, messages=audio_message(clips[1]), extra_body=GREEDY)
    assert r.choices[0].message.content
