"""mats.audio.stream_audio: the samples load_audio gives, in blocks, in memory that does not grow with the
length; a truncated file ends the stream where its good data ends and says so."""

import numpy as np
import pytest
import soundfile as sf

import mats.audio as audio
from mats.audio import AudioError, load_audio, stream_audio


def _noise(seconds: float, sr: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((int(seconds * sr) + 123, channels)) * 0.2).astype(np.float32)


def _streamed(path, sr: int = 16000, **kw) -> np.ndarray:
    return np.concatenate(list(stream_audio(path, sr, **kw)))


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_a_short_file_streams_the_very_samples_load_audio_gives(tmp_path, rate):
    path = tmp_path / f"clip-{rate}.wav"
    sf.write(str(path), _noise(7, rate), rate)
    assert _streamed(path).tobytes() == load_audio(path, 16000).tobytes()


@pytest.mark.parametrize("rate", [16000, 44100, 48000, 8000])
def test_a_long_file_resampled_block_by_block_equals_the_whole_file(tmp_path, monkeypatch, rate):
    """The block path (what files longer than STREAM_WHOLE_SECONDS take), forced on a short file: the
    filter context carried across blocks makes it the whole-file resampling, sample for sample."""
    path = tmp_path / f"long-{rate}.flac"
    sf.write(str(path), _noise(9, rate, seed=1), rate)
    whole = load_audio(path, 16000)
    monkeypatch.setattr(audio, "STREAM_WHOLE_SECONDS", 1.0)
    blocks = list(stream_audio(path, 16000, block_frames=4999))
    assert len(blocks) > 10
    got = np.concatenate(blocks)
    assert got.shape == whole.shape
    np.testing.assert_allclose(got, whole, rtol=0, atol=1e-6)


def test_streaming_memory_does_not_grow_with_the_length(tmp_path):
    """A 6-minute 48 kHz stereo file (longer than STREAM_WHOLE_SECONDS), read block by block: the peak
    allocation is a few blocks, not the file."""
    import tracemalloc
    rate, seconds = 48000, 360  # longer than STREAM_WHOLE_SECONDS, so the block path runs as in use
    path = tmp_path / "six-minutes.wav"
    rng = np.random.default_rng(2)
    with sf.SoundFile(str(path), "w", rate, 2, "PCM_16") as f:
        for _ in range(seconds // 10):
            f.write((rng.standard_normal((rate * 10, 2)) * 0.1).astype(np.float32))
    tracemalloc.start()
    try:
        total = sum(block.size for block in stream_audio(path, 16000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == seconds * 16000
    whole = total * 4  # the decoded recording as float32 at 16 kHz: 23 MB
    assert peak < whole / 10, f"peak {peak / 1e6:.1f} MB streaming a recording of {whole / 1e6:.1f} MB"


@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
def test_a_truncated_file_streams_up_to_the_damage_and_says_where(tmp_path, fmt):
    x = (0.5 * np.sin(np.arange(16000 * 20) / 7)).astype(np.float32)
    path = tmp_path / f"cut.{fmt.lower()}"
    sf.write(str(path), x, 16000, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match="truncated|decoding failed"):
        load_audio(path, 16000)  # a whole-file answer is still refused
    stream = stream_audio(path, 16000)
    got = np.concatenate(list(stream))
    assert 2.0 < stream.stopped_at == got.size / 16000 < 10.5
    assert "truncated" in stream.damage or "decoding failed" in stream.damage
    np.testing.assert_allclose(got, x[:got.size], rtol=0, atol=2 / 32768)  # the recording, 16-bit PCM


def test_nothing_before_the_damage_is_refused(tmp_path):
    x = (0.5 * np.sin(np.arange(16000 * 5) / 7)).astype(np.float32)
    path = tmp_path / "gone.flac"
    sf.write(str(path), x, 16000, format="FLAC")
    data = path.read_bytes()
    path.write_bytes(data[:200])
    with pytest.raises(AudioError, match="gone.flac: "):
        _streamed(path)


def test_the_longest_stream_is_a_duration_checked_from_the_header(tmp_path, monkeypatch):
    path = tmp_path / "ten-seconds.wav"
    sf.write(str(path), np.zeros(160000, np.float32), 16000)
    with pytest.raises(AudioError, match=r"10\.0 s long, more than the limit of 5 s .*MATS_MAX_STREAM_SECONDS"):
        stream_audio(path, 16000, max_seconds=5)
    monkeypatch.setenv("MATS_MAX_STREAM_SECONDS", "9")
    with pytest.raises(AudioError, match="limit of 9 s"):
        stream_audio(path, 16000)
    monkeypatch.setenv("MATS_MAX_STREAM_SECONDS", "a while")
    with pytest.raises(AudioError, match="MATS_MAX_STREAM_SECONDS='a while' is not a number"):
        stream_audio(path, 16000)
    monkeypatch.delenv("MATS_MAX_STREAM_SECONDS")
    assert audio.max_stream_seconds() == audio.MAX_STREAM_SECONDS >= 2 * 3600
    assert _streamed(path).size == 160000
