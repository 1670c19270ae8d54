"""The ONNX Runtime path (mats.onnx.export, mats.onnx.engine, mats.onnx.decoding, mats.runtimes).

The tiny Llama of tests/tiny.py for the plumbing (its graphs against the torch modules, the KV cache,
beams against transformers' generate, the cache of exports), the real default model for the golden clips.
Tolerances: the graphs compute in fp32 with other kernels and another operation order than torch, so
logits and KV tensors are compared to 1e-4 (absolute, on values of order 1-10); tokens must be equal.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mats import runtimes
from mats.onnx import export as onnx_export
from mats.pipeline import MATS

TOL = 1e-4


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One MATS_HOME for the module: the tiny model is exported once."""
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("onnx-home")
    mp.setenv("MATS_HOME", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="module")
def exported(home, tiny_model):
    from mats.config import read_model_config

    llm = read_model_config(tiny_model)["model"]["llm"]
    return onnx_export.ensure_exported(tiny_model, llm, note=lambda line: None)


@pytest.fixture(scope="module")
def pair(exported, tiny_model):
    """The tiny model on torch and on ONNX Runtime."""
    return MATS.from_pretrained(tiny_model, runtime="torch"), MATS.from_pretrained(tiny_model, runtime="onnx")


def _emb(n, seed=0, d=384):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _feed(names, past):
    return dict(zip(names, past, strict=True))


def _hf_last_logits(llm, embeds: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return llm(inputs_embeds=torch.from_numpy(embeds)[None]).logits[0, -1].numpy()


def test_the_prefill_graph_matches_the_torch_llm(pair):
    """One clip's prefill: its last-position logits and KV cache equal HF's forward (1e-4)."""
    torch_m, onnx_m = pair
    llm, engine = torch_m.model.llm, onnx_m.model
    embeds = np.random.default_rng(0).standard_normal((7, llm.config.hidden_size)).astype(np.float32)
    with torch.no_grad():
        out = llm(inputs_embeds=torch.from_numpy(embeds)[None], use_cache=True)
    logits, present = engine._prefill(embeds)
    np.testing.assert_allclose(logits, out.logits[0, -1].numpy(), atol=TOL)
    for i in range(engine.layers):
        np.testing.assert_allclose(present[2 * i], out.past_key_values.layers[i].keys.numpy(), atol=TOL)
        np.testing.assert_allclose(present[2 * i + 1], out.past_key_values.layers[i].values.numpy(), atol=TOL)


def test_kv_cache_steps_match_a_full_forward(pair):
    """Two clips with prompts of different lengths (left-padded, shared by 2 beams each), three steps
    in which the beams swap: every row's logits equal HF's full forward over that row's whole sequence."""
    from mats.onnx.engine import _BatchState

    torch_m, onnx_m = pair
    llm, engine = torch_m.model.llm, onnx_m.model
    rng = np.random.default_rng(1)
    prompts = [rng.standard_normal((n, llm.config.hidden_size)).astype(np.float32) for n in (7, 4)]
    caches = [engine._prefill(p)[1] for p in prompts]
    state = _BatchState(engine, caches, [7, 4], beams=2)
    rows = [prompts[0], prompts[0], prompts[1], prompts[1]]  # each row's sequence so far
    for step, origin in enumerate(([0, 1, 2, 3], [1, 0, 3, 3], [0, 0, 2, 3])):
        tokens = rng.integers(0, engine.embeddings.shape[0], 4)
        rows = [np.concatenate([rows[o], engine.embeddings[t][None]]) for o, t in zip(origin, tokens, strict=True)]
        logits = state.step(tokens, np.asarray(origin))
        for r in range(4):
            np.testing.assert_allclose(logits[r], _hf_last_logits(llm, rows[r]), atol=TOL, err_msg=f"{step=} {r=}")
    assert state.past[0].shape[2] == 3 and state.prompt[0].shape[:3] == (2, engine.kv_heads, 7)


def test_mapper_and_text_encoder_graphs_match_torch(pair):
    torch_m, onnx_m = pair
    z = _emb(3)
    with torch.no_grad():
        want = torch_m.model.mapper(torch.from_numpy(z)).numpy()
    got = onnx_m.model.mapper.run(None, {"clap_embedding": z})[0]
    np.testing.assert_allclose(got, want, atol=TOL)
    texts = ["A dog barks twice.", "rain", "The sound of a bell ringing and people talking in a hall."]
    np.testing.assert_allclose(onnx_m.clap.encode_text(texts), torch_m.clap.encode_text(texts), atol=TOL)
    assert onnx_m.clap.text_encoder.fingerprint() != torch_m.clap.text_encoder.fingerprint()  # own label cache


@pytest.mark.parametrize("options", [
    {"num_beams": 4, "max_new_tokens": 10, "rerank": 4},  # the caption default's shape: beams + candidates
    {"num_beams": 3, "max_new_tokens": 8, "rerank": 0, "min_new_tokens": 3, "length_penalty": 0.5},
    {"num_beams": 1, "max_new_tokens": 8, "rerank": 0},  # greedy
])
def test_onnx_beams_match_transformers_beams(pair, options):
    """The numpy beam search gives transformers' candidates, in its order, for the same model."""
    torch_m, onnx_m = pair
    z = _emb(3, seed=2)
    for task in ("caption", "tags"):
        want = torch_m.candidates(z, task, bridge="none", **options)
        assert onnx_m.candidates(z, task, bridge="none", **options) == want, (task, options)


def test_onnx_answers_do_not_depend_on_the_batch(pair):
    """A clip's prompt is prefilled alone and the decoding rows never mix: alone or in a batch of 5,
    the same candidates."""
    _, onnx_m = pair
    z = _emb(5, seed=3)
    batch = onnx_m.candidates(z, "caption", bridge="none", num_beams=4, max_new_tokens=10, rerank=4)
    for i in range(5):
        assert onnx_m.candidates(z[i:i + 1], "caption", bridge="none", num_beams=4, max_new_tokens=10,
                                 rerank=4) == [batch[i]]
    assert onnx_m.batch_invariant and onnx_m.runtime == "onnx"


def test_greedy_answers_stream_on_onnx_runtime(pair, tmp_path):
    """The server's token streamer works on the ONNX engine: the pieces make up the answer."""
    from mats.streaming import TextDeltas

    torch_m, onnx_m = pair
    pieces = []
    deltas = TextDeltas(onnx_m.model.tokenizer, pieces.append)
    options = {"bridge": "none", "num_beams": 1, "rerank": 0, "max_new_tokens": 8}
    (result,) = onnx_m.run([_emb(1)[0]], onnx_m.decoding("caption", **options), streamer=deltas)
    assert result.error is None and "".join(pieces) == result.text
    assert result.text == torch_m.generate(_emb(1), "caption", **options)[0]
    with pytest.raises(RuntimeError, match="inference-only"):
        onnx_m.save_pretrained(tmp_path / "copy")


def test_the_export_is_cached_by_content_and_checked(exported, tiny_model, home):
    out, manifest = exported
    assert out.parent == home / "onnx-cache" and manifest["key"] == out.name
    assert set(manifest["files"]) >= {"decoder.onnx", "mapper.onnx", "embeddings.npy", "tokenizer.json"}
    again, _ = onnx_export.ensure_exported(tiny_model, manifest_llm(tiny_model), note=pytest.fail)
    assert again == out  # verified, not exported again
    assert not list(out.parent.glob("*.partial"))


def manifest_llm(folder: Path) -> str:
    return json.loads((folder / "config.json").read_text())["model"]["llm"]


def test_a_damaged_export_is_reported_in_one_line_and_exported_again(exported, tiny_model, capsys):
    out, manifest = exported
    graph = out / "mapper.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: same size, other content
    graph.write_bytes(bytes(data))
    m = MATS.from_pretrained(tiny_model, runtime="onnx")
    err = capsys.readouterr().err.strip().splitlines()
    assert any("mapper.onnx: sha256 does not match" in line and "exporting again" in line for line in err), err
    onnx_export.check_export(out, manifest["key"])  # rewritten whole: every file matches its manifest again
    assert m.candidates(_emb(1), "caption", bridge="none", num_beams=2, max_new_tokens=4, rerank=2)


def test_a_foreign_export_beside_the_model_is_not_used(exported, tiny_model, tmp_path, capsys):
    """An onnx/ folder in the model folder that belongs to another model is named and passed over."""
    out, _ = exported
    folder = shutil.copytree(tiny_model, tmp_path / "model")
    shutil.copytree(out, folder / "onnx")
    manifest = json.loads((folder / "onnx" / "manifest.json").read_text())
    manifest["key"] = "0" * 32
    (folder / "onnx" / "manifest.json").write_text(json.dumps(manifest))
    got, _ = onnx_export.ensure_exported(folder, manifest_llm(folder), note=lambda line: print(line))
    assert got == out and "export is of another model" in capsys.readouterr().out


def test_an_unsupported_llm_is_refused_or_falls_back(tiny_model, tiny_llm, tmp_path, monkeypatch, capsys):
    """A non-Llama LLM: --runtime onnx is refused in one line; auto (where it picks ONNX) notes and
    answers on torch."""
    llm = shutil.copytree(tiny_llm, tmp_path / "llm")
    config = json.loads((llm / "config.json").read_text())
    config["model_type"] = "mistral"  # the same weights load as a Mistral, which the graph does not cover
    (llm / "config.json").write_text(json.dumps(config))
    folder = shutil.copytree(tiny_model, tmp_path / "model")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model"]["llm"] = str(llm)
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="runtime 'onnx' cannot serve .*Llama-family") as e:
        MATS.from_pretrained(folder, runtime="onnx")
    assert "\n" not in str(e.value)
    monkeypatch.setattr(runtimes, "AUTO_PICKS_ONNX", True)
    m = MATS.from_pretrained(folder, runtime="auto")
    assert m.runtime == "torch"
    assert "running on torch" in capsys.readouterr().err


def test_runtime_choice_is_checked():
    assert runtimes.choose_runtime("torch") == "torch"
    assert runtimes.choose_runtime("onnx", "cpu", "fp32") == "onnx"
    for bad in ({"device": "cuda"}, {"dtype": "bf16"}):
        with pytest.raises(ValueError, match="runtime 'onnx'"):
            runtimes.choose_runtime("onnx", **bad)
    with pytest.raises(ValueError, match="unknown runtime"):
        runtimes.choose_runtime("tensorrt")
    assert runtimes.choose_runtime("auto", "cpu", "bf16") == "torch"  # ONNX Runtime runs fp32 only
    assert runtimes.choose_runtime("auto", "cpu") == "onnx"


def test_auto_without_a_gpu_decides_without_torch(monkeypatch):
    """With no GPU to find, "auto" picks ONNX Runtime without importing torch to look for one."""
    from mats.devices import may_have_gpu

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not may_have_gpu()
    monkeypatch.setattr("mats.devices.pick_device", lambda device=None: pytest.fail("asked torch for a GPU"))
    assert runtimes.choose_runtime("auto") == "onnx"
    monkeypatch.setenv("MATS_RUNTIME", "torch")
    assert runtimes.choose_runtime(None) == "torch"
    monkeypatch.setenv("MATS_RUNTIME", "tensorrt")
    with pytest.raises(ValueError, match="MATS_RUNTIME='tensorrt' is not a runtime"):
        runtimes.choose_runtime(None)


@pytest.mark.slow
def test_golden_clips_give_the_same_answers_on_onnx_runtime():
    """The shipped default on ONNX Runtime answers the golden clips exactly as recorded for fp32 torch."""
    from conftest import real_sounds_folder
    from test_model_folder import GOLDEN, _golden_outputs

    golden = json.loads(GOLDEN.read_text())
    folder = real_sounds_folder()
    m = MATS.from_pretrained(runtime="onnx")
    assert m.runtime == "onnx"
    assert _golden_outputs(m, [str(folder / f) for f in golden["clips"]]) == golden["float32"]


@pytest.mark.slow
def test_mats_tag_as_typed_imports_neither_torch_nor_transformers():
    """`python -X importtime -m mats tag CLIP` as a user types it (no --runtime, no MATS_RUNTIME): the
    default model answers on ONNX Runtime without importing torch or transformers, and says what the
    torch path says."""
    import os
    import subprocess
    import sys

    from conftest import real_sounds_folder

    clip = str(sorted((real_sounds_folder() / "clips").rglob("*.wav"))[0])
    env = {k: v for k, v in os.environ.items() if k != "MATS_RUNTIME"}
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "mats", "tag", clip], env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}
    assert "onnxruntime" in imported and "mats.onnx.engine" in imported
    assert not {m for m in imported if m.split(".")[0] in ("torch", "transformers", "peft")}
    torch_path = MATS.from_pretrained(runtime="torch")
    assert p.stdout.strip() == f"{clip}\t{torch_path.generate(torch_path.embed_audio([clip]), 'tags')[0]}"


def test_cli_runtime_and_export_commands(exported, tiny_model, tmp_path, capsys):
    """`mats tag --runtime onnx|torch` answer alike; `mats export onnx --out DIR` writes a checked export;
    `--runtime onnx` with a GPU device is refused in one line (exit 2)."""
    from conftest import real_sounds_folder
    from mats.commands import main

    clip = str(sorted((real_sounds_folder() / "clips").rglob("*.wav"))[0])
    answers = {}
    for runtime in ("onnx", "torch"):
        assert main(["tag", clip, "--model", str(tiny_model), "--runtime", runtime, "--format", "jsonl",
                     "--max-new-tokens", "6"]) == 0
        answers[runtime] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["text"]
    assert answers["onnx"] == answers["torch"]
    assert main(["export", "onnx", "--model", str(tiny_model), "--out", str(tmp_path / "onnx")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert onnx_export.check_export(tmp_path / "onnx", printed["key"])["key"] == exported[1]["key"]
    assert main(["tag", clip, "--model", str(tiny_model), "--runtime", "onnx", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mats: error: runtime 'onnx' runs on the CPU")


def test_export_of_a_folder_that_is_not_a_model_is_one_line(tmp_path, capsys):
    """`mats export onnx --model DIR` on an empty or missing folder: exit 2, one line, nothing written."""
    from mats.commands import main

    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "missing"):
        assert main(["export", "onnx", "--model", str(folder), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"mats: error: {folder} is not a MATS model folder (no config.json)"]
    assert not (tmp_path / "out").exists()


def test_the_server_answers_through_onnx_runtime(pair, tiny_model):
    """`mats serve --runtime onnx`'s app: an endpoint's answer is the ONNX run loop's (and torch's)."""
    from fastapi.testclient import TestClient

    from conftest import real_sounds_folder
    from mats.server import Settings, create_app

    torch_m, onnx_m = pair
    clip = sorted((real_sounds_folder() / "clips").rglob("*.wav"))[0]
    expected = next(onnx_m.run([clip], "tags", max_new_tokens=6)).to_dict()
    assert expected["text"] == next(torch_m.run([clip], "tags", max_new_tokens=6)).text
    with TestClient(create_app(onnx_m, Settings(batch_window_ms=5))) as client:
        r = client.post("/v1/tag", files={"file": (clip.name, clip.read_bytes(), "audio/wav")},
                        data={"max_new_tokens": "6"})
        assert r.status_code == 200, r.text
        assert r.json()["text"] == expected["text"] and r.json()["tags"] == expected["tags"]
        assert client.get("/health").status_code == 200
