"""events=true on the task endpoints: a real three-event recording (real clips, silence between) through
the app with the real default model, against MATS.events called directly; bad hop / min_event; limits."""

from __future__ import annotations

import base64

import pytest

from serving import default_model, real_clips, refusal, three_events, upload


@pytest.fixture(scope="module")
def model():
    return default_model()


@pytest.fixture(scope="module")
def recording(tmp_path_factory, model):
    folder = tmp_path_factory.mktemp("serve-events")
    return three_events(real_clips(folder / "clips", 3), folder / "three-events.wav", model.clap.sample_rate)



def _as_served(events) -> list[dict]:
    """What the API returns for the library's events (absent fields are the library's None)."""
    return [{k: v for k, v in e.to_dict().items() if v is not None} for e in events]


@pytest.mark.parametrize("endpoint,task", [("caption", "caption"), ("tag", "tags")])
def test_events_match_the_library_and_find_the_three_sounds(client, app, model, recording, endpoint, task):
    from mats.events import summarize
    path, spans = recording
    batches = app.state.batcher.batches
    r = upload(client, endpoint, path, events=True)
    assert r.status_code == 200, r.text
    body = r.json()
    assert app.state.batcher.batches == batches + 1  # one job of the batching worker, no side path
    expected = model.events(path, task)
    assert body["events"] == _as_served(expected)
    assert body["summary"] == body["text"] == summarize(expected)
    assert body["duration"] == pytest.approx(spans[-1][1], abs=0.01)

    sounds = [e for e in body["events"] if e["kind"] == "sound"]
    silences = [e for e in body["events"] if e["kind"] == "silence"]
    assert len(sounds) == 3 and len(silences) == 2
    for e, (start, end) in zip(sounds, spans, strict=True):
        assert abs(e["start"] - start) <= 1.0 and abs(e["end"] - end) <= 1.0, (e, spans)
        assert e["text"] and 0.0 < e["confidence"] <= 1.0 + 1e-6 and "error" not in e
        assert bool(e.get("tags")) == (task == "tags")
    assert all("text" not in e and "tags" not in e for e in silences)  # silence is never answered
    assert body["summary"].count(", then ") == 2  # names the three events, in order
    assert "windows" not in body and "retrieved" not in body


def test_json_body_hop_and_min_event_are_the_librarys(client, model, recording):
    path, _ = recording
    r = client.post("/v1/caption", json={"audio": base64.b64encode(path.read_bytes()).decode(), "events": True,
                                         "hop": 2.5, "min_event": 2.0, "filename": "three.wav"})
    assert r.status_code == 200, r.text
    assert r.json()["file"] == "three.wav"
    assert r.json()["events"] == _as_served(model.events(path, "caption", hop=2.5, min_event=2.0))


@pytest.mark.parametrize("fields,words", [
    ({"hop": 0}, ("hop", "positive", "0")),
    ({"hop": -2}, ("hop", "positive", "-2")),
    ({"hop": 10.5}, ("hop", "10.5", "window of 10")),
    ({"hop": "nan"}, ("hop", "positive")),
    ({"min_event": 0}, ("min_event", "positive")),
    ({"min_event": -1}, ("min_event", "positive")),
])
def test_bad_hop_or_min_event_is_a_400_in_one_line(client, app, recording, fields, words):
    batches = app.state.batcher.batches
    err = refusal(upload(client, "caption", recording[0], events=True, **fields), 400, *words)
    assert "--" not in err  # the API's field names, not the CLI's flags
    assert app.state.batcher.batches == batches  # refused before any work


@pytest.mark.parametrize("fields,field", [
    ({"hop": 2}, "hop"), ({"min_event": 2}, "min_event"),
    ({"events": True, "per_window": True}, "per_window"), ({"events": True, "explain": True}, "explain"),
    ({"events": True, "hop": "soon"}, "hop"),
])
def test_fields_that_do_not_go_with_events_are_a_422_naming_the_field(client, recording, fields, field):
    assert refusal(upload(client, "caption", recording[0], **fields), 422).startswith(field + ":")


def test_info_states_the_longest_recording_and_the_events_defaults(client, settings, model, recording):
    from mats.events import DEFAULT_HOP, DEFAULT_MIN_EVENT
    info = client.get("/v1/info").json()
    assert info["events"] == {"default_hop": DEFAULT_HOP, "default_min_event": DEFAULT_MIN_EVENT,
                              "window": model.clap.clip_seconds}
    budget, sr = info["limits"]["max_decoded_samples"], model.clap.sample_rate
    assert info["limits"]["max_duration_s"] == pytest.approx(min(model.clap.max_seconds, budget / sr), abs=0.1)
    # a smaller budget: the stated maximum shrinks, and a recording longer than it is refused (413)
    settings.max_decoded_samples = 20 * sr
    assert client.get("/v1/info").json()["limits"]["max_duration_s"] == 20.0
    refusal(upload(client, "caption", recording[0], events=True), 413, "three-events.wav", f"{20 * sr:,}")


def test_the_worker_decodes_under_the_servers_budget(client, settings, recording, monkeypatch):
    monkeypatch.setenv("MATS_MAX_DECODED_SAMPLES", "1000")  # the CLI's budget, not the server's
    settings.max_decoded_samples = 50_000_000
    r = upload(client, "tag", recording[0], events=True)
    assert r.status_code == 200, r.text


def test_request_timeout_and_withdrawn_jobs(client, settings, model, recording):
    from mats.pipeline import Cancelled
    from mats.server import inference
    settings.request_timeout_s = 0.05
    refusal(upload(client, "caption", recording[0], events=True), 504, "timeout")
    settings.request_timeout_s = 300
    assert upload(client, "caption", recording[0], events=True).status_code == 200  # the worker is fine
    # a job whose client went away while it waited is not started
    key = inference.GenerateKey(model.decoding("caption"), events=(None, None))
    item = inference.GenerateItem(recording[0], "gone.wav", None, gone=lambda: True)
    (result,) = inference.process(model, key, [item], 8, 50_000_000)
    assert isinstance(result, Cancelled)


def test_unreadable_audio_is_a_400_naming_the_upload(client, tmp_path):
    bad = tmp_path / "not-audio.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(200))
    err = refusal(upload(client, "caption", bad, events=True), 400, "not-audio.wav")
    assert "/tmp" not in err
