"""Each benchmark adapter on a tiny copy written in its published layout (real WAV files)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mats.evaluation import BenchmarkLayoutError, detect_benchmark, load_benchmark


def wav(path: Path, seconds: float = 0.05, sr: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr)
    return path


def write_csv(path: Path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        w.writerows(rows)


def check_audio(bench):
    for it in bench.items:
        info = sf.info(str(it.file))
        assert info.frames > 0


def test_audiocaps(tmp_path):
    write_csv(tmp_path / "test.csv", ["audiocap_id", "youtube_id", "start_time", "caption"],
              [[1, "abc", 30, "A dog barks"], [2, "abc", 30, "Dog barking"], [3, "xyz", 0, "Rain falls"],
               [4, "gone", 10, "Missing clip"]])
    wav(tmp_path / "audio" / "test" / "abc_30.wav")
    wav(tmp_path / "audio" / "test" / "Yxyz_0.000_10.000.flac")
    assert detect_benchmark(tmp_path) == "audiocaps"
    b = load_benchmark(tmp_path)
    assert b.name == "audiocaps" and b.tasks_supported == ("caption",) and b.split == "test"
    assert [it.captions for it in b.items] == [["A dog barks", "Dog barking"], ["Rain falls"]]
    assert b.missing == ["gone_10"]
    check_audio(b)
    with pytest.raises(BenchmarkLayoutError, match="gone_10"):
        load_benchmark(tmp_path, "audiocaps", missing="error")
    with pytest.raises(BenchmarkLayoutError, match="val.csv"):
        load_benchmark(tmp_path, "audiocaps", split="val")


def test_clotho(tmp_path):
    write_csv(tmp_path / "clotho_captions_evaluation.csv", ["file_name"] + [f"caption_{i}" for i in range(1, 6)],
              [["a b.wav", "c1", "c2", "c3", "c4", "c5"]])
    wav(tmp_path / "evaluation" / "a b.wav")
    b = load_benchmark(tmp_path)
    assert b.name == "clotho" and len(b) == 1 and b.items[0].captions == ["c1", "c2", "c3", "c4", "c5"]
    assert b.items[0].id == "a b.wav"
    with pytest.raises(BenchmarkLayoutError, match="clotho_captions_validation.csv"):
        load_benchmark(tmp_path, "clotho", split="val")


def test_esc50_and_urbansound8k(tmp_path):
    esc = tmp_path / "ESC-50-master"
    write_csv(esc / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file", "take"],
              [["1-100-A-0.wav", 1, 0, "dog", "True", 100, "A"], ["2-200-A-10.wav", 2, 10, "rain", "True", 200, "A"]])
    for f in ("1-100-A-0.wav", "2-200-A-10.wav"):
        wav(esc / "audio" / f)
    b = load_benchmark(esc)
    assert b.name == "esc50" and b.tasks_supported == ("classify",) and b.labels == ["dog", "rain"]
    assert [it.labels for it in b.items] == [["dog"], ["rain"]]
    assert [it.id for it in load_benchmark(esc, split="fold2").items] == ["2-200-A-10.wav"]
    check_audio(b)

    us = tmp_path / "UrbanSound8K"
    write_csv(us / "metadata" / "UrbanSound8K.csv",
              ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"],
              [["100032-3-0-0.wav", 100032, 0, 0.3, 1, 5, 3, "dog_bark"],
               ["100263-2-0-117.wav", 100263, 58.5, 62.5, 1, 3, 2, "children_playing"]])
    wav(us / "audio" / "fold5" / "100032-3-0-0.wav")
    wav(us / "audio" / "fold3" / "100263-2-0-117.wav")
    u = load_benchmark(us)
    assert u.name == "urbansound8k" and [it.labels[0] for it in u.items] == ["dog_bark", "children_playing"]
    assert len(load_benchmark(us, split="3")) == 1


def test_vggsound_and_fsd50k(tmp_path):
    vg = tmp_path / "vgg"
    write_csv(vg / "vggsound.csv", None, [["---g-f_I2yQ", 1, "people marching", "test"],
                                          ["--0PQM4-hqg", 30, "waterfall burbling", "train"]])
    wav(vg / "video" / "---g-f_I2yQ_000001.wav")
    b = load_benchmark(vg)
    assert b.name == "vggsound" and len(b) == 1 and b.items[0].labels == ["people marching"]
    assert set(b.labels) == {"people marching", "waterfall burbling"}
    with pytest.raises(BenchmarkLayoutError, match="--0PQM4-hqg_000030"):
        load_benchmark(vg, split="train")

    fs = tmp_path / "fsd"
    gt = fs / "FSD50K.ground_truth"
    write_csv(gt / "eval.csv", ["fname", "labels", "mids"],
              [[37199, "Electric_guitar,Guitar,Music", "/m/02sgy,/m/0342h,/m/04rlf"]])
    write_csv(gt / "dev.csv", ["fname", "labels", "mids", "split"],
              [[64760, "Bark,Dog", "/m/05tny_,/m/0bt9lr", "train"], [16399, "Rain", "/m/06mb1", "val"]])
    write_csv(gt / "vocabulary.csv", None, [[0, "Bark", "/m/05tny_"], [1, "Dog", "/m/0bt9lr"], [2, "Rain", "/m/06mb1"]])
    wav(fs / "FSD50K.eval_audio" / "37199.wav")
    wav(fs / "FSD50K.dev_audio" / "64760.wav")
    wav(fs / "FSD50K.dev_audio" / "16399.wav")
    e = load_benchmark(fs)
    assert e.name == "fsd50k" and e.tasks_supported == ("tag",)
    assert e.items[0].labels == ["Electric_guitar", "Guitar", "Music"]
    assert [it.id for it in load_benchmark(fs, split="val").items] == ["16399"]
    dev = load_benchmark(fs, split="dev")
    assert len(dev) == 2 and dev.labels == ["Bark", "Dog", "Rain"]


def test_musiccaps(tmp_path):
    write_csv(tmp_path / "musiccaps-public.csv",
              ["ytid", "start_s", "end_s", "audioset_positive_labels", "aspect_list", "caption", "author_id",
               "is_balanced_subset", "is_audioset_eval"],
              [["-0Gj8-vB1q4", 30, 40, "/m/0140xf", "['low quality', 'sustained strings melody']",
                "The low quality recording features strings.", 4, "False", "True"],
               ["-0SdAVK79lg", 30, 40, "/m/0155w", "['guitar']", "A guitar plays.", 0, "False", "False"]])
    wav(tmp_path / "audio" / "[-0Gj8-vB1q4]-[30-40].wav")
    wav(tmp_path / "audio" / "-0SdAVK79lg.wav")
    b = load_benchmark(tmp_path)
    assert b.name == "musiccaps" and len(b) == 2
    assert b.items[0].meta["aspects"] == ["low quality", "sustained strings melody"]
    ev = load_benchmark(tmp_path, split="eval")
    assert [it.id for it in ev.items] == ["-0Gj8-vB1q4"] and ev.items[0].captions[0].startswith("The low")


def test_clothoaqa_and_mmau(tmp_path):
    aqa = tmp_path / "aqa"
    write_csv(aqa / "clotho_aqa_test.csv", ["file_name", "QuestionText", "answer", "confidence"],
              [["x.wav", "Is it raining?", "yes", "yes"], ["x.wav", "Is it raining?", "yes", "maybe"],
               ["x.wav", "Is it raining?", "no", "yes"], ["x.wav", "What animal?", "dog", "yes"]])
    wav(aqa / "audio_files" / "x.wav")
    b = load_benchmark(aqa)
    assert b.name == "clothoaqa" and b.tasks_supported == ("qa",) and len(b) == 2
    assert b.items[0].answer == "yes" and b.items[0].meta["answers"] == ["yes", "yes", "no"]

    mm = tmp_path / "mmau"
    wav(mm / "test-mini-audios" / "q1.wav")
    (mm / "mmau-test-mini.json").write_text(json.dumps([
        {"id": "q1", "audio_id": "./test-mini-audios/q1.wav", "question": "Which instrument?",
         "choices": ["piano", "guitar"], "answer": "piano", "dataset": "x", "task": "music", "split": "test-mini",
         "category": "Instrument", "sub-category": None, "difficulty": "easy"}]))
    m = load_benchmark(mm)
    assert m.name == "mmau" and m.items[0].choices == ["piano", "guitar"] and m.items[0].answer == "piano"
    assert m.items[0].meta["difficulty"] == "easy"
    check_audio(m)


def test_generic_folder_and_errors(tmp_path):
    wav(tmp_path / "a.wav")
    wav(tmp_path / "sub" / "b.wav")
    rows = [{"file": "a.wav", "captions": ["a dog barks"], "labels": ["dog"], "synonyms": {"dog": ["puppy"]}},
            {"file": "sub/b.wav", "captions": ["rain"], "labels": ["rain"], "question": "Q?", "answer": "yes"}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    b = load_benchmark(tmp_path)
    assert b.name == "folder" and b.tasks_supported == ("caption", "classify", "tag")
    assert b.items[0].synonyms == {"dog": ["puppy"]} and b.items[1].file == tmp_path / "sub" / "b.wav"
    assert b.labels == ["dog", "rain"]

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BenchmarkLayoutError, match="no known benchmark layout"):
        load_benchmark(empty)
    for name, expected in [("esc50", "meta/esc50.csv"), ("urbansound8k", "UrbanSound8K.csv"),
                           ("fsd50k", "FSD50K.ground_truth/eval.csv"), ("vggsound", "vggsound.csv"),
                           ("musiccaps", "musiccaps-public.csv"), ("clothoaqa", "clotho_aqa_test.csv"),
                           ("mmau", "mmau-test-mini.json"), ("folder", "metadata.jsonl")]:
        with pytest.raises(BenchmarkLayoutError, match=expected):
            load_benchmark(empty, name)
    with pytest.raises(ValueError, match="unknown benchmark"):
        load_benchmark(tmp_path, "imagenet")
