import hashlib
import json

import pytest
import torch

from mats.data.corpus import Corpus, CorpusSource, read_jsonl
from mats.data.default_corpus import build_default_corpus, load_labels
from mats.llm import load_llm, pick_device, pick_dtype, resolve_llm
from mats.prompts import AUDIO_PLACEHOLDER, render_prompt


def test_gguf_loads_from_dequantised_cache_with_chat_template():
    model, tok = load_llm("smollm2-135m-instruct", device="cpu", dtype="fp32")
    assert model.config.hidden_size == 576 and model.dtype == torch.float32
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    assert not any(p.requires_grad for p in model.parameters())
    before, after = render_prompt(tok, "caption", "Describe the audio.", "chat", "sys")
    assert before.endswith("<Speech>") and after.startswith("</Speech> [audio caption] Describe the audio.")
    assert AUDIO_PLACEHOLDER not in before + after


def test_local_hf_folder_and_errors(tiny_llm, tmp_path):
    model, tok = load_llm(str(tiny_llm), device="cpu")
    assert model.config.num_hidden_layers == 2
    assert resolve_llm(str(tiny_llm)) == (tiny_llm, None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither config.json nor a .gguf"):
        resolve_llm(str(tmp_path / "empty"))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a .gguf"):
        resolve_llm(str(tmp_path / "weights.bin"))


def test_device_and_dtype_are_chosen_at_run_time():
    assert pick_device("cpu").type == "cpu"
    from mats.llm import native_bf16_cpu

    # inference default: fp32 on CPU; "fast": bf16 where the CPU multiplies bf16 natively
    assert pick_dtype(torch.device("cpu")) == torch.float32
    assert pick_dtype(torch.device("cpu"), "fast") == (torch.bfloat16 if native_bf16_cpu() else torch.float32)
    assert pick_dtype(torch.device("cpu"), "fp32") == torch.float32
    assert pick_dtype(torch.device("cpu"), "bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'int4'"):
        pick_dtype(torch.device("cpu"), "int4")


def test_default_corpus_is_valid_deterministic_and_covers_every_class(tmp_path):
    a = build_default_corpus(tmp_path / "a", seed=0)
    b = build_default_corpus(tmp_path / "b", seed=0)
    assert a["rows"] == b["rows"] and a["classes"] == 521
    for name in ("captions", "tags", "qa"):
        ha = hashlib.sha256((tmp_path / "a" / f"{name}.jsonl").read_bytes()).hexdigest()
        hb = hashlib.sha256((tmp_path / "b" / f"{name}.jsonl").read_bytes()).hexdigest()
        assert ha == hb
    tags = read_jsonl(tmp_path / "a" / "tags.jsonl")
    answered = {t.strip() for row in tags for t in row.answer.split(",")}
    names = {lab.name for lab in load_labels().values()}
    assert len(names - answered) <= 25  # only generic scene classes are left out of answers
    qa = read_jsonl(tmp_path / "a" / "qa.jsonl")
    assert all(r.instruction for r in qa)
    assert {r.answer for r in qa} >= {"Yes.", "No."}


def test_corpus_mixing_weights(tmp_path):
    rows = [{"text": f"t{i}", "task": "caption", "answer": f"a{i}"} for i in range(30)]
    (tmp_path / "big.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "small.jsonl").write_text(json.dumps(rows[0]))
    c = Corpus.load([CorpusSource(str(tmp_path / "big.jsonl"), 1.0), CorpusSource(str(tmp_path / "small.jsonl"), 3.0)])
    p = c.sampling_probabilities()
    assert p[:30].sum() == pytest.approx(0.25) and p[30] == pytest.approx(0.75)
    train, held = c.split(3, seed=0)
    assert len(set(train) & set(held)) == 0 and len(train) + len(held) == 31
