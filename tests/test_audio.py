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


# -- decoded-size budget -----------------------------------------------------------------------------
def _flac_claiming(path, seconds, rate=384000, channels=1):
    """A real, small FLAC whose STREAMINFO claims ``seconds`` of audio (what a 0.84 MB FLAC of 10 min
    of silence at 384 kHz looks like to the header reader)."""
    sf.write(str(path), np.zeros((rate // 10, channels), np.int16), rate, format="FLAC")
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC"
    si = 8  # STREAMINFO body: 10 bytes of block/frame sizes, then rate(20) ch-1(3) bps-1(5) total(36)
    bits = int.from_bytes(data[si + 10:si + 18], "big")
    bits = (bits & ~((1 << 36) - 1)) | int(seconds * rate)
    data[si + 10:si + 18] = bits.to_bytes(8, "big")
    path.write_bytes(bytes(data))
    return path


def test_probe_audio_reads_the_header(tmp_path):
    from mats.audio import AudioInfo, probe_audio
    p = _wav(tmp_path / "st.wav", np.zeros((22050, 2), np.int16), 44100)
    info = probe_audio(p)
    assert info == AudioInfo(frames=22050, channels=2, samplerate=44100, format="WAV/PCM_16", duration=0.5)
    assert probe_audio(p.read_bytes()).frames == 22050
    with pytest.raises(AudioError, match="nope.wav: no such file"):
        probe_audio(tmp_path / "nope.wav")


def test_budget_refuses_before_decoding(tmp_path, monkeypatch):
    import time

    from mats.audio import MAX_DECODED_SAMPLES, probe_audio
    p = _flac_claiming(tmp_path / "ten-minutes-384k.flac", 600)
    assert probe_audio(p).frames == 600 * 384000 > MAX_DECODED_SAMPLES
    t = time.perf_counter()
    with pytest.raises(AudioError, match=r"ten-minutes-384k.flac: too large to decode: 230400000 frames x 1 "
                                         r"channels at 384000 Hz .* budget of 57,600,000; .*MATS_MAX_DECODED_SAMPLES"):
        load_audio(p, 16000)
    assert time.perf_counter() - t < 1.0  # the header decides; nothing was decoded
    p_hour = _flac_claiming(tmp_path / "hour.flac", 3599)  # under max_seconds, far over the budget
    with pytest.raises(AudioError, match="too large to decode"):
        load_audio(p_hour, 16000)
    # the argument and the environment variable move the budget
    q = _wav(tmp_path / "st.wav", np.zeros((16000, 2), np.int16), 16000)
    with pytest.raises(AudioError, match="32,000 samples, more than the budget of 31,999"):
        load_audio(q, 16000, max_decoded_samples=31_999)
    assert load_audio(q, 16000, max_decoded_samples=32_000).shape == (16000,)
    monkeypatch.setenv("MATS_MAX_DECODED_SAMPLES", "31999")
    with pytest.raises(AudioError, match="budget of 31,999"):
        load_audio(q, 16000)
    monkeypatch.setenv("MATS_MAX_DECODED_SAMPLES", "lots")
    with pytest.raises(AudioError, match="MATS_MAX_DECODED_SAMPLES='lots' is not a number"):
        load_audio(q, 16000)


def test_budget_counts_the_resampled_length(tmp_path):
    # 1 kHz to 48 kHz: 1,000 decoded samples become 48,000
    p = _wav(tmp_path / "low.wav", np.zeros(1000, np.int16), 1000)
    with pytest.raises(AudioError, match="48,000 samples, more than the budget of 10,000"):
        load_audio(p, 48000, max_decoded_samples=10_000)


def test_block_decoding_equals_whole_file_decoding(tmp_path):
    """Several blocks, six channels, resampled: the same bytes as decoding the whole file at once."""
    from mats.audio import BLOCK_FRAMES, resample
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((BLOCK_FRAMES * 3 + 123, 6)) * 0.3).astype(np.float32)
    p = _wav(tmp_path / "six.wav", x, 48000, subtype="FLOAT")
    whole, _ = sf.read(str(p), dtype="float32", always_2d=True)
    expected = resample(whole.mean(axis=1), 48000, 16000)
    got = load_audio(p, 16000)
    assert got.tobytes() == expected.tobytes()


def test_block_decoding_never_holds_the_multichannel_file(tmp_path):
    import tracemalloc
    rng = np.random.default_rng(0)
    frames, channels = 48000 * 20, 8
    p = _wav(tmp_path / "eight.wav", (rng.standard_normal((frames, channels)) * 0.1).astype(np.float32),
             48000, subtype="FLOAT")
    tracemalloc.start()
    try:
        load_audio(p, 48000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    whole = frames * channels * 4
    # mono float32 at the source rate plus one block; the whole 8-channel file would be 30.7 MB
    assert peak < whole / 3, f"peak {peak / 1e6:.1f} MB for a {whole / 1e6:.1f} MB multi-channel file"


# -- amplitude rule ----------------------------------------------------------------------------------
def _float_wav(path, x, sr=16000):
    return _wav(path, np.asarray(x, np.float32), sr, subtype="FLOAT")


def test_huge_float_samples_refused_without_warnings(tmp_path):
    import warnings
    x = np.full((16000, 2), 3e38, np.float32)
    x[::2] *= -1
    p = _float_wav(tmp_path / "huge.wav", x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow / invalid-value warnings on the way
        with pytest.raises(AudioError, match=r"huge.wav: 16000 of 16000 samples are NaN, infinite or beyond \+-8"):
            load_audio(p, 16000)
        with pytest.raises(AudioError, match="beyond"):
            load_audio(_float_wav(tmp_path / "e30.wav", np.full(8000, 1e30)), 16000)
        with pytest.raises(AudioError, match="beyond"):
            load_audio((np.full(8000, -3e38, np.float32), 16000), 16000)


def test_a_few_wild_samples_are_zeroed_like_nans(tmp_path):
    x = (0.5 * np.sin(np.arange(16000) / 10)).astype(np.float32)
    x[[10, 500, 9000]] = [1e30, -3e38, np.inf]
    y = load_audio(_float_wav(tmp_path / "few.wav", x), 16000)
    assert np.isfinite(y).all() and y[10] == y[500] == y[9000] == 0.0
    assert np.abs(y).max() <= 0.5


def test_headroom_within_the_bound_is_kept(tmp_path):
    x = np.linspace(-1.5, 1.5, 16000).astype(np.float32)  # +3.5 dB over full scale: loud, not damage
    y = load_audio(_float_wav(tmp_path / "loud.wav", x), 16000)
    assert y.tobytes() == x.tobytes()
    x[:200] = 9.0  # beyond +-8 in more than 1 % of the samples
    with pytest.raises(AudioError, match="200 of 16000 samples"):
        load_audio(_float_wav(tmp_path / "wild.wav", x), 16000)


def test_integer_pcm_is_bounded_by_construction(tmp_path):
    y = load_audio(_wav(tmp_path / "full.wav", np.full(1000, -32768, np.int16), 16000), 16000)
    assert y.min() == -1.0 and y.max() == -1.0


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("AIFF", "PCM_16"),
                                         ("FLAC", "PCM_16"), ("MP3", "MPEG_LAYER_III")])
def test_data_cut_to_a_third_is_refused(tmp_path, fmt, subtype):
    x = (0.5 * np.sin(np.arange(48000) / 7)).astype(np.float32)
    p = tmp_path / f"cut.{fmt.lower()}"
    sf.write(str(p), x, 16000, format=fmt, subtype=subtype)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(AudioError, match=r"cut\.\w+: (truncated|decoding failed)"):
        load_audio(p, 16000)


def test_streamed_wav_with_placeholder_size_is_accepted(tmp_path):
    """Writers that stream WAV (ffmpeg to a pipe) put 0xFFFFFFFF in the size fields; not truncation."""
    x = np.arange(-500, 500, dtype=np.int16)
    p = _wav(tmp_path / "stream.wav", x, 16000)
    data = bytearray(p.read_bytes())
    data[4:8] = (0xFFFFFFFF).to_bytes(4, "little")
    i = data.index(b"data")
    data[i + 4:i + 8] = (0xFFFFFFFF).to_bytes(4, "little")
    p.write_bytes(bytes(data))
    assert load_audio(p, 16000).shape == (1000,)


def test_bytes_and_file_objects(tmp_path):
    import io
    x = np.arange(-800, 800, dtype=np.int16)
    p = _wav(tmp_path / "b.wav", x, 16000)
    from_path = load_audio(p, 16000)
    assert load_audio(p.read_bytes(), 16000).tobytes() == from_path.tobytes()
    with open(p, "rb") as f:
        assert load_audio(f, 16000).tobytes() == from_path.tobytes()
    assert load_audio(io.BytesIO(p.read_bytes()), 16000).tobytes() == from_path.tobytes()
    with pytest.raises(AudioError, match="<bytes>: not a readable audio file"):
        load_audio(b"RIFF\x00\x00", 16000)


# -- paths that cannot be used -------------------------------------------------------------------------
def test_file_name_too_long(tmp_path):
    name = "x" * 300 + ".wav"
    with pytest.raises(AudioError, match=r"file name too long \(304 bytes in one component; file systems allow 255\)"):
        load_audio(tmp_path / name, 16000)
    assert expand_paths([tmp_path / name]) == [tmp_path / name]


def test_symlink_loop_and_broken_link(tmp_path):
    (tmp_path / "loop.wav").symlink_to(tmp_path / "loop.wav")
    (tmp_path / "gone.wav").symlink_to(tmp_path / "missing-target.wav")
    with pytest.raises(AudioError, match="loop.wav: symbolic link loop"):
        load_audio(tmp_path / "loop.wav", 16000)
    with pytest.raises(AudioError, match="gone.wav: broken symbolic link .*missing-target.wav"):
        load_audio(tmp_path / "gone.wav", 16000)
    _wav(tmp_path / "ok.wav", np.zeros(100, np.int16), 16000)
    # inside a folder they are listed (and then reported), not skipped silently
    assert [p.name for p in expand_paths([tmp_path])] == ["gone.wav", "loop.wav", "ok.wav"]


def test_folder_given_as_a_file_and_special_files(tmp_path):
    import os
    (tmp_path / "d.wav").mkdir()
    with pytest.raises(AudioError, match="d.wav: is a directory"):
        load_audio(tmp_path / "d.wav", 16000)
    os.mkfifo(tmp_path / "pipe.wav")
    with pytest.raises(AudioError, match="pipe.wav: not a regular file"):
        load_audio(tmp_path / "pipe.wav", 16000)


PERMISSION_SCRIPT = r"""
import sys
from mats.audio import AudioError, expand_paths, load_audio
for arg in sys.argv[1:]:
    files = expand_paths([arg])
    for f in files:
        try:
            load_audio(f, 16000)
            print(f"OK {f}")
        except AudioError as e:
            print(f"ERR {e}")
"""


def test_permission_errors_are_reported_per_file(tmp_path):
    """Mode-000 files and folders without search permission; the good file beside them still loads."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from unprivileged import drop_file_capabilities, permissions_apply
    if not permissions_apply():
        pytest.skip("cannot start a process that file permissions apply to")
    root = tmp_path
    _wav(root / "good.wav", np.zeros(100, np.int16), 16000)
    _wav(root / "locked.wav", np.zeros(100, np.int16), 16000)
    os.chmod(root / "locked.wav", 0)
    (root / "shut").mkdir()
    _wav(root / "shut" / "inside.wav", np.zeros(100, np.int16), 16000)
    os.chmod(root / "shut", 0)
    try:
        src = str(Path(__file__).resolve().parents[1] / "src")
        p = subprocess.run([sys.executable, "-c", PERMISSION_SCRIPT, str(root / "locked.wav"),
                            str(root / "shut" / "inside.wav"), str(root)],
                           capture_output=True, text=True, timeout=120, preexec_fn=drop_file_capabilities,
                           env={**os.environ, "PYTHONPATH": src})
    finally:
        os.chmod(root / "shut", 0o755)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
    lines = p.stdout.splitlines()
    denied = "permission denied (the file is not readable, or a folder on its path is not searchable)"
    assert lines[0] == f"ERR {root}/locked.wav: {denied}"
    assert lines[1] == f"ERR {root}/shut/inside.wav: {denied}"
    # the folder: the good file is still loaded, the locked one and the unlistable folder are named
    assert lines[2:] == [f"OK {root}/good.wav", f"ERR {root}/locked.wav: {denied}",
                         f"ERR {root}/shut: is a folder that cannot be listed (permission denied)"], lines


@pytest.mark.parametrize("xing", [True, False])
def test_mp3_decodes_as_one_whole_file_read(tmp_path, xing):
    """MP3 past one block, with and without the Xing frame that states its length: the same bytes as
    a whole-file read, and a bitrate-estimated length (often too long) is not taken for truncation."""
    from mats.audio import BLOCK_FRAMES, resample
    rng = np.random.default_rng(1)
    p = tmp_path / "long.mp3"
    sf.write(str(p), (rng.standard_normal(BLOCK_FRAMES * 2 + 999) * 0.2).astype(np.float32), 22050, format="MP3")
    if not xing:
        p.write_bytes(p.read_bytes().replace(b"Xing", b"XXXX").replace(b"Info", b"IIII"))
    whole, _ = sf.read(str(p), dtype="float32", always_2d=True)
    expected = resample(whole.mean(axis=1), 22050, 16000)
    assert load_audio(p, 16000).tobytes() == expected.tobytes()


@pytest.mark.parametrize("sr_in,sr_out,n", [(44100, 16000, 441000), (48000, 16000, 48001), (8000, 16000, 8000),
                                            (22050, 16000, 3), (16000, 44100, 999), (11025, 16000, 1)])
def test_resampler_is_scipys_resample_poly(sr_in, sr_out, n):
    """The numpy polyphase resampler computes what scipy.signal.resample_poly did before it (whose import
    alone cost a fresh `mats tag` half a second): same length, same samples up to float64 rounding, and
    the same float32 samples the CLAP then hears."""
    import math

    from scipy.signal import resample_poly as scipy_resample_poly

    from mats.audio import resample, resample_poly

    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    g = math.gcd(sr_in, sr_out)
    theirs = scipy_resample_poly(x.astype(np.float64), sr_out // g, sr_in // g)
    ours = resample_poly(x, sr_out // g, sr_in // g)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= 1e-12 * max(1.0, np.abs(theirs).max())
    np.testing.assert_array_equal(resample(x, sr_in, sr_out), theirs.astype(np.float32))
    for up, down in ((0, 1), (2, -1), (4, 2), (1.5, 1)):
        with pytest.raises(ValueError, match="coprime positive integer factors"):
            resample_poly(x, up, down)
