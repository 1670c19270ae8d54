"""Retrieval-augmented prompting: the memory's nearest training texts in the prompt.

Plumbing on hand-made banks (exact geometry, so the expected neighbours are known), the real MiniLM
text embeddings for the near-duplicate rule, and one end-to-end tiny training run through the CLI
whose model folder is loaded back and decoded with the real default CLAP.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mats.bridge.retrieval import RetrievalConfig, retrieve_texts, training_hints
from mats.bridge.santa import SantaConfig, SantaMemory
from mats.prompts import render_prompt, user_turn
from test_train import needs_default_clap, run_config, run_train, write_config


def _unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _memory(dim: int = 8):
    """Bank rows: e0, a near-duplicate of e0, then e1, e2, e3 leaning towards e0 by decreasing amounts."""
    e = np.eye(dim, dtype=np.float32)
    bank = _unit([e[0], e[0] + 0.05 * e[4], e[1] + 0.9 * e[0], e[2] + 0.5 * e[0], e[3] + 0.2 * e[0], e[5]])
    texts = ["a dog barks", "a dog is barking", "a wolf howls", "a cat meows", "a cow moos", "rain"]
    return SantaMemory.build(bank, SantaConfig(clusters=2, top_l=4, seed=0), texts=texts), bank, texts


def test_nearest_texts_in_order_and_deterministic():
    memory, bank, _ = _memory()
    found = retrieve_texts(memory, bank[:1], 3)
    assert [r.text for r in found[0]] == ["a dog barks", "a dog is barking", "a wolf howls"]
    assert found[0][0].score == pytest.approx(1.0, abs=1e-6)
    assert retrieve_texts(memory, bank[:1], 3) == found


def test_training_leaves_out_the_sample_and_its_near_duplicates():
    memory, bank, texts = _memory()
    config = RetrievalConfig(k=2, exclude_above=0.95)
    noisy = _unit(bank[0] + 0.01)
    found = retrieve_texts(memory, noisy[None], 2, exclude_texts=[texts[0]], exclude_embeddings=bank[:1],
                           exclude_above=0.95)
    assert [r.text for r in found[0]] == ["a wolf howls", "a cat meows"]  # not e0, not its near-duplicate
    hints = training_hints(memory, config, noisy[None], bank[:1], [texts[0]])
    assert hints == ["Similar sounds: a wolf howls a cat meows"]
    # equal text is left out even when its embedding is not near (a text is never its own hint)
    found = retrieve_texts(memory, bank[2:3], 2, exclude_texts=["a wolf howls"],
                           exclude_embeddings=-bank[2:3], exclude_above=0.95)
    assert "a wolf howls" not in [r.text for r in found[0]]


@needs_default_clap
def test_near_duplicate_rule_on_real_text_embeddings():
    from mats.clap import load_clap

    clap = load_clap("yamnet-minilm")
    texts = ["A dog barks.", "A dog is barking.", "Rain falls on a roof.", "A car engine starts.",
             "Church bells ring.", "A cat meows."]
    emb = np.asarray(clap.encode_text(texts), np.float32)
    memory = SantaMemory.build(emb, SantaConfig(clusters=2, top_l=4, seed=0), texts=texts)
    own = np.asarray(clap.encode_text(["The dog barks."]), np.float32)
    sims = memory.bank @ _unit(own[0])
    threshold = float(np.sort(sims)[-2]) - 1e-4  # the two dog texts are the near-duplicates here
    hints = training_hints(memory, RetrievalConfig(k=2, exclude_above=threshold), own, own, ["The dog barks."])
    assert "dog" not in hints[0].lower()


def test_config_is_checked_and_hint_is_formatted():
    with pytest.raises(ValueError, match="k must be >= 0"):
        RetrievalConfig(k=-1)
    with pytest.raises(ValueError, match="template"):
        RetrievalConfig(k=2, template="no slot")
    with pytest.raises(ValueError, match="exclude_above"):
        RetrievalConfig(k=2, exclude_above=0)
    cfg = RetrievalConfig(k=2, template="Related: {texts}.", separator="; ", max_chars=5)
    assert cfg.hint(["a  dog\nbarks", "rain"]) == "Related: a dog; rain."
    assert cfg.hint([]) == "" and not RetrievalConfig().enabled


def test_hint_sits_between_audio_and_task_tag(tiny_llm):
    from mats.llm import load_llm

    _, tok = load_llm(str(tiny_llm), device="cpu")
    assert user_turn("tags", "Tag it.", "Similar sounds: a dog.") == \
        "<Speech><|mats_audio|></Speech> Similar sounds: a dog. [multi events] Tag it."
    assert user_turn("tags", "Tag it.", None) == user_turn("tags", "Tag it.", "  ")
    before, after = render_prompt(tok, "caption", "Describe it.", "plain", context="Similar sounds: rain.")
    assert after.startswith("</Speech> Similar sounds: rain. [audio caption] Describe it.")


@pytest.mark.slow
@needs_default_clap
def test_retrieval_model_trains_saves_and_prompts_with_its_memory(tmp_path, train_env):
    """A tiny run with k = 2: the config round-trips through the model folder, and at inference the
    prompt carries exactly the texts ``MATS.retrieved`` reports for the bridged embedding."""
    from mats.data.sounds import fetch_real_sounds, read_metadata
    from mats.model import MATSModel
    from mats.pipeline import MATS

    e = train_env
    cfg = run_config(e["llm"], e["corpus"], tmp_path / "run", e["cache"], steps=3, save_every=3, eval_every=3)
    cfg["model"]["retrieval"] = {"k": 2, "template": "Heard before: {texts}"}
    run_train(write_config(tmp_path / "rag.json", cfg))
    folder = tmp_path / "run" / "model"
    written = json.loads((folder / "config.json").read_text())
    assert written["trained_tasks"] == ["caption", "qa", "tags"]
    saved = written["model"]["retrieval"]
    assert saved["k"] == 2 and saved["template"] == "Heard before: {texts}"
    assert MATSModel.from_pretrained(folder, device="cpu").config.retrieval == RetrievalConfig(
        k=2, template="Heard before: {texts}")

    m = MATS.from_pretrained(folder, device="cpu")
    sounds = fetch_real_sounds()
    clip = sounds / read_metadata(sounds)[0]["file"]
    emb = m.embed_audio([clip])
    seen = []
    real_generate = m.model.generate

    def spy(z, requests, **kw):
        seen.extend(r.context for r in requests)
        return real_generate(z, requests, **kw)

    m.model.generate = spy
    texts = m.generate(emb, "caption", bridge="santa", num_beams=1, rerank=0, max_new_tokens=3)
    again = m.generate(emb, "caption", bridge="santa", num_beams=1, rerank=0, max_new_tokens=3)
    assert texts == again and seen[0] == seen[1]
    why = m.retrieved(emb, decoding=m.decoding("caption", bridge="santa"))[0]
    assert len(why) == 2 and seen[0] == "Heard before: " + " ".join(r["text"] for r in why)
    results = list(m.run([clip], "caption", explain=True, num_beams=1, rerank=0, max_new_tokens=3))
    assert [r["text"] for r in results[0].retrieved] == [r["text"] for r in why]


def test_model_without_retrieval_prompts_as_before(tiny_model):
    from mats.model import MATSModel, Request

    model = MATSModel.from_pretrained(tiny_model, device="cpu")
    assert not model.config.retrieval.enabled
    before, after = model.prompt_ids("caption", "Describe it.")
    assert (before, after) == model.prompt_ids("caption", "Describe it.", None)
    z = torch.zeros(1, 384)
    out = model.build_inputs(z, [Request("caption", "Describe it.")], with_answers=False)
    hinted = model.build_inputs(z, [Request("caption", "Describe it.", context="Similar sounds: rain.")],
                                with_answers=False)
    assert hinted["inputs_embeds"].shape[1] > out["inputs_embeds"].shape[1]


# -- bad input --------------------------------------------------------------------------------------
def _copy_with(tiny_model, tmp_path, retrieval: dict | None, drop: str | None = None):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    cfg = json.loads((folder / "config.json").read_text())
    if retrieval is not None:
        cfg["model"]["retrieval"] = retrieval
    (folder / "config.json").write_text(json.dumps(cfg))
    if drop:
        target = folder / drop
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    return folder


def test_bad_retrieval_settings_are_refused_when_the_folder_loads(tiny_model, tmp_path):
    from mats.pipeline import MATS

    folder = _copy_with(tiny_model, tmp_path, {"k": -1})
    with pytest.raises(ValueError, match="model.retrieval.k must be >= 0"):
        MATS.from_pretrained(folder, device="cpu")


def test_retrieval_model_without_memory_texts_says_so(tiny_model, tmp_path):
    from mats.bridge.config import BridgeError
    from mats.pipeline import MATS

    m = MATS.from_pretrained(_copy_with(tiny_model, tmp_path, {"k": 2}, drop="santa/texts.txt"), device="cpu")
    with pytest.raises(BridgeError, match="no Santa memory with texts"):
        m.generate(np.ones((1, 384), np.float32), "caption", num_beams=1, rerank=0, max_new_tokens=2)
    with pytest.raises(ValueError, match="k must be >= 1"):
        m.candidates(np.ones((1, 384), np.float32), "caption", k=0)


def test_show_retrieved_without_a_memory_is_one_clear_line(tiny_model, tmp_path, capsys):
    from mats.cli import main
    from mats.data.sounds import fetch_real_sounds, read_metadata

    sounds = fetch_real_sounds()
    clip = sounds / read_metadata(sounds)[0]["file"]
    folder = _copy_with(tiny_model, tmp_path, None, drop="santa")
    rc = main(["tag", str(clip), "--model", str(folder), "--bridge", "none", "--show-retrieved",
               "--max-new-tokens", "2", "--rerank", "0", "--beams", "1"])
    out, err = capsys.readouterr()
    assert rc != 0 and "Traceback" not in err
    assert "no Santa memory" in err and len([x for x in err.splitlines() if "no Santa memory" in x]) == 1
