"""Audio front end: every refusal on real (tiny) files, plus resampling and windowing behaviour."""

import numpy as np
import pytest
import soundfile as sf

from mats.audio import AudioError, expand_paths, load_audio, split_windows


def _wav(path, x, sr, subtype=None):
    sf.write(str(path), x, sr, subtype=subtype)
    return path


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "nope.wav", 16000)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(p, 16000)


def test_corrupt_bytes(tmp_path):
    p = tmp_path / "bad.wav"
    p.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioError, match="bad.wav.*not a readable audio file"):
        load_audio(p, 16000)


def test_zero_length_wav(tmp_path):
    p = _wav(tmp_path / "zero.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="zero-length"):
        load_audio(p, 16000)


def test_nan_wav_refused_and_few_nans_zeroed(tmp_path):
    p = _wav(tmp_path / "nan.wav", np.full(1600, np.nan, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(p, 16000)
    x = np.sin(np.arange(16000) / 10).astype(np.float32)
    x[100] = np.nan
    y = load_audio(_wav(tmp_path / "fewnan.wav", x, 16000, subtype="FLOAT"), 16000)
    assert np.isfinite(y).all() and y[100] == 0.0


@pytest.mark.parametrize("rate", [7, 1_000_000])
def test_absurd_rates(tmp_path, rate):
    p = _wav(tmp_path / f"r{rate}.wav", np.zeros(2000, np.float32), rate)
    with pytest.raises(AudioError, match="sample rate"):
        load_audio(p, 16000)
    with pytest.raises(AudioError, match="sample rate"):
        load_audio((np.zeros(2000, np.float32), rate), 16000)


def test_too_long_checked_from_header(tmp_path):
    p = _wav(tmp_path / "long.wav", np.zeros(8000 * 5, np.int16), 8000)
    with pytest.raises(AudioError, match="more than the limit"):
        load_audio(p, 16000, max_seconds=4.0)
    assert load_audio(p, 16000, max_seconds=6.0).shape == (80000,)


def test_silent_is_valid(tmp_path):
    y = load_audio(_wav(tmp_path / "silent.wav", np.zeros(16000, np.int16), 16000), 16000)
    assert y.dtype == np.float32 and y.shape == (16000,) and not y.any()


def test_stereo_mixes_to_mono(tmp_path):
    left = np.full(4000, 0.5, np.float32)
    x = np.stack([left, -left * 0.5], 1)
    y = load_audio(_wav(tmp_path / "st.wav", x, 16000, subtype="FLOAT"), 16000)
    assert y.shape == (4000,) and np.allclose(y, 0.125)


def test_resample_keeps_frequency_and_amplitude(tmp_path):
    sr = 44100
    t = np.arange(sr * 2) / sr
    x = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    y = load_audio(_wav(tmp_path / "sine.wav", x, sr, subtype="FLOAT"), 16000)
    assert y.shape == (32000,)
    mid = y[4000:-4000]  # away from the filter's edge transients
    spec = np.abs(np.fft.rfft(mid * np.hanning(len(mid))))
    freq = np.fft.rfftfreq(len(mid), 1 / 16000)[spec.argmax()]
    assert abs(freq - 1000) < 2
    assert abs(np.sqrt(np.mean(mid ** 2)) - 0.5 / np.sqrt(2)) < 0.005


def test_aliasing_removed():
    sr = 48000
    t = np.arange(sr) / sr
    x = np.sin(2 * np.pi * 12000 * t).astype(np.float32)  # above the 8 kHz Nyquist of 16 kHz
    y = load_audio((x, sr), 16000)
    assert np.sqrt(np.mean(y[2000:-2000] ** 2)) < 0.01


def test_windows_deterministic_and_cover_tail():
    x = np.arange(25 * 100, dtype=np.float32)  # 25 s at 100 Hz
    w1, s1, e1 = split_windows(x, 100, 10.0)
    w2, s2, e2 = split_windows(x, 100, 10.0)
    assert np.array_equal(w1, w2) and s1 == s2 == [0.0, 10.0, 15.0] and e1 == [10.0, 20.0, 25.0]
    assert w1[-1][-1] == x[-1]
    w, s, e = split_windows(x, 100, 10.0, hop_seconds=5.0)
    assert s == [0.0, 5.0, 10.0, 15.0]


def test_short_clip_repeat_padded():
    x = np.array([1, 2, 3], np.float32)
    w, s, e = split_windows(x, 1000, 0.008)
    assert w.shape == (1, 8) and w[0].tolist() == [1, 2, 3, 1, 2, 3, 1, 2]
    assert s == [0.0] and e == [0.003]


def test_expand_paths(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ["a/z.WAV", "a/b/y.flac", "a/notes.txt", "x.ogg"]:
        (tmp_path / name).write_bytes(b"")
    got = expand_paths([tmp_path / "a", tmp_path / "missing.mp3"])
    assert got == [tmp_path / "a/b/y.flac", tmp_path / "a/z.WAV", tmp_path / "missing.mp3"]
