"""The model folder has one owner (MATS.save_pretrained / from_pretrained), and the shipped default
model says what it said when it was shipped (tests/data/golden_default.json, re-recorded whenever
the default model's weights change; last: the retrieval-augmented stage 6)."""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import real_sounds_folder
from mats.pipeline import DEFAULT_MODEL, MATS

GOLDEN = Path(__file__).parent / "data" / "golden_default.json"


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return MATS.from_pretrained(tiny_model)


def _emb(n=3, d=384, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_save_pretrained_round_trip(tiny, tmp_path):
    out = tiny.save_pretrained(tmp_path / "copy")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "mats" and cfg["format_version"] == 2
    adapter = json.loads((out / "lora" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == cfg["model"]["llm"]  # never a machine's cache folder
    assert (out / "README.md").read_text().startswith("# copy")
    again = MATS.from_pretrained(out)
    e = _emb()
    for bridge in ("none", "santa", "nearest"):
        a = tiny.generate(e, "caption", bridge=bridge, num_beams=1, max_new_tokens=4, rerank=0)
        b = again.generate(e, "caption", bridge=bridge, num_beams=1, max_new_tokens=4, rerank=0)
        assert a == b, bridge
    assert again.santa.texts == tiny.santa.texts and again.santa.texts[0] == "training text 0"


def test_old_folder_without_model_type_loads(tiny_model, tmp_path):
    import shutil
    old = tmp_path / "old"
    shutil.copytree(tiny_model, old)
    cfg = json.loads((old / "config.json").read_text())
    for k in ("model_type", "format_version", "clap_fingerprint"):
        cfg.pop(k, None)
    (old / "config.json").write_text(json.dumps(cfg))
    (old / "santa" / "texts.txt").unlink()
    m = MATS.from_pretrained(old)
    assert m.santa.texts is None
    assert m.retrieved(_emb(1), top_k=2)[0][0]["text"].startswith("bank row ")


@pytest.mark.parametrize("damage, message", [
    ({"model_type": "bert"}, "not a MATS model config"),
    ({"format_version": 99}, "format version 99"),
])
def test_foreign_or_future_folders_are_refused(tiny_model, tmp_path, damage, message):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg.update(damage)
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=message):
        MATS.from_pretrained(bad)


def test_clap_fingerprint_mismatch_is_refused(tiny, tiny_model, tmp_path):
    import shutil
    folder = tmp_path / "fp"
    shutil.copytree(tiny_model, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["clap_fingerprint"] = "some-other-clap|v1"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="trained on embeddings of CLAP"):
        MATS.from_pretrained(folder, clap=tiny.clap)


def test_bridges_and_retrieval_come_from_the_folder(tiny):
    assert "shift" not in tiny.bridges and {"none", "noise", "santa", "nearest", "projection"} <= set(tiny.bridges)
    rows = tiny.retrieved(_emb(2), top_k=3)
    assert len(rows) == 2 and all(len(r) == 3 for r in rows)
    for r in rows:
        assert abs(sum(x["weight"] for x in r) - 1.0) < 1e-6
        assert [x["score"] for x in r] == sorted((x["score"] for x in r), reverse=True)
        assert all(x["text"].startswith("training text ") for x in r)


def test_shipped_default_folder_is_self_describing():
    cfg = json.loads((DEFAULT_MODEL / "config.json").read_text())
    assert cfg["model_type"] == "mats" and cfg["clap_fingerprint"].startswith("yamnet-minilm")
    for f in DEFAULT_MODEL.rglob("*.json"):
        assert "/root/" not in f.read_text() and "/home/" not in f.read_text(), f
    card = (DEFAULT_MODEL / "README.md").read_text()
    assert "Held-out loss" in card and "bridge santa" in card


def _golden_outputs(m, files: list[str]) -> dict:
    return {"caption": m.caption(files), "tags": m.tag(files),
            "caption_top_beam_none": m.caption(files, bridge="none", rerank=0),
            "ask": [m.ask(files[0], "What animal is making this sound?")]}


def _golden_dtypes() -> list[str]:
    """The default ("auto": fp32 on CPU) and, on a CPU with native bf16, "fast" (bf16 weights)."""
    from mats.llm import native_bf16_cpu
    return ["auto", "fast"] if native_bf16_cpu() else ["auto"]


def _llm_dtype(m) -> str:
    """The golden entry for this model's weights: the dtype, and for bf16 the CPU's bf16 kernels
    (AMX tiles and AVX512-BF16 round differently, so their beams differ on a few clips)."""
    dtype = str(next(m.model.llm.parameters()).dtype).replace("torch.", "")
    if dtype == "bfloat16" and "amx_bf16" in Path("/proc/cpuinfo").read_text():
        return "bfloat16-amx"
    return dtype


@pytest.mark.slow
@pytest.mark.parametrize("dtype", _golden_dtypes())
def test_shipped_default_outputs_unchanged(dtype):
    """The default model on six real clips gives the same captions, tags and answer as recorded
    (per weights dtype: bf16 rounds differently from fp32, and a few beams differ); a broken default
    model or pipeline fails here. Re-record with ``python tests/test_model_folder.py --record``."""
    golden = json.loads(GOLDEN.read_text())
    folder = real_sounds_folder()
    m = MATS.from_pretrained(dtype=dtype)
    want = golden[_llm_dtype(m)]
    got = _golden_outputs(m, [str(folder / f) for f in golden["clips"]])
    for key in want:
        assert got[key] == want[key], key


def test_bad_input_to_the_new_entry_points(tiny, tmp_path, capsys):
    """retrieved() without a memory or with top_k < 1, `mats gap --model` on a folder that is no
    model, `--threads 0`: one clear error each, no traceback."""
    from mats.bridge.config import BridgeError
    from mats.cli import main

    with pytest.raises(ValueError, match="top_k must be >= 1"):
        tiny.retrieved(_emb(1), top_k=0)
    bare = MATS(tiny.model, tiny.clap, santa=None)
    with pytest.raises(BridgeError, match="no Santa memory"):
        bare.retrieved(_emb(1))
    assert "santa" not in bare.bridges and "none" in bare.bridges

    (tmp_path / "clip.wav").write_bytes(b"")
    nowhere = tmp_path / "not-a-model"
    nowhere.mkdir()
    assert main(["gap", "--audio", str(tmp_path / "clip.wav"), "--texts", "a dog", "--model", str(nowhere),
                 "--out", str(tmp_path / "gap")]) == 2
    err = capsys.readouterr().err
    assert "not-a-model is not a MATS model folder" in err and "Traceback" not in err
    assert not (tmp_path / "gap").exists()  # refused before any work
    assert main(["tag", str(tmp_path / "clip.wav"), "--threads", "0"]) == 2
    assert "threads must be >= 1" in capsys.readouterr().err

    # --dtype / dtype=: an unknown precision is refused by name, before any weights load
    with pytest.raises(SystemExit) as exit_:
        main(["tag", str(tmp_path / "clip.wav"), "--dtype", "int4"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "invalid choice: 'int4'" in err and "Traceback" not in err
    with pytest.raises(ValueError, match="unknown dtype 'int4'"):
        MATS.from_pretrained(tiny.folder, dtype="int4")


if __name__ == "__main__":  # python tests/test_model_folder.py --record
    import sys

    from mats.data.sounds import fetch_real_sounds

    assert sys.argv[1:] == ["--record"], "usage: python tests/test_model_folder.py --record"
    golden = json.loads(GOLDEN.read_text())
    clips = golden["clips"]
    out = {"clips": clips}
    for dtype in ("fp32", "bf16"):  # what "auto" and "fast" load on a CPU with native bf16
        m = MATS.from_pretrained(dtype=dtype)
        out[_llm_dtype(m)] = _golden_outputs(m, [str(fetch_real_sounds() / f) for f in clips])
    # entries recorded on another CPU's bf16 kernels stay (bfloat16 on AVX512-BF16, bfloat16-amx on AMX)
    out = {**golden, **out}
    GOLDEN.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {GOLDEN}")
