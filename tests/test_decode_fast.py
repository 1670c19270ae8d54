"""Fast decoding keeps the default model's tokens: prefill once per clip (the prompt's KV cache
copied to the beams) against a prefill per beam, and the LoRA merged into the weights against the
peft wrapper. Real parts throughout: the offline default model, the default CLAP, real clips.

Exactness is an fp32 property (bf16 rounds a merged weight once, peft's two paths twice), so these
comparisons pin ``dtype="fp32"`` (the CPU default); bf16 (``dtype="fast"``) is pinned by the golden
outputs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from conftest import real_sounds_folder

CLIPS = ["36-sheep.wav", "37-cow.wav", "phone-incoming-call.oga", "38-horse.wav", "camera-shutter.oga"]


@pytest.fixture(scope="module")
def clips():
    from mats.data.sounds import read_metadata
    folder = real_sounds_folder()
    meta = read_metadata(folder)
    found = [folder / r["file"] for w in CLIPS for r in meta if r["file"].endswith("/" + w)]
    if len(found) < 3:
        found = [folder / r["file"] for r in meta[:5]]
    return found


@pytest.fixture(scope="module")
def mats_default():
    from mats import MATS
    return MATS.from_pretrained(dtype="fp32")


@pytest.fixture(scope="module")
def embeddings(mats_default, clips):
    return mats_default.embed_audio(clips)


def _outputs(m, embeddings):
    questions = ["What animal is this?", "Is there anything in this recording that sounds like a machine?"]
    return {
        "caption": m.generate(embeddings, "caption"),  # beam 8 + rerank 8, batch of 5
        "tags": m.generate(embeddings, "tags"),
        "caption-1": m.generate(embeddings[:1], "caption"),
        # questions of different lengths: left padding inside the batch
        "qa": m.generate(embeddings[:2], "qa", questions=questions),
    }


def test_prefill_once_gives_the_same_tokens(mats_default, embeddings):
    model = mats_default.model
    assert model.prefill_once
    fast = _outputs(mats_default, embeddings)
    model.prefill_once = False
    try:
        per_beam = _outputs(mats_default, embeddings)
    finally:
        model.prefill_once = True
    assert fast == per_beam
    assert all(t.strip() for t in fast["caption"])


def test_default_answers_do_not_depend_on_the_batch(mats_default, embeddings):
    """With the default fp32 weights a clip's caption is the same alone as in a batch (the server
    micro-batches requests, so its answers would otherwise depend on the traffic). bf16 weights
    ("fast") changed 2 of 16 captions this way, which is why they are not the default."""
    batched = mats_default.generate(embeddings, "caption")
    alone = [mats_default.generate(embeddings[i:i + 1], "caption")[0] for i in range(len(embeddings))]
    assert batched == alone


def test_merged_lora_gives_the_same_tokens_as_peft(mats_default, embeddings):
    from mats.model import MATSModel
    from mats.pipeline import DEFAULT_MODEL, MATS

    assert mats_default.model.merged
    wrapped = MATSModel.from_pretrained(DEFAULT_MODEL, merge=False, dtype="fp32")
    assert not wrapped.merged and hasattr(wrapped.llm, "peft_config")
    peft_mats = MATS(wrapped, mats_default.clap, DEFAULT_MODEL, mats_default.santa, mats_default.shift)
    assert _outputs(mats_default, embeddings) == _outputs(peft_mats, embeddings)
    with pytest.raises(RuntimeError, match="merge=False"):  # merged = inference only
        mats_default.model.load_trainable_from(DEFAULT_MODEL)


def test_merged_model_saves_its_adapter_unchanged(mats_default, embeddings, tmp_path):
    from mats.pipeline import DEFAULT_MODEL, MATS

    out = mats_default.save_pretrained(tmp_path / "copy")
    name = "lora/adapter_model.safetensors"
    assert (out / name).read_bytes() == (DEFAULT_MODEL / name).read_bytes()
    again = MATS.from_pretrained(out, clap=mats_default.clap, dtype="fp32")
    assert again.generate(embeddings[:2], "caption") == mats_default.generate(embeddings[:2], "caption")


def test_inference_does_not_import_peft(clips):
    code = ("import sys; from mats import MATS; m = MATS.from_pretrained(); "
            f"print(m.caption([{str(clips[0])!r}])[0]); print('peft' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "MATS_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    caption, peft_loaded = out.stdout.strip().splitlines()[-2:]
    assert caption.strip() and peft_loaded == "False"


def test_merge_matches_peft_merge_on_a_tiny_model(tiny_model, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from mats.model import MATSModel

    folder = shutil.copytree(tiny_model, tmp_path / "model")
    adapter_file = folder / "lora" / "adapter_model.safetensors"
    g = torch.Generator().manual_seed(0)
    adapter = {k: (torch.randn(v.shape, generator=g) * 0.1 if "lora_B" in k else v)
               for k, v in load_file(str(adapter_file)).items()}  # a trained-looking, non-zero B
    save_file(adapter, str(adapter_file), metadata={"format": "pt"})
    for _ in range(2):  # the second load reads the merged weights from the cache
        merged = dict(MATSModel.from_pretrained(folder, dtype="fp32").llm.named_parameters())
        reference = MATSModel.from_pretrained(folder, merge=False, dtype="fp32").llm.merge_and_unload()
        changed = 0
        for name, p in reference.named_parameters():
            assert torch.equal(p, merged[name]), name
            changed += "q_proj" in name or "v_proj" in name
        assert changed
