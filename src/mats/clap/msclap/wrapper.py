"""The MS-CLAP model as a MATS :class:`~mats.clap.base.CLAP`: projections, audio and text encoders,
finding the text model's tokenizer offline, tokenisation as msclap does it, and identity.

This is the only module the rest of MATS talks to; the checkpoint, front end and encoders below it
know nothing of the CLAP interface.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...devices import pick_device
from ..base import CLAP, encode_texts_batched, l2_normalize
from ..laion import files_digest
from .checkpoint import _BENIGN_UNEXPECTED, _TEXT, VERSIONS, CheckpointError, _need, detect_version, load_state_dict
from .cnn14 import Cnn14
from .htsat import _HTSATWrapper


class Projection(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear1 = nn.Linear(d_in, d_out, bias=False)
        self.linear2 = nn.Linear(d_out, d_out, bias=False)
        self.layer_norm = nn.LayerNorm(d_out)

    def forward(self, x):
        e1 = self.linear1(x)
        return self.layer_norm(e1 + self.linear2(F.gelu(e1)))


class _AudioEncoder(nn.Module):
    def __init__(self, sd, cfg):
        super().__init__()
        self.base = _HTSATWrapper(sd, cfg) if cfg["audio"] == "HTSAT" else Cnn14(sd, cfg)
        w = _need(sd, "audio_encoder.projection.linear1.weight")
        if w.shape[1] != self.base.out_dim:
            raise CheckpointError(f"audio projection takes {w.shape[1]} inputs "
                                  f"but the encoder gives {self.base.out_dim}")
        self.projection = Projection(w.shape[1], w.shape[0])

    def forward(self, wave):
        return self.projection(self.base(wave))


class _TextEncoder(nn.Module):
    def __init__(self, sd, cfg, text_config):
        super().__init__()
        from transformers import AutoModel

        self.kind = cfg["text"]
        self.base = AutoModel.from_config(text_config)
        w = _need(sd, "caption_encoder.projection.linear1.weight")
        self.projection = Projection(w.shape[1], w.shape[0])

    def forward(self, input_ids, attention_mask, token_type_ids=None, pad_id: int = 0):
        if self.kind == "gpt2":
            hidden = self.base(input_ids=input_ids, attention_mask=attention_mask)[0]
            # The original picks the state at (#tokens != pad id) - 1, pad id being "!" (0 in GPT-2).
            last = torch.ne(input_ids, pad_id).sum(-1) - 1
            out = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        else:
            kw = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            out = self.base(input_ids=input_ids, attention_mask=attention_mask, **kw)[0][:, 0, :]
        return self.projection(out)


class MSCLAPModel(nn.Module):
    def __init__(self, sd: dict, cfg: dict, text_config):
        super().__init__()
        self.audio_encoder = _AudioEncoder(sd, cfg)
        self.caption_encoder = _TextEncoder(sd, cfg, text_config)
        self.logit_scale = nn.Parameter(torch.ones([]) * np.log(1 / 0.07))


# ----------------------------------------------------------------------------------------------
# the backend
# ----------------------------------------------------------------------------------------------
def _text_config(sd: dict, folder: Path | None, kind: str):
    from transformers import AutoConfig, BertConfig, GPT2Config

    if folder is not None and (folder / "config.json").is_file():
        try:
            return AutoConfig.from_pretrained(str(folder), local_files_only=True)
        except Exception as e:
            raise CheckpointError(f"text model config in {folder} is unreadable: {e}") from e
    # No config: derive the sizes from the checkpoint (heads assume 64-d heads, as gpt2/bert-base).
    if kind == "gpt2":
        wte = _need(sd, _TEXT + "wte.weight")
        n_layer = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"caption_encoder\.base\.h\.(\d+)\.", k)))
        return GPT2Config(vocab_size=wte.shape[0], n_embd=wte.shape[1], n_layer=n_layer,
                          n_head=max(1, wte.shape[1] // 64), n_positions=_need(sd, _TEXT + "wpe.weight").shape[0])
    we = _need(sd, _TEXT + "embeddings.word_embeddings.weight")
    layer = re.compile(r"caption_encoder\.base\.encoder\.layer\.(\d+)\.")
    n_layer = 1 + max(int(m.group(1)) for k in sd if (m := layer.match(k)))
    return BertConfig(vocab_size=we.shape[0], hidden_size=we.shape[1], num_hidden_layers=n_layer,
                      num_attention_heads=max(1, we.shape[1] // 64),
                      intermediate_size=_need(sd, _TEXT + "encoder.layer.0.intermediate.dense.weight").shape[0],
                      max_position_embeddings=_need(sd, _TEXT + "embeddings.position_embeddings.weight").shape[0])


def _find_text_model(text_model, ckpt: Path, version: str) -> Path:
    from ... import store

    names = VERSIONS[version]["text_names"]
    if text_model is not None:
        return store.resolve(str(text_model), kind=f"MS-CLAP {version} text model")
    for n in names:  # a folder beside the checkpoint
        for cand in (ckpt.parent / n, ckpt.parent / n.replace("/", "_"), ckpt.parent / n.split("/")[-1]):
            if cand.is_dir():
                return cand
    try:  # the local Hugging Face cache, never the network here
        from huggingface_hub import snapshot_download
        for n in names:
            try:
                return Path(snapshot_download(n, local_files_only=True))
            except Exception:
                pass
    except ImportError:  # pragma: no cover
        pass
    raise CheckpointError(
        f"MS-CLAP {version} needs the tokenizer of {names[0]!r}, which is not beside the checkpoint "
        f"({ckpt.parent / names[0].split('/')[-1]}) nor in the local Hugging Face cache. Pass "
        f"text_model=PATH to a folder holding it (e.g. `huggingface-cli download {names[-1]} --local-dir DIR` "
        "on a machine with hub access)")


class MSCLAP(CLAP):
    """Microsoft CLAP 2022/2023 from a local ``.pth``/``.safetensors`` checkpoint.

    ``version``: ``"2022"``, ``"2023"`` or ``None`` (detected from the weights).
    ``text_model``: folder (or cached hub id) with the text model's tokenizer + config
    (``gpt2`` for 2023, ``bert-base-uncased`` for 2022); its weights are not needed, the CLAP
    checkpoint carries them (used only if the checkpoint has no text-encoder weights at all).
    ``device``: ``None`` picks ``cuda`` when available, else ``cpu``.
    """

    def __init__(self, path: str | os.PathLike, version: str | None = None, device: str | None = None, *,
                 text_model: str | os.PathLike | None = None, max_seconds: float | None = None, **kwargs):
        if kwargs:
            raise TypeError(f"MSCLAP got unexpected arguments: {', '.join(sorted(kwargs))}")
        if not str(path).strip():
            raise ValueError("MSCLAP needs a checkpoint path, e.g. 'msclap-2023:/models/CLAP_weights_2023.pth'")
        if version is not None and str(version) not in VERSIONS:
            raise ValueError(f"unknown MS-CLAP version {version!r}; use '2022' or '2023'")
        ckpt = Path(path).expanduser().resolve()
        sd = load_state_dict(ckpt)
        detected = detect_version(sd)
        if version is not None and str(version) != detected:
            raise CheckpointError(f"{ckpt.name} holds an MS-CLAP {detected} model "
                                  f"({VERSIONS[detected]['audio']}), not {version}; use msclap-{detected}:PATH")
        self.version = detected
        cfg = dict(VERSIONS[detected])
        self._cfg = cfg
        self.ckpt = ckpt
        self.name = f"msclap-{detected}:{ckpt.name}"
        self.sample_rate = cfg["sample_rate"]
        self.clip_seconds = float(cfg["duration"])
        self.text_len = cfg["text_len"]
        if max_seconds is not None:
            self.max_seconds = float(max_seconds)
        self.device = str(pick_device(device))

        tfolder = _find_text_model(text_model, ckpt, detected)
        self.text_folder = tfolder
        from transformers import AutoModel, AutoTokenizer
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(tfolder), local_files_only=True)
        except Exception as e:
            raise CheckpointError(f"no usable tokenizer in text model folder {tfolder}: {e}") from e

        sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
        has_text = any(k.startswith(_TEXT) for k in sd)
        try:
            model = MSCLAPModel(sd, cfg, _text_config(sd, tfolder, cfg["text"]))
        except CheckpointError:
            raise
        except (RuntimeError, ValueError, KeyError, IndexError) as e:
            raise CheckpointError(f"{ckpt.name}: weights do not form an MS-CLAP {detected} model ({e})") from e
        if not has_text:
            warnings.warn(f"{ckpt.name} has no text-encoder weights; taking them from {tfolder}", stacklevel=2)
            try:
                model.caption_encoder.base = AutoModel.from_pretrained(str(tfolder), local_files_only=True)
            except Exception as e:
                raise CheckpointError(f"{ckpt.name} has no text-encoder weights and {tfolder} has none "
                                      f"usable either: {e}") from e
            sd = {**sd, **{_TEXT + k: v for k, v in model.caption_encoder.base.state_dict().items()}}
        self._load_strict(model, sd)
        self.model = model.to(self.device).eval()
        self.dim = int(model.audio_encoder.projection.linear1.weight.shape[0])
        if self.dim != model.caption_encoder.projection.linear1.weight.shape[0]:
            raise CheckpointError(f"{ckpt.name}: audio and text projections differ in size")
        self.pad_id, self.eot_id = self._special_ids()
        self._fingerprint = None

    def _load_strict(self, model: nn.Module, sd: dict):
        expected = model.state_dict()
        missing = [k for k in expected if k not in sd]
        if missing:
            raise CheckpointError(
                f"{self.ckpt.name} is missing {len(missing)} MS-CLAP {self.version} weights, e.g. "
                f"{', '.join(missing[:5])}: the file is truncated or not this model")
        bad = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if sd[k].shape != v.shape]
        if bad:
            raise CheckpointError(f"{self.ckpt.name}: weight shapes do not fit the text model config or "
                                  f"architecture: {'; '.join(bad[:4])}")
        unexpected = [k for k in sd if k not in expected and not _BENIGN_UNEXPECTED.match(k)]
        if unexpected:
            warnings.warn(f"{self.ckpt.name}: ignoring {len(unexpected)} weights this model does not use, "
                          f"e.g. {', '.join(unexpected[:3])}", stacklevel=3)
        model.load_state_dict({k: sd[k] for k in expected}, strict=True)

    def _special_ids(self):
        tok = self.tokenizer
        if self._cfg["text"] == "gpt2":
            vocab = tok.get_vocab()
            if "<|endoftext|>" not in vocab:
                raise CheckpointError(f"tokenizer in {self.text_folder} has no <|endoftext|> token; "
                                      "it is not the GPT-2 tokenizer")
            # msclap sets pad_token "!" (id 0 in GPT-2) and finds the last token by counting ids != pad.
            pad, eot = vocab.get("!", 0), vocab["<|endoftext|>"]
            return int(pad), int(eot)
        return int(tok.pad_token_id if tok.pad_token_id is not None else 0), None

    # -- CLAP interface ----------------------------------------------------------------------
    def embed_windows(self, windows: np.ndarray) -> np.ndarray:
        w = self.fit_windows(windows)
        if len(w) == 0:
            return np.zeros((0, self.dim), np.float32)
        with torch.inference_mode():
            emb = self.model.audio_encoder(torch.as_tensor(w, device=self.device))
        return l2_normalize(emb.float().cpu().numpy())

    def _tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        L = self.text_len
        if self._cfg["text"] == "gpt2":
            rows = []
            for t in texts:
                ids = self.tokenizer(t + " <|endoftext|>", add_special_tokens=True)["input_ids"]
                if len(ids) > L:  # keep the end-of-text token the embedding is read from
                    ids = ids[:L - 1] + [self.eot_id]
                rows.append(ids)
            ids = torch.full((len(rows), L), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), L), dtype=torch.long)
            for i, r in enumerate(rows):
                ids[i, :len(r)] = torch.tensor(r)
                mask[i, :len(r)] = 1
            return {"input_ids": ids, "attention_mask": mask}
        tok = self.tokenizer(texts, padding="max_length", truncation=True, max_length=L, return_tensors="pt")
        return {k: tok[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in tok}

    def encode_text(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        def encode_batch(batch: list[str]) -> np.ndarray:
            tok = {k: v.to(self.device) for k, v in self._tokenize(batch).items()}
            with torch.inference_mode():
                return self.model.caption_encoder(**tok, pad_id=self.pad_id).float().cpu().numpy()

        return encode_texts_batched(texts, batch_size, self.dim, encode_batch)

    # -- identity ----------------------------------------------------------------------------
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            tfiles = [self.text_folder / n for n in ("config.json", "tokenizer.json", "vocab.json", "merges.txt",
                                                     "vocab.txt", "tokenizer_config.json")]
            digest = files_digest([self.ckpt], tfiles)
            self._fingerprint = (f"{self.name}:{digest}:sr{self.sample_rate}:clip{self.clip_seconds:g}"
                                 f":tok{self.text_len}")
        return self._fingerprint

    def describe(self) -> dict:
        d = super().describe()
        d.update({"backend": "msclap", "version": self.version, "checkpoint": str(self.ckpt),
                  "text_model": str(self.text_folder), "device": self.device})
        return d
