"""`mats caption | tag | music | ask | chat` and the MATS Python API, end to end.

A tiny random LLM (tests/tiny.py) stands in for the real one: its text is garbage, but everything
around it is real: the default CLAP on real recorded sounds, the Santa bridge, batching, beam search,
output formats, error handling and exit codes.
"""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest

from conftest import real_sounds_folder, require
from mats.cli import main

TOKENS = ["--max-new-tokens", "6"]  # garbage either way; keeps the tiny LLM quick


# -- fixtures ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sound_files():
    from mats.data.sounds import read_metadata
    folder = real_sounds_folder()
    meta = read_metadata(folder)
    wanted = ["36-sheep.wav", "37-cow.wav", "phone-incoming-call.oga"]
    found = [folder / r["file"] for w in wanted for r in meta if r["file"].endswith("/" + w)]
    if len(found) < 3:  # a different package version: any three clips will do
        found = [folder / r["file"] for r in meta[:3]]
    require(len(found) >= 3 and all(f.is_file() for f in found), "fewer than three real clips available")
    return found[:3]


@pytest.fixture(scope="module")
def batch_dir(tmp_path_factory, sound_files):
    """1-*, 3-*, 4-*: real clips; 2-broken.wav: not audio; notes.txt: not an audio file at all."""
    d = tmp_path_factory.mktemp("batch")
    for i, src in zip((1, 3, 4), sound_files, strict=False):
        shutil.copy(src, d / f"{i}-{src.name}")
    (d / "2-broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(256)) * 4)
    (d / "notes.txt").write_text("not audio\n")
    return d


@pytest.fixture(scope="module")
def clips(batch_dir):
    return sorted(p for p in batch_dir.iterdir() if p.name[0] in "134")


@pytest.fixture(scope="module")
def broken(batch_dir):
    return batch_dir / "2-broken.wav"


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory, clips):
    """~25 s: a real clip repeated end to end (three 10 s CLAP windows)."""
    import soundfile as sf
    wave, sr = sf.read(str(clips[0]), dtype="float32", always_2d=True)
    wave = wave.mean(1)
    reps = int(np.ceil(25 * sr / len(wave)))
    out = tmp_path_factory.mktemp("long") / "long.wav"
    sf.write(str(out), np.tile(wave, reps)[: 25 * sr], sr)
    return out


@pytest.fixture(scope="module")
def model(tiny_model):
    from mats.pipeline import MATS
    return MATS.from_pretrained(tiny_model)


@pytest.fixture
def cli(capsys, monkeypatch, model, tiny_model):
    """Run `mats ...` in process -> (exit code, stdout, stderr). The CLI's loader hands out the model
    loaded once for this module (loading the CLAP each time would dominate the run time)."""
    import mats.commands.tasks

    def load(args):
        assert args.model == str(tiny_model)
        return model

    monkeypatch.setattr(mats.commands.tasks, "_load", load)

    def run(*argv, stdin: str | None = None, real_load: bool = False):
        if real_load:
            monkeypatch.undo()
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        capsys.readouterr()
        rc = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return rc, out, err

    return run


def jsonl(out: str) -> list[dict]:
    lines = out.splitlines()
    assert lines and all(line.strip() for line in lines), out
    return [json.loads(line) for line in lines]


# -- commands and formats ---------------------------------------------------------------------------

def test_directory_batch_with_a_corrupt_file(cli, tiny_model, batch_dir, clips, broken):
    # The one run that loads the model from its folder through the CLI, as a user would.
    rc, out, err = cli("caption", batch_dir, "--model", tiny_model, "--format", "jsonl", *TOKENS,
                       real_load=True)
    assert rc == 1
    rows = jsonl(out)
    # the folder expands to its four audio files, sorted; notes.txt is not one of them
    assert [r["file"] for r in rows] == [str(clips[0]), str(broken), str(clips[1]), str(clips[2])]
    bad = rows[1]
    assert bad["task"] == "caption" and "error" in bad and "text" not in bad
    assert "2-broken.wav" in bad["error"]
    for r in rows[:1] + rows[2:]:
        assert r["task"] == "caption" and isinstance(r["text"], str) and "error" not in r
        assert r["bridge"] == "santa"


@pytest.mark.parametrize("command,task", [("caption", "caption"), ("tag", "tags"), ("music", "music")])
def test_commands_jsonl(cli, tiny_model, clips, command, task):
    rc, out, _ = cli(command, *clips, "--model", tiny_model, "--format", "jsonl", *TOKENS)
    assert rc == 0
    rows = jsonl(out)
    assert [r["file"] for r in rows] == [str(c) for c in clips]
    for r in rows:
        assert {"file", "task", "text"} <= set(r) and r["task"] == task and isinstance(r["text"], str)
        assert "error" not in r and "start" not in r
        if command == "tag":
            assert isinstance(r["tags"], list) and all(isinstance(t, str) and t for t in r["tags"])
            from mats.tasks import split_tags
            assert r["tags"] == split_tags(r["text"])
        else:
            assert "tags" not in r


def test_ask_jsonl(cli, tiny_model, clips):
    q = "What is making this sound?"
    rc, out, _ = cli("ask", *clips[:2], q, "--model", tiny_model, "--format", "jsonl", *TOKENS)
    assert rc == 0
    rows = jsonl(out)
    assert [r["file"] for r in rows] == [str(c) for c in clips[:2]]
    assert all(r["task"] == "qa" and r["question"] == q and isinstance(r["text"], str) for r in rows)


def test_csv_format(cli, tiny_model, clips, broken):
    rc, out, _ = cli("tag", clips[0], broken, clips[1], "--model", tiny_model, "--format", "csv", *TOKENS)
    assert rc == 1
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["file", "task", "start", "end", "text", "error"]
    assert [r["file"] for r in rows] == [str(clips[0]), str(broken), str(clips[1])]
    assert rows[1]["error"] and not rows[1]["text"]
    assert all(r["task"] == "tags" and not r["error"] and r["start"] == "" for r in (rows[0], rows[2]))


def test_text_format(cli, tiny_model, clips, broken):
    rc, out, _ = cli("caption", clips[0], broken, clips[1], "--model", tiny_model, *TOKENS)
    assert rc == 1
    lines = out.splitlines()
    assert len(lines) == 3  # one line per input, even if an answer contained a newline
    parts = [line.split("\t") for line in lines]
    assert all(len(p) == 2 for p in parts)
    assert [p[0] for p in parts] == [str(clips[0]), str(broken), str(clips[1])]
    assert parts[1][1].startswith("ERROR: ") and not parts[0][1].startswith("ERROR")


def test_per_window(cli, tiny_model, long_clip):
    rc, out, _ = cli("caption", long_clip, "--model", tiny_model, "--format", "jsonl", "--per-window",
                     *TOKENS)
    assert rc == 0
    rows = jsonl(out)
    assert len(rows) >= 2 and all(r["file"] == str(long_clip) for r in rows)
    starts, ends = [r["start"] for r in rows], [r["end"] for r in rows]
    assert starts[0] == 0 and starts == sorted(set(starts)) and ends == sorted(set(ends))
    assert all(s < e for s, e in zip(starts, ends, strict=True))
    assert ends[-1] == pytest.approx(25.0, abs=0.05)
    # the text format names the window
    rc, out, _ = cli("caption", long_clip, "--model", tiny_model, "--per-window", *TOKENS)
    assert rc == 0 and len(out.splitlines()) == len(rows) and "[0.0-10.0s]" in out.splitlines()[0]


def test_chat_from_stdin(cli, tiny_model, clips):
    rc, out, err = cli("chat", clips[0], "--model", tiny_model, stdin="What is it?\nIs it loud?\n\nignored\n")
    assert rc == 0
    assert out.count("mats> ") == 2  # the empty line ended the chat
    assert "Listening to" in err


def test_chat_ends_at_eof(cli, tiny_model, clips):
    rc, out, _ = cli("chat", clips[0], "--model", tiny_model, stdin="What is it?")
    assert rc == 0 and out.count("mats> ") == 1


def test_ask_usage_errors(cli, tiny_model, clips):
    rc, _, err = cli("ask", clips[0], "--model", tiny_model)
    assert rc == 2 and "question" in err and "Traceback" not in err
    rc, _, err = cli("ask", clips[0], "   ", "--model", tiny_model)
    assert rc == 2 and "question is empty" in err
    rc, _, err = cli("ask", clips[0], clips[1], "--model", tiny_model)  # forgot the question
    assert rc == 2 and "must be the question" in err
    with pytest.raises(SystemExit) as e:
        cli("ask", "--model", tiny_model)
    assert e.value.code == 2


def test_no_audio_in_folder(cli, tiny_model, tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    rc, _, err = cli("caption", tmp_path, "--model", tiny_model)
    assert rc == 2 and "no audio files" in err


# -- determinism and batching ------------------------------------------------------------------------

def test_deterministic(cli, tiny_model, clips):
    args = ("tag", *clips, "--model", tiny_model, "--format", "jsonl", *TOKENS)
    first = cli(*args)
    second = cli(*args)
    assert first[0] == second[0] == 0 and first[1] == second[1]


def test_batch_independence_cli(cli, tiny_model, clips):
    rc, out, _ = cli("caption", *clips, "--model", tiny_model, "--format", "jsonl", *TOKENS)
    assert rc == 0
    batched = {r["file"]: r["text"] for r in jsonl(out)}
    for c in clips:
        rc, out, _ = cli("caption", c, "--model", tiny_model, "--format", "jsonl", *TOKENS)
        assert rc == 0 and jsonl(out)[0]["text"] == batched[str(c)]


def test_batch_independence_with_left_padding(model, clips):
    """Different questions give prompts of different lengths, so the batch is left-padded. A clip's
    answer must not depend on its neighbours (regression: generate's own repetition penalty took the
    left padding for a prompt to skip and left the first generated tokens of short prompts alone)."""
    emb = model.embed_audio(clips)
    questions = ["What?", "What is making this sound, and is it indoors or outdoors in the countryside?",
                 "Is it loud?"]
    batched = model.generate(emb, "qa", questions=questions, max_new_tokens=8)  # 4 beams, penalties on
    alone = [model.generate(emb[i:i + 1], "qa", questions=[q], max_new_tokens=8)[0]
             for i, q in enumerate(questions)]
    assert batched == alone
    greedy = model.generate(emb, "qa", questions=questions, max_new_tokens=8, num_beams=1)
    assert greedy == [model.generate(emb[i:i + 1], "qa", questions=[q], max_new_tokens=8, num_beams=1)[0]
                      for i, q in enumerate(questions)]


# -- Python API --------------------------------------------------------------------------------------

def test_python_api(model, clips, broken):
    caps = model.caption(clips, max_new_tokens=6)
    assert len(caps) == 3 and all(isinstance(c, str) for c in caps)
    assert model.caption(clips, max_new_tokens=6) == caps
    tags = model.tag([str(c) for c in clips], max_new_tokens=6)
    assert len(tags) == 3 and all(isinstance(t, list) and all(isinstance(x, str) for x in t) for t in tags)
    answer = model.ask(clips[0], "What is it?", max_new_tokens=6)
    assert isinstance(answer, str)
    for q in ("", "   "):
        with pytest.raises(ValueError, match="empty"):
            model.ask(clips[0], q)
    with pytest.raises(ValueError, match="2-broken.wav"):
        model.caption([broken])
    results = list(model.run([clips[0], broken], "caption", max_new_tokens=6))
    assert results[0].text == caps[0] and results[1].error and results[1].text is None
    with pytest.raises(ValueError, match="question"):
        list(model.run([clips[0]], "qa"))


# -- CLAP reranking of beam candidates --------------------------------------------------------------

def test_rerank_picks_the_candidate_closest_to_the_audio(model):
    texts = ["the sound of a cow mooing", "a telephone is ringing", "sheep bleating in a field"]
    # Stand-ins for audio embeddings whose closest text is known: the texts' own embeddings.
    targets = np.asarray(model.clap.encode_text([texts[2], texts[0], texts[1]]), np.float32)
    picked = model.rerank(targets, [texts, texts, ["", texts[1], texts[0]]])
    assert picked == [texts[2], texts[0], texts[1]]
    assert model.rerank(targets[:1], [["", "  "]]) == [""]  # nothing to score: empty answer, no error


def test_rerank_in_generate(model, clips):
    import torch

    from mats.model import Request
    from mats.prompts import instruction_for

    emb = model.embed_audio(clips)
    z = model.bridge(emb, "santa")
    reqs = [Request("caption", instruction_for("caption"))] * len(clips)
    beams = model.model.generate(torch.from_numpy(z), reqs, num_beams=4, num_return_sequences=4,
                                 max_new_tokens=6, repetition_penalty=1.3, no_repeat_ngram_size=3)
    candidates = [beams[i:i + 4] for i in range(0, len(beams), 4)]
    out = model.generate(emb, "caption", max_new_tokens=6, rerank=4)
    assert out == model.rerank(emb, candidates)  # scored against the raw audio, not the bridged one
    assert all(o in c for o, c in zip(out, candidates, strict=True))
    assert model.generate(emb, "caption", max_new_tokens=6, rerank=4) == out  # deterministic
    assert [model.generate(emb[i:i + 1], "caption", max_new_tokens=6, rerank=4)[0] for i in range(3)] == out
    top_beam = model.generate(emb, "caption", max_new_tokens=6, rerank=0)
    assert top_beam == [c[0] for c in candidates]
    with pytest.raises(ValueError, match="rerank"):
        model.generate(emb, "caption", rerank=-1)


def test_rerank_option_on_the_cli(cli, tiny_model, clips):
    rc, out, _ = cli("caption", *clips, "--model", tiny_model, "--format", "jsonl", "--rerank", "0", *TOKENS)
    assert rc == 0 and len(jsonl(out)) == 3
    rc, out, err = cli("tag", clips[0], "--model", tiny_model, "--rerank", "-1")
    assert rc == 2 and out == "" and "rerank must be >= 0" in err and "Traceback" not in err


def test_show_retrieved_in_every_format(cli, tiny_model, model, clips):
    """--show-retrieved: the memory's nearest texts, the same in jsonl, csv and text, and those
    MATS.retrieved reports (for a model without a retrieval prompt: the neighbours of the audio
    embedding, which Santa mixes in)."""
    rc, out, _ = cli("tag", *clips[:2], "--model", tiny_model, "--format", "jsonl", "--show-retrieved", *TOKENS)
    assert rc == 0
    rows = jsonl(out)
    assert not model.model.config.retrieval.enabled
    expected = model.retrieved(model.embed_audio(clips[:2]))
    for r, want in zip(rows, expected, strict=True):
        assert [x["text"] for x in r["retrieved"]] == [x["text"] for x in want]
        assert all(x["text"].startswith("training text ") and -1 <= x["score"] <= 1 for x in r["retrieved"])
    rc, out, _ = cli("tag", clips[0], "--model", tiny_model, "--format", "csv", "--show-retrieved", *TOKENS)
    header, row = list(csv.reader(io.StringIO(out)))
    assert header[-1] == "retrieved" and row[-1].split(" | ")[0].startswith(rows[0]["retrieved"][0]["text"])
    rc, out, _ = cli("tag", clips[0], "--model", tiny_model, "--show-retrieved", *TOKENS)
    assert out.rstrip("\n").split("\t")[2] == row[-1]
    rc, out, _ = cli("tag", clips[0], "--model", tiny_model, "--format", "jsonl", *TOKENS)
    assert "retrieved" not in jsonl(out)[0]
