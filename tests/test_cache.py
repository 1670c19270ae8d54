"""Text-embedding cache: reuse, invalidation, resume, memory map, data-parallel shards.

Runs against the real all-MiniLM-L6-v2 text encoder (wrapped in a tiny CLAP subclass that counts
calls); skipped when that model is not in the offline store (failed under CI: see conftest.require).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import require
from mats.clap.base import CLAP
from mats.data.cache import EmbeddingCache, cache_key

NOUNS = ["dog", "bell", "rain", "car engine", "violin", "crowd", "door", "thunder", "bird", "siren"]
ADJS = ["a loud", "a distant", "a soft", "a short"]
CORPUS = [f"{a} {n}" for n in NOUNS for a in ADJS]  # 40 distinct texts


@pytest.fixture(scope="module")
def minilm():
    from mats import store
    require(store.is_cached("all-minilm-l6-v2"), "all-MiniLM-L6-v2 not in the offline store (run `mats models fetch`)")
    from mats.clap.minilm import MiniLMTextEncoder
    return MiniLMTextEncoder()


class CountingCLAP(CLAP):
    """Text-only CLAP around the real MiniLM that records every encode_text call."""

    sample_rate = 16000
    clip_seconds = 1.0
    _lock = threading.Lock()  # the tokenizer must not be used from two threads at once

    def __init__(self, encoder, fingerprint="test-minilm/1", fail_on_call: int | None = None):
        self.name = "test-minilm"
        self.dim = encoder.dim
        self.encoder = encoder
        self._fp = fingerprint
        self.fail_on_call = fail_on_call
        self.calls = 0
        self.encoded: list[str] = []

    def embed_windows(self, windows):  # pragma: no cover - not used
        raise NotImplementedError

    def encode_text(self, texts, batch_size=64):
        with self._lock:
            self.calls += 1
            if self.fail_on_call is not None and self.calls == self.fail_on_call:
                raise KeyboardInterrupt("simulated interruption")
            self.encoded.extend(texts)
            return self.encoder.encode(texts, batch_size)

    def fingerprint(self):
        return self._fp


def test_reuse_does_not_encode_again(tmp_path, minilm):
    clap = CountingCLAP(minilm)
    cache = EmbeddingCache(tmp_path)
    a = cache.embed(CORPUS, clap, batch_size=16, shard_size=16, progress=False)
    assert clap.calls > 0 and sorted(clap.encoded) == sorted(CORPUS)
    calls = clap.calls
    b = cache.embed(CORPUS, clap, batch_size=16, shard_size=16, progress=False)
    assert clap.calls == calls  # served from disk
    np.testing.assert_array_equal(a, b)
    # values are the encoder's own
    np.testing.assert_allclose(a, minilm.encode(CORPUS), atol=1e-5)
    assert cache.is_cached(CORPUS, clap)
    # a fresh cache object on the same root (a new process) reuses it too
    fresh = CountingCLAP(minilm)
    EmbeddingCache(tmp_path).embed(CORPUS, fresh, progress=False)
    assert fresh.calls == 0


def test_memmap_dtype_shape_readonly_and_layout(tmp_path, minilm):
    clap = CountingCLAP(minilm)
    cache = EmbeddingCache(tmp_path)
    emb = cache.embed(CORPUS, clap, shard_size=16, progress=False)
    assert isinstance(emb, np.memmap)
    assert emb.dtype == np.float32 and emb.shape == (len(CORPUS), 384)
    assert not emb.flags.writeable
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    folder = cache.path(CORPUS, clap)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["complete"] and manifest["n"] == 40 and manifest["dim"] == 384
    assert manifest["shard_size"] == 16 and manifest["n_shards"] == 3
    assert manifest["clap"] == "test-minilm/1"
    assert not list(folder.glob("shard-*.npy"))  # merged, shards dropped
    assert not list(folder.glob(".*.tmp"))
    kept = EmbeddingCache(tmp_path / "keep")
    kept.embed(CORPUS, clap, shard_size=16, progress=False, keep_shards=True)
    assert sorted(p.name for p in kept.path(CORPUS, clap).glob("shard-*.npy")) == [
        "shard-00000.npy", "shard-00001.npy", "shard-00002.npy"]


def test_invalidation_on_changed_text_and_fingerprint_and_prune(tmp_path, minilm):
    cache = EmbeddingCache(tmp_path)
    clap = CountingCLAP(minilm)
    base = cache.embed(CORPUS, clap, progress=False)
    n0 = clap.calls

    changed = CORPUS[:-1] + ["a completely different sentence"]
    assert cache_key(changed, clap) != cache_key(CORPUS, clap)
    out = cache.embed(changed, clap, progress=False)
    assert clap.calls > n0
    np.testing.assert_allclose(out[:-1], base[:-1], atol=1e-5)
    np.testing.assert_allclose(out[-1], minilm.encode(["a completely different sentence"])[0], atol=1e-5)

    # order matters, and so does the way texts are split
    assert cache_key(CORPUS[::-1], clap) != cache_key(CORPUS, clap)
    assert cache_key(["ab", "c"], clap) != cache_key(["a", "bc"], clap)

    other = CountingCLAP(minilm, fingerprint="test-minilm/2")
    assert cache_key(CORPUS, other) != cache_key(CORPUS, clap)
    cache.embed(CORPUS, other, progress=False)
    assert other.calls > 0

    assert len(cache.entries()) == 3
    keep = cache.key(CORPUS, other)
    removed = cache.prune(keep=[keep])
    assert len(removed) == 2 and [e["key"] for e in cache.entries()] == [keep]


def test_dedupe_within_shard(tmp_path, minilm):
    texts = ["the sound of dog"] * 7 + ["the sound of bell"] * 5 + ["the sound of dog"] * 4
    clap = CountingCLAP(minilm)
    emb = EmbeddingCache(tmp_path).embed(texts, clap, shard_size=8, progress=False)
    # shard 0: dog x7 + bell -> 2 texts; shard 1: bell x4 + dog x4 -> 2 texts
    assert clap.encoded == ["the sound of dog", "the sound of bell"] * 1 + ["the sound of bell", "the sound of dog"]
    ref = minilm.encode(["the sound of dog", "the sound of bell"])
    np.testing.assert_allclose(emb, ref[[0] * 7 + [1] * 5 + [0] * 4], atol=1e-5)


def test_resume_after_interruption(tmp_path, minilm):
    # shard_size == batch_size: one encode call per shard; the 3rd call (shard 2) is interrupted.
    cache = EmbeddingCache(tmp_path / "c")
    crashing = CountingCLAP(minilm, fail_on_call=3)
    with pytest.raises(KeyboardInterrupt):
        cache.embed(CORPUS, crashing, batch_size=8, shard_size=8, progress=False)
    folder = cache.path(CORPUS, crashing)
    assert sorted(p.name for p in folder.glob("shard-*.npy")) == ["shard-00000.npy", "shard-00001.npy"]
    assert not json.loads((folder / "manifest.json").read_text())["complete"]
    assert not list(folder.glob(".*.tmp"))

    # the resumed run asks for a different shard size: the layout on disk wins
    resumed = CountingCLAP(minilm)
    out = cache.embed(CORPUS, resumed, batch_size=8, shard_size=1000, progress=False)
    assert resumed.encoded == CORPUS[16:]  # only shards 2, 3, 4
    clean = EmbeddingCache(tmp_path / "clean").embed(CORPUS, CountingCLAP(minilm), progress=False)
    np.testing.assert_allclose(out, clean, atol=1e-5)


def test_two_ranks_match_one(tmp_path, minilm):
    single = EmbeddingCache(tmp_path / "one").embed(CORPUS, CountingCLAP(minilm), shard_size=6, progress=False)

    cache = EmbeddingCache(tmp_path / "two")
    claps = [CountingCLAP(minilm), CountingCLAP(minilm)]
    results, errors = [None, None], []

    def run(r):
        try:
            results[r] = np.array(cache.embed(CORPUS, claps[r], shard_size=6, progress=False, rank=r,
                                              world_size=2, timeout=120, poll_interval=0.02))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors, errors
    # 7 shards of 6: rank 0 does 0, 2, 4, 6 and rank 1 does 1, 3, 5
    assert claps[0].encoded == CORPUS[0:6] + CORPUS[12:18] + CORPUS[24:30] + CORPUS[36:40]
    assert claps[1].encoded == CORPUS[6:12] + CORPUS[18:24] + CORPUS[30:36]
    for r in (0, 1):
        np.testing.assert_allclose(results[r], single, atol=1e-5)


def test_rank_waits_then_times_out_keeping_its_shards(tmp_path, minilm):
    cache = EmbeddingCache(tmp_path)
    clap = CountingCLAP(minilm)
    with pytest.raises(TimeoutError):
        cache.embed(CORPUS, clap, shard_size=10, progress=False, rank=0, world_size=2,
                    timeout=0.2, poll_interval=0.05)
    folder = cache.path(CORPUS, clap)
    assert sorted(p.name for p in folder.glob("shard-*.npy")) == ["shard-00000.npy", "shard-00002.npy"]
    # a later single-process run picks those up and computes only shards 1 and 3
    again = CountingCLAP(minilm)
    out = cache.embed(CORPUS, again, shard_size=10, progress=False)
    assert again.encoded == CORPUS[10:20] + CORPUS[30:40]
    assert out.shape == (40, 384)


def test_empty_and_bad_input(tmp_path, minilm):
    cache = EmbeddingCache(tmp_path)
    clap = CountingCLAP(minilm)
    assert cache.embed([], clap, progress=False).shape == (0, 384)
    with pytest.raises(TypeError):
        cache.embed("a single string", clap)
    with pytest.raises(ValueError):
        cache.embed(CORPUS, clap, rank=2, world_size=2)


def _dist_worker(rank, root, init_file):  # top level: torch.multiprocessing pickles it by name
    import torch.distributed as dist

    from mats.clap.minilm import MiniLMTextEncoder
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        clap = CountingCLAP(MiniLMTextEncoder())
        emb = EmbeddingCache(root).embed(CORPUS, clap, shard_size=6, progress=False)  # ranks from dist
        np.save(f"{root}/rank{rank}.npy", np.asarray(emb))
        (Path(root) / f"rank{rank}.json").write_text(json.dumps(clap.encoded))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_torch_distributed_two_processes(tmp_path, minilm):
    import torch.multiprocessing as mp

    mp.spawn(_dist_worker, args=(str(tmp_path), str(tmp_path / "init")), nprocs=2)
    single = EmbeddingCache(tmp_path / "one").embed(CORPUS, CountingCLAP(minilm), progress=False)
    enc = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(enc[0] + enc[1]) == sorted(CORPUS) and not set(enc[0]) & set(enc[1])
    for r in (0, 1):
        np.testing.assert_allclose(np.load(tmp_path / f"rank{r}.npy"), single, atol=1e-5)


def test_length_sorted_encoding_keeps_each_rows_embedding(tmp_path, minilm):
    # Several batches of mixed lengths: encoded shortest first, stored in corpus order.
    texts = [("a very long description of " * (i % 5)) + f"sound number {i}" for i in range(40)]
    clap = CountingCLAP(minilm)
    emb = EmbeddingCache(tmp_path).embed(texts, clap, batch_size=8, progress=False)
    lengths = [len(t) for t in clap.encoded]
    assert lengths == sorted(lengths) and sorted(clap.encoded) == sorted(texts)
    ref = np.concatenate([minilm.encode([t]) for t in texts])
    assert (np.sum(emb * ref, axis=1) > 0.99999).all()
