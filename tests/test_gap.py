"""Modality-gap diagnostic: exact numbers on constructed embeddings, the noise formula through real
noise, the plot, the shift file, metadata reading, and the CLI (plumbing with a stand-in CLAP; the real
default CLAP on real sounds when both are available)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from conftest import require
from mats.bridge.shift import load_shift
from mats.evaluation.gap import (
    PAPER_DIM,
    PAPER_NOISE_VARIANCE,
    PAPER_TARGET_COSINE,
    expected_noisy_cosine,
    measure_gap,
    plot_gap,
    read_paired_metadata,
    read_texts,
    save_shift,
    suggest_noise_variance,
)


def _constructed(theta=math.pi / 3, n=10, d=8):
    """text_i = cos e0 + sin s_i e2, audio_i = cos e1 + sin s_i e2 with signs s_i = +-1 (half each)."""
    c, s = math.cos(theta), math.sin(theta)
    signs = np.array([1.0, -1.0] * (n // 2))
    t = np.zeros((n, d))
    a = np.zeros((n, d))
    t[:, 0] = c
    a[:, 1] = c
    t[:, 2] = a[:, 2] = s * signs
    return a, t, c, s, d


def test_known_offset_numbers():
    a, t, c, s, d = _constructed()
    r = measure_gap(a, t, paired=True)
    assert r.n_audio == r.n_text == 10 and r.dim == d and r.paired
    # centroids: c e1 (audio) and c e0 (text)
    assert r.offset_norm == pytest.approx(c * math.sqrt(2))
    np.testing.assert_allclose(r.shift, c * (np.eye(d)[0] - np.eye(d)[1]), atol=1e-7)
    assert r.audio_centroid_norm == pytest.approx(c) and r.text_centroid_norm == pytest.approx(c)
    assert r.centroid_cosine == pytest.approx(0.0, abs=1e-12)
    # spread: only e2 varies (std s) in each cloud; the paired difference is constant
    assert r.audio_std_mean == pytest.approx(s / d) and r.text_std_mean == pytest.approx(s / d)
    np.testing.assert_allclose(r.text_std, s * np.eye(d)[2], atol=1e-7)
    assert r.paired_diff_std_mean == pytest.approx(0.0, abs=1e-12)
    assert r.residual_variance_per_dim == pytest.approx(0.0, abs=1e-12)
    # cosines
    assert r.paired_cosine_mean == pytest.approx(s * s)
    assert r.paired_cosine_median == pytest.approx(s * s)
    assert r.paired_cosine_std == pytest.approx(0.0, abs=1e-12)
    assert r.nearest_text_cosine_mean == pytest.approx(s * s)
    assert r.paired_top1 == 1.0
    assert r.paired_cosine_after_shift_mean == pytest.approx(1.0)  # the shift maps audio onto text
    assert r.nearest_text_cosine_after_shift_mean == pytest.approx(1.0)
    # two distinct rows per modality: cosine c^2 - s^2 between them
    assert r.text_text_cosine_mean == pytest.approx(c * c - s * s)
    assert r.audio_audio_cosine_mean == pytest.approx(c * c - s * s)
    # noise suggestion from the paired cosine s^2
    assert r.target_source == "paired" and r.target_cosine == pytest.approx(s * s)
    assert r.suggested_noise_variance == pytest.approx((1 / s ** 4 - 1) / d)
    assert r.suggested_noise_std == pytest.approx(math.sqrt(r.suggested_noise_variance))
    json.dumps(r.to_dict())  # serialisable, no vectors
    assert "shift" not in r.to_dict()
    text = r.summary()
    assert "suggested noise variance" in text and f"{r.suggested_noise_variance:.5f}" in text


def test_unpaired_uses_nearest_text_and_scale_invariance():
    a, t, c, s, d = _constructed()
    r = measure_gap(3.0 * a, t[:2], paired=False)  # rows are normalised inside
    assert not r.paired and r.paired_cosine_mean is None and r.paired_top1 is None
    assert r.target_source == "nearest" and r.target_cosine == pytest.approx(s * s)
    assert r.offset_norm == pytest.approx(c * math.sqrt(2))
    with pytest.raises(ValueError):
        measure_gap(a, t[:3], paired=True)
    with pytest.raises(ValueError):
        measure_gap(a[:, :4], t, paired=False)
    # anti-aligned clouds: no valid target cosine -> no suggestion, but still a report
    r = measure_gap(-t, t, paired=True)
    assert r.suggested_noise_variance is None and "n/a" in r.summary()


def test_paper_setting_and_formula():
    # 0.015 at D=1024 corresponds to an audio-text cosine of ~0.247
    assert PAPER_TARGET_COSINE == pytest.approx(1 / math.sqrt(1 + 1024 * 0.015))
    assert PAPER_TARGET_COSINE == pytest.approx(0.2472, abs=1e-4)
    assert suggest_noise_variance(PAPER_TARGET_COSINE, PAPER_DIM) == pytest.approx(PAPER_NOISE_VARIANCE)
    assert expected_noisy_cosine(suggest_noise_variance(0.4, 384), 384) == pytest.approx(0.4)
    for bad in (0.0, 1.0, -0.2, 1.3):
        with pytest.raises(ValueError):
            suggest_noise_variance(bad, 384)


@pytest.mark.parametrize("dim,target", [(1024, PAPER_TARGET_COSINE), (512, 0.3), (384, 0.5), (128, 0.7)])
def test_variance_round_trips_through_real_noise(dim, target):
    rng = np.random.default_rng(dim)
    t = rng.normal(size=(3000, dim))
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    var = suggest_noise_variance(target, dim)
    noisy = t + rng.normal(scale=math.sqrt(var), size=t.shape)  # what training does ...
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)  # ... then re-normalises
    cos = np.einsum("nd,nd->n", t, noisy)
    assert cos.mean() == pytest.approx(target, abs=0.01)
    # and measuring the gap between noisy "audio" and its texts gives the variance back
    r = measure_gap(noisy, t, paired=True)
    assert r.suggested_noise_variance == pytest.approx(var, rel=0.08)


def test_plot_and_shift_files(tmp_path):
    rng = np.random.default_rng(0)
    t = rng.normal(size=(60, 32))
    a = t + rng.normal(scale=0.5, size=t.shape) + 2.0 * np.eye(32)[3]
    png = plot_gap(a, t, tmp_path / "sub" / "gap.png", paired=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    plot_gap(a[:10], t, tmp_path / "unpaired.png")  # different sizes, no lines
    assert (tmp_path / "unpaired.png").is_file()

    r = measure_gap(a, t, paired=True)
    path = save_shift(r, tmp_path / "out", clap_fingerprint="fake/1")
    assert path.name == "shift.safetensors" and (tmp_path / "out" / "shift.npy").is_file()
    for p in (path, tmp_path / "out" / "shift.npy", tmp_path / "out"):
        v = load_shift(p)
        assert v.dtype == np.float32 and v.shape == (32,)
        np.testing.assert_allclose(v, r.shift, atol=1e-7)
    from safetensors import safe_open
    with safe_open(str(path), "np") as f:
        meta = f.metadata()
        assert set(f.keys()) == {"shift", "audio_mean", "text_mean", "audio_std", "text_std", "diff_std"}
    assert meta["clap"] == "fake/1" and float(meta["suggested_noise_variance"]) == pytest.approx(
        r.suggested_noise_variance, rel=1e-4)


def test_metadata_and_text_inputs(tmp_path):
    rows = [{"file": "clips/a.wav", "labels": ["dog"]},
            {"file": "clips/b.wav", "labels": ["car", "horn"]},
            {"file": "clips/c.wav", "captions": ["rain on a roof", "heavy rain"]}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pairs = read_paired_metadata(tmp_path, template="a recording of {label}")
    assert [p for p, _ in pairs] == [tmp_path / "clips/a.wav", tmp_path / "clips/b.wav", tmp_path / "clips/c.wav"]
    assert [t for _, t in pairs] == [["a recording of dog"], ["a recording of car, horn"],
                                     ["rain on a roof", "heavy rain"]]
    (tmp_path / "bad.jsonl").write_text('{"file": "x.wav"}\n')
    with pytest.raises(ValueError, match="neither captions nor labels"):
        read_paired_metadata(tmp_path / "bad.jsonl")

    (tmp_path / "t.txt").write_text("a dog barks\n\n a bell rings \n")
    assert read_texts([str(tmp_path / "t.txt"), "wind noise", str(tmp_path / "metadata.jsonl")]) == [
        "a dog barks", "a bell rings", "wind noise", "the sound of dog", "the sound of car, horn",
        "rain on a roof", "heavy rain"]


class _StandInCLAP:
    """Text: a fixed random projection of character counts; audio: the text embedding of the file's
    stem plus a constant offset and noise. Enough to exercise the CLI end to end without models."""

    name = "stand-in"
    dim = 64

    def __init__(self):
        rng = np.random.default_rng(0)
        self.proj = rng.normal(size=(128, self.dim))
        offset = rng.normal(size=self.dim)
        self.offset = 0.1 * offset / np.linalg.norm(offset)
        self.rng = np.random.default_rng(1)

    def fingerprint(self):
        return "stand-in/1"

    def encode_text(self, texts, batch_size=64):
        x = np.zeros((len(texts), 128))
        for i, t in enumerate(texts):
            for ch in t.lower():
                x[i, ord(ch) % 128] += 1
        e = x @ self.proj
        return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)

    def encode_audio(self, paths, batch_size=16):
        from pathlib import Path
        e = self.encode_text([f"the sound of {Path(p).stem}" for p in paths])
        e = e + self.offset + self.rng.normal(scale=0.002, size=e.shape)
        return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)


def test_cli_with_stand_in_clap(tmp_path, monkeypatch, capsys):
    import mats.clap
    from mats.cli import main

    monkeypatch.setattr(mats.clap, "load_clap", lambda spec, device=None: _StandInCLAP())
    monkeypatch.setenv("MATS_HOME", str(tmp_path / "home"))
    data = tmp_path / "data"
    (data / "clips").mkdir(parents=True)
    names = ["dog", "bell", "rain", "siren", "thunder", "violin"]
    for n in names:
        (data / "clips" / f"{n}.wav").write_bytes(b"")
    with open(data / "metadata.jsonl", "w") as f:
        for n in names:
            f.write(json.dumps({"file": f"clips/{n}.wav", "labels": [n]}) + "\n")

    # paired: a folder with metadata.jsonl
    out = tmp_path / "paired"
    assert main(["gap", "--audio", str(data), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "suggested training noise variance" in printed and "(paired)" in printed
    doc = json.loads((out / "gap.json").read_text())
    assert doc["paired"] and doc["n_audio"] == 6 and doc["clap"] == "stand-in/1"
    assert doc["paired_top1"] == 1.0
    assert 0 < doc["suggested_noise_variance"] < 1
    assert (out / "gap.png").is_file() and load_shift(out / "shift.safetensors").shape == (64,)
    # the cache was used for the texts (in MATS_HOME)
    assert list((tmp_path / "home" / "embeddings").glob("*/embeddings.npy"))

    # unpaired: folder + literal texts and a text file
    (tmp_path / "texts.txt").write_text("the sound of dog\nthe sound of rain\n")
    out2 = tmp_path / "unpaired"
    assert main(["gap", "--audio", str(data / "clips"), "--texts", str(tmp_path / "texts.txt"),
                 "the sound of bell", "--out", str(out2), "--no-plot", "--no-cache"]) == 0
    doc2 = json.loads((out2 / "gap.json").read_text())
    assert not doc2["paired"] and doc2["n_text"] == 3 and doc2["target_source"] == "nearest"
    assert not (out2 / "gap.png").exists()

    # user errors: one line, exit code 2
    assert main(["gap", "--audio", str(data / "clips")]) == 2
    assert main(["gap", "--audio", str(tmp_path / "missing.wav"), "--texts", "x"]) == 2


def _real_sounds():
    from mats.store import is_cached, mats_home
    try:
        import mats.clap.default  # noqa: F401
    except ImportError:
        return None
    if not (is_cached("yamnet") and is_cached("all-minilm-l6-v2")):
        return None
    folder = mats_home() / "sounds"
    return folder if (folder / "metadata.jsonl").is_file() else None


@pytest.mark.slow
def test_cli_real_default_clap_on_real_sounds(tmp_path, capsys, tiny_model):
    import shutil

    folder = _real_sounds()
    require(folder, "default CLAP models or the real-sound set (`mats.data.sounds.fetch_real_sounds`) not cached")
    from mats.cli import main
    from mats.pipeline import MATS

    model = tmp_path / "model"  # --model: the shift goes into a model folder, through MATS
    shutil.copytree(tiny_model, model)
    out = tmp_path / "gap"
    assert main(["gap", "--metadata", str(folder / "metadata.jsonl"), "--max-audio", "24",
                 "--out", str(out), "--no-cache", "--model", str(model)]) == 0
    m = MATS.from_pretrained(model)
    assert "shift" in m.bridges
    np.testing.assert_array_equal(m.shift, load_shift(out / "shift.safetensors"))
    doc = json.loads((out / "gap.json").read_text())
    assert doc["paired"] and doc["n_audio"] == 24 and doc["dim"] == 384
    assert 0.0 < doc["paired_cosine_mean"] < 1.0
    assert doc["suggested_noise_variance"] > 0
    assert doc["offset_norm"] > 0.01
    assert (out / "gap.png").stat().st_size > 5000
    assert "suggested training noise variance" in capsys.readouterr().out


def test_cli_skips_unreadable_audio_and_keeps_the_rest(tmp_path, capsys):
    """A zero-length clip among real ones is reported and left out (with its captions, in paired
    mode); the measurement uses the others."""
    folder = _real_sounds()
    require(folder, "default CLAP models or the real-sound set (`mats.data.sounds.fetch_real_sounds`) not cached")
    import shutil

    import soundfile as sf

    from mats.cli import main

    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()[:2]]
    data = tmp_path / "data"
    data.mkdir()
    for r in rows:
        shutil.copy(folder / r["file"], data / Path(r["file"]).name)
    sf.write(data / "empty.wav", np.zeros(0, np.float32), 16000)
    with open(data / "metadata.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps({"file": Path(r["file"]).name, "labels": r["labels"]}) + "\n")
        f.write(json.dumps({"file": "empty.wav", "labels": ["nothing"]}) + "\n")
    out = tmp_path / "gap"
    # a skipped file makes the exit code 1; --keep-going gives the old 0 (the measurement is the same)
    assert main(["gap", "--audio", str(data), "--out", str(tmp_path / "strict"), "--no-cache", "--no-plot"]) == 1
    capsys.readouterr()
    assert main(["gap", "--audio", str(data), "--out", str(out), "--no-cache", "--no-plot", "--keep-going"]) == 0
    err = capsys.readouterr().err
    assert "skipped" in err and "empty.wav" in err
    doc = json.loads((out / "gap.json").read_text())
    assert doc["paired"] and doc["n_audio"] == 2 and doc["n_text"] == 2
    assert doc["n_audio_skipped"] == 1 and doc["skipped"] == [str(data / "empty.wav")]
    assert json.loads((tmp_path / "strict" / "gap.json").read_text())["n_audio"] == 2
