"""The paper's per-dataset task tags: the registry entries, the corpus and prompt path of a `single`
row, the model folder's `trained_tasks`, and the evaluation's choice of tag with its fallback."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from mats.decoding import Decoding
from mats.pipeline import MATS
from mats.tasks import TASKS, command_tasks, get_task, trained_tasks
from test_eval_adapters import wav, write_csv


# ----------------------------------------------------------------------------- registry
def test_single_event_task():
    t = get_task("single")
    assert t.tag == "single event" and t.command is None and not t.needs_question
    assert t.output == "tags" and t.scoring == "classify" and len(t.instructions) == 5
    assert t.parse("Dog bark.") == {"text": "Dog bark.", "tags": ["Dog bark"]}
    assert get_task("single event") is t  # the tag names the task too


def test_dataset_caption_tasks_derive_from_caption():
    cap = TASKS["caption"]
    for name, tag in (("caption_audiocaps", "audio caption audiocaps"), ("caption_clotho", "audio caption clotho")):
        t = get_task(name)
        assert t.tag == tag and t.command is None and get_task(tag) is t
        assert t.instructions == cap.instructions
        assert replace(Decoding(name), task="caption") == Decoding("caption")
        assert (t.output, t.scoring) == (cap.output, cap.scoring)


def test_commands_and_tags_unchanged():
    assert [t.command for t in command_tasks()] == ["caption", "tag", "music", "ask"]
    assert len({t.tag for t in TASKS.values()}) == len(TASKS)
    with pytest.raises(ValueError, match="unknown task"):
        get_task("scene")


def test_trained_tasks_from_config():
    assert trained_tasks({"format": "mats"}) is None
    assert trained_tasks({"trained_tasks": ["qa", "single", "tags"]}) == {"qa", "single", "tags"}
    with pytest.raises(ValueError, match="trained_tasks"):
        trained_tasks({"trained_tasks": "tags"})


# ----------------------------------------------------------------------------- corpus -> prompt
def test_corpus_row_single_trains_with_single_event_tag(tiny_llm):
    from transformers import AutoTokenizer

    from mats.data.corpus import pick_instruction, validate_row
    from mats.prompts import render_prompt

    s = validate_row({"text": "a dog barks", "task": "single", "answer": "Dog"}, "row 1")
    instruction = pick_instruction(s, random.Random(0))
    assert instruction in TASKS["single"].instructions
    tok = AutoTokenizer.from_pretrained(str(tiny_llm), local_files_only=True)
    for style in ("chat", "plain"):
        before, after = render_prompt(tok, s.task, instruction, style=style)
        assert before.endswith("<Speech>")
        assert after.startswith(f"</Speech> [single event] {instruction}")


def test_trained_tasks_round_trip(tiny_model, tmp_path):
    from mats.pipeline import MATS

    clap = SimpleNamespace(dim=384, name="stub", fingerprint=lambda: "stub-clap")  # no CLAP to load
    old = MATS.from_pretrained(tiny_model, device="cpu", clap=clap)
    assert old.trained_tasks is None  # a folder without the key
    MATS(old.model, clap, santa=old.santa, trained_tasks=["tags", "single", "tags"]).save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["trained_tasks"] == ["single", "tags"]
    assert MATS.from_pretrained(tmp_path, device="cpu", clap=clap).trained_tasks == ["single", "tags"]


# ----------------------------------------------------------------------------- evaluation
def _esc50(root):
    write_csv(root / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file", "take"],
              [["1-1-A-0.wav", 1, 0, "dog", "True", 1, "A"], ["1-2-A-1.wav", 1, 1, "rain", "True", 2, "A"]])
    for f in ("1-1-A-0.wav", "1-2-A-1.wav"):
        wav(root / "audio" / f)


def _urbansound8k(root):
    write_csv(root / "metadata" / "UrbanSound8K.csv",
              ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"],
              [["1-3-0-0.wav", 1, 0, 1, 1, 1, 3, "dog_bark"]])
    wav(root / "audio" / "fold1" / "1-3-0-0.wav")


def _vggsound(root):
    write_csv(root / "vggsound.csv", None, [["abc", 1, "dog barking", "test"]])
    wav(root / "video" / "abc_000001.wav")


def _audiocaps(root):
    write_csv(root / "test.csv", ["audiocap_id", "youtube_id", "start_time", "caption"], [[1, "abc", 0, "A dog barks"]])
    wav(root / "audio" / "test" / "abc_0.wav")


def _clotho(root):
    write_csv(root / "clotho_captions_evaluation.csv", ["file_name", "caption_1"], [["a.wav", "rain falls"]])
    wav(root / "evaluation" / "a.wav")


def _mmau(root):
    wav(root / "test-mini-audios" / "q1.wav")
    (root / "mmau-test-mini.json").write_text(json.dumps([
        {"id": "q1", "audio_id": "./test-mini-audios/q1.wav", "question": "Which animal?",
         "choices": ["dog", "cat"], "answer": "dog"}]))


def _musiccaps(root):
    write_csv(root / "musiccaps-public.csv", ["ytid", "start_s", "end_s", "caption", "is_audioset_eval"],
              [["m1", 0, 10, "A guitar plays.", "True"]])
    wav(root / "audio" / "m1.wav")


@pytest.mark.parametrize("layout, task, paper, fallback", [
    (_esc50, "classify", "single", "tags"),
    (_urbansound8k, "classify", "single", "tags"),
    (_vggsound, "classify", "single", "tags"),
    (_audiocaps, "caption", "caption_audiocaps", "caption"),
    (_clotho, "caption", "caption_clotho", "caption"),
    (_mmau, "qa", "open", "qa"),
    (_musiccaps, "caption", None, "music"),
])
def test_paper_tag_only_for_a_model_trained_on_it(tmp_path, layout, task, paper, fallback):
    from mats.evaluation.adapters import load_benchmark
    from mats.evaluation.runner import choose_prompt_task

    layout(tmp_path)
    bench = load_benchmark(tmp_path)
    assert bench.paper_tasks == ({task: paper} if paper else {})
    everything = set(TASKS)
    chosen = choose_prompt_task(task, bench, everything)
    assert chosen["task"] == (paper or fallback) and chosen["tag"] == get_task(paper or fallback).tag
    default_corpus = {"caption", "tags", "qa"}
    never = choose_prompt_task(task, bench, default_corpus)
    assert never["task"] == fallback
    if paper:
        assert never["reason"].startswith(f"fallback: model never trained on [{get_task(paper).tag}]")
        old = choose_prompt_task(task, bench, None)
        assert old["task"] == fallback and "trained_tasks" in old["reason"]
    # another evaluation task over the same set keeps its own prompt
    assert choose_prompt_task("tag", bench, everything)["task"] == "tags"


class _StubMATS(MATS):
    """MATS with its two ends fixed, for run_eval: fixed embeddings, an answer naming a label, and a
    record of the prompt task each generate call asked with (the run loop between them is real)."""

    def __init__(self, folder, trained):
        clap = SimpleNamespace(dim=4, name="stub", describe=lambda: {"name": "stub"})
        super().__init__(SimpleNamespace(device="cpu", runtime="torch"), clap, folder, trained_tasks=trained)
        self.asked = []

    def embed_audio(self, files, max_decoded_samples=None):
        return np.ones((len(files), 4), np.float32)

    def _generate(self, embeddings, decoding, questions, batch_size, streamer=None):
        self.asked.append(decoding.task)  # the run loop's decoding step, with the Decoding resolved
        return ["dog"] * len(embeddings)


@pytest.mark.parametrize("trained, task, reason", [
    (["caption", "qa", "single", "tags"], "single", "the paper's prompt for esc50"),
    (["caption", "qa", "tags"], "tags", "fallback: model never trained on [single event]"),
    (None, "tags", "fallback: the model folder does not record"),
])
def test_run_eval_records_the_prompt_choice(tmp_path, trained, task, reason):
    from mats.evaluation.runner import EvalConfig, evaluate

    _esc50(tmp_path / "esc")
    m = _StubMATS(tmp_path, trained)
    res = evaluate(EvalConfig(data=tmp_path / "esc", task="classify", bridge="none", out=tmp_path / "out",
                              zero_shot=False, progress=False, plots=False), mats=m)
    assert set(m.asked) == {task}
    cfg = res["config"]
    assert cfg["prompt_task"] == task and cfg["prompt_tag"] == get_task(task).tag
    assert cfg["prompt_reason"].startswith(reason)
    assert all(p["tags"] == ["dog"] for p in res["predictions"])
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["config"]["prompt_reason"] == cfg["prompt_reason"]
    assert f"[{get_task(task).tag}] (task {task}): {reason}" in (tmp_path / "out" / "report.md").read_text()
