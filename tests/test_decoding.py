"""The decoding object and the run loop fed something wrong: one clear error each, before any decoding.

A tiny model built on the fly (real classes, random weights) stands in for the default model: what
is checked here is the plumbing, not the answers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from mats.bridge.config import DEFAULT_BRIDGE, BridgeConfig, BridgeError
from mats.decoding import Decoding


@pytest.fixture(scope="module")
def tiny(tiny_model):
    from mats.pipeline import MATS
    return MATS.from_pretrained(tiny_model, device="cpu")


def test_defaults_come_from_the_task_registry():
    from mats.tasks import TASKS
    for name, task in TASKS.items():
        d = Decoding(name)
        assert (d.num_beams, d.max_new_tokens, d.repetition_penalty, d.no_repeat_ngram_size, d.rerank) == \
            (task.num_beams, task.max_new_tokens, task.repetition_penalty, task.no_repeat_ngram_size, task.rerank)
        assert d.bridge == BridgeConfig(DEFAULT_BRIDGE) and d.seed == 0 and d.spec is task
    assert Decoding("tag") == Decoding("tags") and hash(Decoding("tag")) == hash(Decoding("tags"))
    assert Decoding("caption", num_beams=2) != Decoding("caption")
    # replace() re-checks, and a changed task keeps the options already set
    assert replace(Decoding("caption", rerank=3), seed=5).rerank == 3


@pytest.mark.parametrize("options, message", [
    ({"num_beams": 0}, "num_beams must be >= 1"),
    ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
    ({"rerank": -1}, "rerank must be >= 0"),
    ({"seed": -3}, "seed must be >= 0"),
    ({"num_beams": 2.5}, "num_beams must be a whole number"),
    ({"num_beams": True}, "num_beams must be a whole number"),
    ({"repetition_penalty": 0}, "repetition_penalty must be a number > 0"),
    ({"repetition_penalty": "high"}, "repetition_penalty must be a number > 0"),
    ({"min_new_tokens": 9, "max_new_tokens": 4}, "min_new_tokens"),
    ({"length_penalty": float("nan")}, "length_penalty must be a number"),
])
def test_bad_options_are_refused_by_name(options, message):
    with pytest.raises(ValueError, match=message):
        Decoding("caption", **options)


def test_bad_task_and_bridge():
    with pytest.raises(ValueError, match="unknown task 'sing'"):
        Decoding("sing")
    with pytest.raises(BridgeError, match="unknown bridge 'bridgey'"):
        Decoding("caption", bridge="bridgey")
    with pytest.raises(TypeError, match="bridge must be"):
        Decoding("caption", bridge=3)


def test_the_model_resolves_once_and_refuses_what_it_cannot_run(tiny):
    d = tiny.decoding("caption")
    assert d.bridge.lam is not None and d.bridge == d.bridge.resolve(tiny.santa)  # resolved, idempotent
    assert tiny.decoding(d) == d
    with pytest.raises(BridgeError, match="bridge 'shift' cannot run on this model"):
        tiny.decoding("caption", bridge="shift")  # the tiny model has no shift vector
    with pytest.raises(TypeError, match="put them in the Decoding"):
        tiny.decoding(d, num_beams=2)


def test_run_loop_refuses_bad_calls_before_decoding(tiny, tmp_path):
    emb = np.ones(tiny.clap.dim, np.float32)
    with pytest.raises(ValueError, match="needs a question for every item"):
        list(tiny.run([emb], "qa"))
    with pytest.raises(ValueError, match="pooled=False leaves nothing"):
        list(tiny.run([emb], "caption", pooled=False))
    with pytest.raises(ValueError, match="streamer follows the answer of one item"):
        list(tiny.run([emb, emb], "caption", streamer=object()))
    bare = type(tiny)(tiny.model, tiny.clap, santa=None)
    with pytest.raises(BridgeError, match="explain: this model has no Santa memory"):
        list(bare.run([emb], "caption", bridge="none", explain=True))
    # per item: an embedding asked for windows, and a file that is not audio, fail alone
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    results = list(tiny.run([emb, junk], "caption", per_window=True, num_beams=1, rerank=0, max_new_tokens=2))
    assert "per_window needs the audio" in results[0].error and isinstance(results[0].exception, ValueError)
    assert "junk.wav" in results[1].error and results[1].text is None


def test_ray_predictor_bad_rows_and_options(tiny_model):
    from mats.ray_data import MATSPredictor
    with pytest.raises(ValueError, match="num_beams must be >= 1"):
        MATSPredictor("tags", model=str(tiny_model), device="cpu", num_beams=0)
    p = MATSPredictor("tags", model=str(tiny_model), device="cpu", num_beams=1, rerank=0, max_new_tokens=2)
    with pytest.raises(ValueError, match="needs a 'path' column"):
        p({"file": np.array(["a.wav"])})
    out = p({"path": np.array(["/nonexistent/a.wav"])})
    assert out["text"] == [""] and "a.wav" in out["error"][0]
