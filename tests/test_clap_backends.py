"""LAION-CLAP and MS-CLAP backends, loaded from tiny random checkpoints written in the real formats.

The checkpoints are built on the fly: a ``ClapModel`` saved with ``save_pretrained`` plus its
processor for LAION; for MS-CLAP a ``{'model': state_dict}`` ``.pth`` with the original parameter
names (HTSAT + GPT-2 for 2023, CNN14 + BERT for 2022) next to a tiny text-model folder. They are then
loaded through ``load_clap`` exactly as a downloaded checkpoint would be.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from mats.clap import load_clap

CORPUS = ["a dog barks", "rain on a roof", "a bell rings twice! loud", "music with drums and guitar",
          "people talking", "the sound of a car engine"] * 3
TEXTS = ["a dog barks", "rain on a roof, many drops falling for a long time", "a bell rings twice! loud"]


def _wave(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * (300 + 200 * t) * t) + 0.05 * rng.standard_normal(t.size)
    return x.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# tiny checkpoints
# ----------------------------------------------------------------------------------------------
def _byte_bpe(special: list[str], trailing_special: list[str]):
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=300, min_frequency=1, special_tokens=special)
    if trailing_special:
        bpe.add_special_tokens(trailing_special)
    return bpe


@pytest.fixture(scope="module")
def laion_dir(tmp_path_factory):
    from tokenizers.processors import RobertaProcessing
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizerFast

    out = tmp_path_factory.mktemp("ckpt") / "clap-htsat-tiny"
    bpe = _byte_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"], [])
    bpe._tokenizer.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok = RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",
                               pad_token="<pad>", unk_token="<unk>", mask_token="<mask>", cls_token="<s>",
                               sep_token="</s>")
    torch.manual_seed(0)
    cfg = ClapConfig(
        text_config=dict(vocab_size=bpe.get_vocab_size(), hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=32, max_position_embeddings=80),
        audio_config=dict(patch_embeds_hidden_size=8, hidden_size=16, depths=[1, 1], num_attention_heads=[1, 2],
                          window_size=8, enable_fusion=False),
        projection_dim=12)
    ClapModel(cfg).save_pretrained(out)
    ClapProcessor(feature_extractor=ClapFeatureExtractor(truncation="rand_trunc"), tokenizer=tok).save_pretrained(out)
    return out


def _gpt2_dir(root):
    from transformers import GPT2Config, GPT2Model, GPT2TokenizerFast

    out = root / "gpt2"
    # byte-level BPE laid out like GPT-2's: "!" is id 0, <|endoftext|> the last id
    bpe = _byte_bpe([], ["<|endoftext|>"])
    tok = GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>",
                            eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    assert tok.convert_tokens_to_ids("!") == 0
    eot = len(tok) - 1
    GPT2Model(GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=2, n_head=2, n_positions=80,
                         bos_token_id=eot, eos_token_id=eot)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _bert_dir(root):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    out = root / "bert-base-uncased"
    words = sorted({w.strip("!,") for s in CORPUS for w in s.split()} | {"!", ","})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + list("abcdefghijklmnopqrstuvwxyz")
    vocab = {t: i for i, t in enumerate(dict.fromkeys(vocab))}
    tk = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]")
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=128)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _front_end_keys(p, n_fft=256, n_mels=64):
    bins = n_fft // 2 + 1
    return {p + "spectrogram_extractor.stft.conv_real.weight": (bins, 1, n_fft),
            p + "spectrogram_extractor.stft.conv_imag.weight": (bins, 1, n_fft),
            p + "logmel_extractor.melW": (bins, n_mels), p + "bn0.weight": (n_mels,)}


def _htsat_skeleton(dim=8, depths=(2, 1, 1, 1), heads=(1, 1, 2, 2), ws=8, classes=5, d_proj=24):
    """Shapes of the MS-CLAP 2023 parameters (original names) for a small HTSAT."""
    p = "audio_encoder.base.htsat."
    k = _front_end_keys(p)
    k[p + "patch_embed.proj.weight"] = (dim, 1, 4, 4)
    k[p + "patch_embed.norm.weight"] = (dim,)
    res = 64
    for i, (d, h) in enumerate(zip(depths, heads, strict=True)):
        c, w = dim * 2 ** i, min(ws, res)
        for j in range(d):
            b = f"{p}layers.{i}.blocks.{j}."
            k[b + "attn.relative_position_bias_table"] = ((2 * w - 1) ** 2, h)
            k[b + "attn.qkv.bias"] = (3 * c,)
            k[b + "mlp.fc1.weight"] = (4 * c, c)
        res //= 2
    feat = dim * 2 ** (len(depths) - 1)
    k[p + "tscam_conv.weight"] = (classes, feat, 2, 3)
    k[p + "head.weight"] = (classes, classes)
    k["audio_encoder.projection.linear1.weight"] = (d_proj, feat)
    k["caption_encoder.projection.linear1.weight"] = (d_proj, 16)
    return {n: torch.empty(s) for n, s in k.items()}


def _cnn14_skeleton(widths=(4, 4, 8, 8, 8, 8), emb=16, classes=5, d_proj=24):
    p = "audio_encoder.base."
    k = _front_end_keys(p)
    cin = 1
    for i, w in enumerate(widths, 1):
        k[f"{p}conv_block{i}.conv1.weight"] = (w, cin, 3, 3)
        cin = w
    k[p + "fc1.weight"] = (emb, cin)
    k[p + "fc_audioset.weight"] = (classes, emb)
    k["audio_encoder.projection.linear1.weight"] = (d_proj, emb)
    k["caption_encoder.projection.linear1.weight"] = (d_proj, 16)
    return {n: torch.empty(s) for n, s in k.items()}


def _write_msclap(path, version, text_dir):
    """Random weights of the real architecture, saved as msclap does: torch.save({'model': sd})."""
    from transformers import AutoConfig

    from mats.clap.msclap import VERSIONS, MSCLAPModel

    torch.manual_seed(1)
    skel = _htsat_skeleton() if version == "2023" else _cnn14_skeleton()
    model = MSCLAPModel(skel, VERSIONS[version], AutoConfig.from_pretrained(str(text_dir)))
    with torch.no_grad():  # non-trivial batch-norm statistics and position biases
        for n, b in model.named_buffers():
            if n.endswith("running_mean"):
                b.normal_(0, 0.3)
            elif n.endswith("running_var"):
                b.uniform_(0.5, 2.0)
        for n, prm in model.named_parameters():
            if "relative_position_bias_table" in n:
                prm.normal_(0, 0.5)
    sd = model.state_dict()
    torch.save({"model": sd}, path)
    return sd


@pytest.fixture(scope="module")
def msclap_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("msclap")
    gpt2, bert = _gpt2_dir(root), _bert_dir(root)
    p23, p22 = root / "CLAP_weights_2023.pth", root / "CLAP_weights_2022.pth"
    sd23 = _write_msclap(p23, "2023", gpt2)
    _write_msclap(p22, "2022", bert)
    return {"root": root, "gpt2": gpt2, "bert": bert, "2023": p23, "2022": p22, "sd23": sd23}


@pytest.fixture(scope="module")
def laion(laion_dir):
    return load_clap(str(laion_dir), device="cpu")


@pytest.fixture(scope="module")
def ms23(msclap_files):
    return load_clap("msclap-2023:" + str(msclap_files["2023"]), device="cpu", text_model=str(msclap_files["gpt2"]))


@pytest.fixture(scope="module")
def ms22(msclap_files):
    return load_clap("msclap-2022:" + str(msclap_files["2022"]), device="cpu", text_model=str(msclap_files["bert"]))


# ----------------------------------------------------------------------------------------------
# shared contract
# ----------------------------------------------------------------------------------------------
@pytest.fixture(params=["laion", "ms23", "ms22"])
def clap(request):
    return request.getfixturevalue(request.param)


def test_contract_shapes_norms_determinism_batching(clap):
    wins = np.stack([_wave(clap.clip_seconds, clap.sample_rate, seed=s) for s in range(3)])
    assert wins.shape[1] == clap.clip_samples
    a = clap.embed_windows(wins)
    assert a.shape == (3, clap.dim) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a, clap.embed_windows(wins))  # deterministic
    one = np.concatenate([clap.embed_windows(wins[i:i + 1]) for i in range(3)])
    np.testing.assert_allclose(a, one, atol=1e-5)  # batch of 3 == one by one
    assert not np.allclose(a[0], a[1])

    t = clap.encode_text(TEXTS)
    assert t.shape == (3, clap.dim) and t.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(t, clap.encode_text(TEXTS))
    np.testing.assert_allclose(t, np.concatenate([clap.encode_text([s]) for s in TEXTS]), atol=1e-5)
    np.testing.assert_allclose(t, clap.encode_text(TEXTS, batch_size=2), atol=1e-5)
    with pytest.raises((TypeError, ValueError)):
        clap.encode_text("not a list")


def test_long_clip_gives_several_windows(clap):
    x = _wave(23.0, clap.sample_rate)
    we = clap.encode_audio_windows(x)
    expected = int(np.ceil(23.0 / clap.clip_seconds))
    assert we.embeddings.shape == (expected, clap.dim)
    assert we.starts[0] == 0 and abs(we.ends[-1] - 23.0) < 1e-6
    pooled = clap.encode_audio([x])
    assert pooled.shape == (1, clap.dim)
    np.testing.assert_array_equal(pooled, clap.encode_audio([x]))


def test_fingerprint_and_describe(clap):
    fp = clap.fingerprint()
    assert fp == clap.fingerprint() and clap.name in fp
    d = clap.describe()
    assert d["dim"] == clap.dim and d["sample_rate"] == clap.sample_rate


# ----------------------------------------------------------------------------------------------
# LAION specifics
# ----------------------------------------------------------------------------------------------
def test_laion_loading_paths(laion_dir, laion):
    assert laion.name == "clap-htsat-tiny"
    assert (laion.sample_rate, laion.clip_seconds, laion.dim) == (48000, 10.0, 12)
    via_prefix = load_clap("laion:" + str(laion_dir), device="cpu")
    w = _wave(10, 48000)[None]
    np.testing.assert_array_equal(via_prefix.embed_windows(w), laion.embed_windows(w))
    assert via_prefix.fingerprint() == laion.fingerprint()


def test_laion_does_not_touch_numpy_global_rng(laion):
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    laion.embed_windows(_wave(10, 48000)[None])
    assert np.random.rand() == expected


def test_laion_corrupt_weights(laion_dir, tmp_path):
    import shutil

    from mats.clap.laion import CheckpointError

    bad = tmp_path / "broken-clap"
    shutil.copytree(laion_dir, bad)
    (bad / "model.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="could not load LAION-CLAP weights"):
        load_clap("laion:" + str(bad), device="cpu")


def test_laion_hub_id_offline_is_quick_and_clear(monkeypatch, tmp_path):
    from mats.store import ModelNotFoundError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    try:
        import huggingface_hub.constants as hc
        monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True, raising=False)
        monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"), raising=False)
    except ImportError:  # pragma: no cover
        pass
    t0 = time.time()
    with pytest.raises(ModelNotFoundError, match="hub could not be reached"):
        load_clap("laion:laion/clap-htsat-unfused", device="cpu")
    assert time.time() - t0 < 10


# ----------------------------------------------------------------------------------------------
# MS-CLAP specifics
# ----------------------------------------------------------------------------------------------
def test_msclap_real_key_names(msclap_files):
    """The tiny checkpoint uses the parameter names of the original msclap/torchlibrosa modules."""
    keys = set(msclap_files["sd23"])
    for k in ["logit_scale",
              "audio_encoder.base.htsat.spectrogram_extractor.stft.conv_real.weight",
              "audio_encoder.base.htsat.logmel_extractor.melW",
              "audio_encoder.base.htsat.bn0.running_var",
              "audio_encoder.base.htsat.patch_embed.proj.weight",
              "audio_encoder.base.htsat.layers.0.blocks.1.attn_mask",
              "audio_encoder.base.htsat.layers.0.blocks.0.attn.relative_position_index",
              "audio_encoder.base.htsat.layers.0.downsample.reduction.weight",
              "audio_encoder.base.htsat.tscam_conv.weight", "audio_encoder.base.htsat.head.bias",
              "audio_encoder.projection.linear2.weight", "audio_encoder.projection.layer_norm.bias",
              "caption_encoder.base.h.0.attn.c_attn.weight", "caption_encoder.base.ln_f.weight",
              "caption_encoder.projection.linear1.weight"]:
        assert k in keys, k


def test_msclap_properties_and_version_detection(msclap_files, ms23, ms22):
    assert (ms23.version, ms23.sample_rate, ms23.clip_seconds, ms23.dim) == ("2023", 44100, 7.0, 24)
    assert (ms22.version, ms22.sample_rate, ms22.clip_seconds, ms22.dim) == ("2022", 44100, 5.0, 24)
    # bare path (version detected) gives the same model
    bare = load_clap(str(msclap_files["2023"]), device="cpu", text_model=str(msclap_files["gpt2"]))
    assert bare.version == "2023"
    w = _wave(7, 44100)[None]
    np.testing.assert_array_equal(bare.embed_windows(w), ms23.embed_windows(w))
    np.testing.assert_array_equal(bare.encode_text(TEXTS[:1]), ms23.encode_text(TEXTS[:1]))


def test_msclap_text_model_found_beside_checkpoint(msclap_files, ms23):
    # msclap_files puts gpt2/ next to CLAP_weights_2023.pth: no text_model argument needed
    m = load_clap("msclap-2023:" + str(msclap_files["2023"]), device="cpu")
    assert m.text_folder == msclap_files["gpt2"]
    np.testing.assert_array_equal(m.encode_text(TEXTS), ms23.encode_text(TEXTS))


def test_msclap_missing_text_model_is_clear(msclap_files, tmp_path, monkeypatch):
    import shutil

    from mats.clap.msclap import CheckpointError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    lone = tmp_path / "CLAP_weights_2023.pth"
    shutil.copy(msclap_files["2023"], lone)
    with pytest.raises(CheckpointError, match="text_model=PATH"):
        load_clap("msclap-2023:" + str(lone), device="cpu")


def test_msclap_wrong_version(msclap_files):
    from mats.clap.msclap import CheckpointError

    with pytest.raises(CheckpointError, match="MS-CLAP 2023"):
        load_clap("msclap-2022:" + str(msclap_files["2023"]), device="cpu", text_model=str(msclap_files["bert"]))


def test_msclap_corrupt_checkpoints(msclap_files, tmp_path):
    from mats.clap.msclap import CheckpointError

    junk = tmp_path / "junk.pth"
    junk.write_bytes(np.random.default_rng(0).bytes(10_000))
    with pytest.raises(CheckpointError, match="cannot read MS-CLAP checkpoint"):
        load_clap("msclap-2023:" + str(junk), device="cpu", text_model=str(msclap_files["gpt2"]))

    with pytest.raises(CheckpointError, match="does not exist"):
        load_clap("msclap-2023:" + str(tmp_path / "nope.pth"), device="cpu")

    sd = dict(msclap_files["sd23"])
    dropped = [k for k in sd if k.startswith("audio_encoder.base.htsat.layers.1.")][:2]
    for k in dropped:
        del sd[k]
    partial = tmp_path / "partial.pth"
    torch.save({"model": sd}, partial)
    with pytest.raises(CheckpointError, match="missing"):
        load_clap("msclap-2023:" + str(partial), device="cpu", text_model=str(msclap_files["gpt2"]))

    other = tmp_path / "other.pth"
    torch.save({"model": {"encoder.weight": torch.zeros(3, 3)}}, other)
    with pytest.raises(CheckpointError, match="not an MS-CLAP checkpoint"):
        load_clap("msclap-2023:" + str(other), device="cpu", text_model=str(msclap_files["gpt2"]))


def test_msclap_refuses_pickled_objects(msclap_files, tmp_path):
    """weights_only loading: a checkpoint carrying arbitrary Python objects is not unpickled."""
    import argparse

    from mats.clap.msclap import CheckpointError

    evil = tmp_path / "evil.pth"  # training scripts often pickle their argparse args next to the weights
    torch.save({"model": dict(msclap_files["sd23"]), "args": argparse.Namespace(lr=1e-4)}, evil)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_clap("msclap-2023:" + str(evil), device="cpu", text_model=str(msclap_files["gpt2"]))


def test_msclap_safetensors(msclap_files, ms23, tmp_path):
    from mats.clap.msclap import convert_checkpoint

    st = convert_checkpoint(msclap_files["2023"], tmp_path / "CLAP_weights_2023.safetensors")
    m = load_clap("msclap-2023:" + str(st), device="cpu", text_model=str(msclap_files["gpt2"]))
    w = _wave(7, 44100)[None]
    np.testing.assert_array_equal(m.embed_windows(w), ms23.embed_windows(w))


def test_msclap_long_text_truncated_deterministically(ms23, ms22):
    long = " ".join(["a dog barks and rain on a roof"] * 40)
    for m in (ms23, ms22):
        e = m.encode_text([long, "a dog barks"])
        assert e.shape == (2, m.dim) and np.isfinite(e).all()
