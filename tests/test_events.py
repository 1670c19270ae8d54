"""Events of long recordings (mats.events, `mats caption|tag --events`) on real recorded clips with the
real default model: boundaries, silence, answers through MATS.run, SRT/WebVTT parsed back, bad --hop."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest

from serving import default_model, real_clips, three_events


@pytest.fixture(scope="module")
def model():
    return default_model()


@pytest.fixture(scope="module")
def recording(tmp_path_factory, model):
    """Three real clips with silence between: (path, sound spans); see serving.three_events."""
    folder = tmp_path_factory.mktemp("events")
    return three_events(real_clips(folder / "clips", 3), folder / "three-events.wav", model.clap.sample_rate)


@pytest.fixture(scope="module")
def found(model, recording):
    return model.events(recording[0], "caption")


def test_boundaries_within_a_second_and_silence_is_its_own_event(found, recording):
    _, spans = recording
    assert found[0].start == 0.0 and found[-1].end == pytest.approx(spans[-1][1], abs=0.01)
    for a, b in zip(found, found[1:], strict=False):
        assert a.end == pytest.approx(b.start)  # events tile the recording
    starts = [e.start for e in found[1:]]
    for bound in [b for s in spans for b in s][1:-1]:
        assert min(abs(s - bound) for s in starts) <= 1.0, (bound, [(e.start, e.kind) for e in found])
    silences = [e for e in found if e.kind == "silence"]
    assert len(silences) == 2
    for e, (gap_start, gap_end) in zip(silences, [(spans[0][1], spans[1][0]), (spans[1][1], spans[2][0])],
                                       strict=True):
        assert abs(e.start - gap_start) <= 1.0 and abs(e.end - gap_end) <= 1.0
        assert e.text is None and e.tags is None and e.embedding is None  # never captioned
    for e in found:
        if e.kind == "sound":
            assert e.text and 0.0 < e.confidence <= 1.0 + 1e-6
            assert np.linalg.norm(e.embedding) == pytest.approx(1.0, abs=1e-5)


def test_event_answer_is_the_run_loops_answer_on_its_embedding(model, found):
    from mats.pipeline import Item
    sounds = [e for e in found if e.kind == "sound"]
    runs = list(model.run([Item(e.embedding) for e in sounds], "caption"))
    assert [r.text for r in runs] == [e.text for e in sounds]


def test_a_client_that_went_away_stops_the_work(model, recording, monkeypatch):
    """``cancelled`` is asked while the audio is read and before each event is decoded: once it says
    yes, MATS.events raises Cancelled and decodes nothing more."""
    from mats.pipeline import Cancelled
    decoded = []
    real = model._generate
    monkeypatch.setattr(model, "_generate", lambda *a, **k: decoded.append(1) or real(*a, **k))
    with pytest.raises(Cancelled):  # gone before the first block: nothing read, nothing decoded
        model.events(recording[0], "caption", cancelled=lambda: True)
    assert decoded == []
    asked = []

    def gone_once_detected() -> bool:  # yes from the first question of the answering stage on
        asked.append(1)
        return len(asked) > blocks

    from mats.audio import stream_audio
    blocks = sum(1 for _ in stream_audio(recording[0], model.clap.sample_rate))
    with pytest.raises(Cancelled):
        model.events(recording[0], "caption", cancelled=gone_once_detected)
    assert decoded == [] and len(asked) > blocks


def test_all_silence_is_one_silence_event(model, tmp_path):
    import soundfile as sf
    path = tmp_path / "quiet.wav"
    sf.write(str(path), np.zeros(int(12.5 * model.clap.sample_rate), np.float32), model.clap.sample_rate)
    events = model.events(path, "tag")
    assert [(e.kind, e.start, round(e.end, 2)) for e in events] == [("silence", 0.0, 12.5)]


def _cli(monkeypatch, model, argv):
    """`mats ARGV` in this process with the module's model, or with none (``model`` None: loading one
    fails the test); (rc, stdout, stderr)."""
    from mats.commands import main, tasks

    def load(args):
        assert model is not None, "the model must not load"
        return model
    monkeypatch.setattr(tasks, "_load", load)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def test_cli_jsonl_srt_and_vtt_parse_back(monkeypatch, model, recording, found):
    import srt
    import webvtt

    path = str(recording[0])
    rc, out, _ = _cli(monkeypatch, model, ["caption", path, "--events", "--format", "jsonl"])
    assert rc == 0
    row = json.loads(out)
    assert [(e["start"], e["kind"], e["text"]) for e in row["events"]] == \
        [(round(e.start, 3), e.kind, e.text) for e in found]
    assert set(row["events"][0]) >= {"start", "end", "kind", "text", "tags", "confidence"}
    sounds = [e for e in row["events"] if e["kind"] == "sound"]
    assert row["summary"].count(", then ") >= len(sounds) - 1 - sum(
        a["text"] == b["text"] for a, b in zip(sounds, sounds[1:], strict=False))

    rc, out, _ = _cli(monkeypatch, model, ["caption", path, "--events", "--format", "srt"])
    assert rc == 0
    subs = list(srt.parse(out))
    assert [(s.start.total_seconds(), s.end.total_seconds(), s.content) for s in subs] == \
        [(pytest.approx(e["start"], abs=1e-3), pytest.approx(e["end"], abs=1e-3), e["text"]) for e in sounds]

    rc, out, _ = _cli(monkeypatch, model, ["caption", path, "--events", "--format", "vtt"])
    assert rc == 0 and out.startswith("WEBVTT\n")
    cues = webvtt.from_buffer(io.StringIO(out)).captions
    assert [(c.start, c.end, c.text) for c in cues] == \
        [(_vtt_clock(e["start"]), _vtt_clock(e["end"]), e["text"]) for e in sounds]

    rc, out, _ = _cli(monkeypatch, model, ["tag", path, "--events", "--format", "csv"])
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == "file,task,start,end,kind,text,tags,confidence,error" and len(lines) == 1 + len(found)


def _vtt_clock(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


@pytest.mark.parametrize("argv, why", [
    (["--events", "--hop", "0"], "--hop must be positive"),
    (["--events", "--hop", "-2"], "--hop must be positive"),
    (["--events", "--hop", "10.5"], "larger than the CLAP's window"),
    (["--hop", "2"], "--hop goes with --events"),
    (["--format", "srt"], "add --events"),
    (["--events", "--per-window"], "choose one"),
])
def test_bad_event_options_are_refused_before_the_model_loads(monkeypatch, tmp_path, argv, why):
    from mats.commands import main, tasks

    def no_load(args):
        raise AssertionError("the model must not load")
    monkeypatch.setattr(tasks, "_load", no_load)
    clip = real_clips(tmp_path, 1)[0]
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        rc = main(["caption", str(clip), *argv])
    assert rc == 2
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mats: error:") and why in lines[0], lines


def test_subtitle_writers_follow_their_specifications():
    import srt
    import webvtt

    from mats.clap.default import DefaultCLAP
    from mats.events import CLAP_WINDOWS, Event, summarize, to_srt, to_vtt
    assert CLAP_WINDOWS["yamnet-minilm"] == DefaultCLAP.clip_seconds
    events = [Event(0.0, 2.0, "silence"), Event(2.0, 3661.5, text="A dog <barks> & --> runs."),
              Event(3661.5, 3670.0, tags=["Water", "Stream"])]
    assert to_srt(events).startswith("1\n00:00:02,000 --> 01:01:01,500\n")
    assert [s.content for s in srt.parse(to_srt(events))] == ["A dog <barks> & --> runs.", "Water, Stream"]
    cues = webvtt.from_buffer(io.StringIO(to_vtt(events))).captions
    assert [(c.start, c.end) for c in cues] == [("00:00:02.000", "01:01:01.500"), ("01:01:01.500", "01:01:10.000")]
    assert "-->" not in to_vtt(events).split("\n", 4)[-1].split("\n")[0]
    assert summarize(events) == "A dog <barks> & --> runs."
    assert summarize([Event(0, 1, text="A dog barks."), Event(1, 2, text="Water runs."),
                      Event(2, 3, "silence"), Event(3, 4, text="water runs.")]) == "A dog barks, then water runs."
    assert to_srt([Event(0.0, 5.0, "silence")]) == "" and to_vtt([]) == "WEBVTT\n\n"


def test_a_change_without_silence_between_is_found(model, tmp_path):
    """Two real clips back to back (a telephone, then applause): the change point is the boundary."""
    from mats.audio import load_audio
    from mats.events import detect_events
    sr = model.clap.sample_rate
    clips = real_clips(tmp_path, 4)[2:]
    parts = []
    for clip, secs in zip(clips, (8, 9), strict=True):
        x = load_audio(clip, sr)
        x = np.tile(x, -(-secs * sr // x.size))[:secs * sr]
        parts.append(0.5 * x / float(np.abs(x).max()))
    events = detect_events(model.clap, np.concatenate(parts))
    assert [e.kind for e in events] == ["sound", "sound"]
    assert abs(events[1].start - 8.0) <= 1.0
    assert np.dot(events[0].embedding, events[1].embedding) < 1 - 0.3  # they hear different things


def _back_to_back(clips, sr: int, first: float, second: float) -> np.ndarray:
    """Two real clips, each repeated to its length (peak 0.5), the second right after the first."""
    from mats.audio import load_audio
    parts = []
    for clip, secs in zip(clips, (first, second), strict=True):
        x = load_audio(clip, sr)
        n = int(round(secs * sr))
        parts.append(0.5 * np.tile(x, -(-n // x.size))[:n] / float(np.abs(x).max()))
    return np.concatenate(parts).astype(np.float32)


def test_change_points_land_on_the_claps_frames_not_the_hop_grid(model, tmp_path):
    """Back to back, cut 7.3 s in (off the 1 s hop grid): the refined boundary is within 0.5 s of the
    true one for every pair, where the grid's own change point is more than 0.5 s off for some."""
    from mats.events import detect_events
    sr = model.clap.sample_rate
    clips = real_clips(tmp_path, 4)  # sheep, cow, a telephone, applause (or any four real clips)
    grid_off = []
    for i, j in [(0, 3), (2, 3), (3, 0)]:
        wave = _back_to_back([clips[i], clips[j]], sr, 7.3, 8.0)
        refined = detect_events(model.clap, wave)
        assert [e.kind for e in refined] == ["sound", "sound"], [(e.start, e.kind) for e in refined]
        assert abs(refined[1].start - 7.3) <= 0.5, (clips[i].name, clips[j].name, refined[1].start)
        grid = detect_events(model.clap, wave, refine="grid")
        grid_off.append(min(abs(e.start - 7.3) for e in grid[1:]))
    assert max(grid_off) > 0.5, grid_off  # the pairs are ones where the refinement has work to do


class _NoFrames:
    """The default CLAP seen through the bare CLAP interface: no frame scores (as a backend without them)."""

    def __init__(self, clap):
        self._clap = clap

    def __getattr__(self, name):
        if name == "patch_scores":
            raise AttributeError(name)
        return getattr(self._clap, name)


def test_a_clap_without_frames_refines_with_short_windows(model, tmp_path):
    from mats.events import detect_events
    wave = _back_to_back([real_clips(tmp_path, 4)[i] for i in (2, 3)], model.clap.sample_rate, 7.3, 8.0)
    bare = detect_events(_NoFrames(model.clap), wave)
    windows = detect_events(model.clap, wave, refine="windows")
    assert [(e.start, e.end) for e in bare] == [(e.start, e.end) for e in windows]
    assert abs(bare[1].start - 7.3) <= 1.0
    with pytest.raises(ValueError, match="refine must be one of frames, windows, grid"):
        detect_events(model.clap, wave, refine="exact")


def test_cli_text_out_file_and_unreadable(monkeypatch, model, recording, tmp_path):
    path = str(recording[0])
    rc, out, _ = _cli(monkeypatch, model, ["caption", path, "--events", "--min-event", "1.5"])
    lines = out.splitlines()
    assert rc == 0 and lines[0] == f"{path} [0.0-8.0s]\t" + lines[0].split("\t")[1]
    assert sum("\t(silence)" in line for line in lines) == 2 and lines[-1].startswith(f"{path}\t")
    assert ", then " in lines[-1]

    out_file = tmp_path / "events.jsonl"
    rc, out, _ = _cli(monkeypatch, model, ["tag", path, "--events", "--out", str(out_file)])
    row = json.loads(out_file.read_text())
    assert rc == 0 and out == "" and row["file"] == path and all(e["kind"] in ("sound", "silence")
                                                                 for e in row["events"])

    bad = tmp_path / "not-audio.wav"
    bad.write_bytes(b"nothing audible here")
    rc, out, _ = _cli(monkeypatch, None, ["caption", str(bad), "--events", "--format", "jsonl"])
    assert rc == 1 and "error" in json.loads(out)  # said without loading the model

    rc, _, err = _cli(monkeypatch, None, ["caption", path, str(bad), "--events", "--format", "srt"])
    assert rc == 2 and "one audio file" in err


def test_pages_give_the_events_of_the_whole_recording(monkeypatch, model, recording, found):
    """The three-event recording analysed in pages of 12 s (carrying at most 8 s): the page ends cut
    nothing that the one-piece analysis does not, and silence spanning a page end stays one event."""
    from mats import events as ev
    monkeypatch.setattr(ev, "CARRY_SECONDS", 8.0)
    paged = ev.detect_events(model.clap, recording[0], page_seconds=12.0)
    assert [e.kind for e in paged] == [e.kind for e in found]
    for a, b in zip(paged, found, strict=True):
        assert abs(a.start - b.start) <= 1.0 and abs(a.end - b.end) <= 1.0
        if a.kind == "sound":
            assert float(a.embedding @ b.embedding) > 0.9
    assert paged.stopped_at is None and paged.warning is None
    assert paged.seconds == pytest.approx(found[-1].end)
    with pytest.raises(ValueError, match="page_seconds must be more than CARRY_SECONDS"):
        ev.detect_events(model.clap, recording[0], page_seconds=8.0)


def test_a_truncated_recording_gives_the_events_before_the_damage(monkeypatch, model, recording, tmp_path):
    """The real three-event recording as FLAC, cut in the second clip: the first clip, the silence and
    the start of the second are answered, and the run says at which second the data stopped."""
    import soundfile as sf
    path, spans = recording
    wave, sr = sf.read(str(path), dtype="float32")
    cut = tmp_path / "cut.flac"
    sf.write(str(cut), wave, sr, format="FLAC")
    data = cut.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    events = model.events(cut, "caption")
    assert events.stopped_at is not None and spans[1][0] < events.stopped_at < spans[2][0]
    assert events[-1].end == pytest.approx(events.stopped_at)
    assert f"stopped at {events.stopped_at:.1f} s" in events.warning
    assert [e.kind for e in events][:3] == ["sound", "silence", "sound"] and events[0].text

    rc, out, err = _cli(monkeypatch, model, ["caption", str(cut), "--events", "--format", "jsonl"])
    row = json.loads(out)
    assert rc == 0 and row["stopped_at"] == pytest.approx(events.stopped_at, abs=1e-3)
    assert row["warning"] == events.warning and err.strip() == f"warning: {events.warning}"
    assert [e["kind"] for e in row["events"]] == [e.kind for e in events]
