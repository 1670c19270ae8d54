"""LAION-CLAP through Hugging Face ``transformers`` (``ClapModel`` + ``ClapProcessor``).

Pointing at real weights
------------------------
Nothing is downloaded at run time unless you pass a hub id *and* a hub is reachable. On a machine
with hub access, fetch a checkpoint once::

    huggingface-cli download laion/clap-htsat-unfused --local-dir ~/models/clap-htsat-unfused

and use the folder (it holds ``config.json`` with ``model_type: clap``, the weights, the
``preprocessor_config.json`` of the feature extractor and the RoBERTa tokenizer files)::

    load_clap("laion:~/models/clap-htsat-unfused")   # or simply load_clap("~/models/clap-htsat-unfused")
    load_clap("laion:laion/clap-htsat-unfused")      # hub id: local HF cache first, then the hub

``laion/clap-htsat-fused``, ``laion/larger_clap_general`` and ``laion/larger_clap_music`` work the
same way (512-d embeddings, 48 kHz, 10 s windows).

Determinism
-----------
The shared windowing hands this backend windows of exactly ``max_length_s`` seconds (10 s), so the
feature extractor never takes its random-crop branch (``rand_trunc`` crops only inputs *longer* than
the maximum). For fused checkpoints (``enable_fusion: true``) the extractor, when no input in a batch
is longer than 10 s, marks a random one as "longer" so that it goes through the fusion branch; that
makes an embedding depend on the batch and on numpy's global RNG. Here ``is_longer`` is always
``False`` (a 10 s window is not longer than 10 s), and numpy's global RNG state is restored after
feature extraction so callers' seeded streams are not disturbed.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..devices import pick_device
from .base import CLAP, encode_texts_batched, l2_normalize

__all__ = ["LaionCLAP", "CheckpointError", "files_digest"]


try:  # one error type for "this checkpoint cannot be used", shared with the MS-CLAP backend
    from ..store import ModelStoreError as _Base
except Exception:  # pragma: no cover
    _Base = RuntimeError


class CheckpointError(_Base):
    """A checkpoint is missing, corrupt, or not the architecture it claims to be."""


def files_digest(paths: Iterable[Path], content_files: Iterable[Path] = (), head: int = 1 << 20) -> str:
    """Cheap, copy-stable identity of a set of weight files: name, size and the first/last MiB of
    each (weights), plus the full bytes of small config files. Not mtime, so copying a checkpoint
    does not invalidate embedding caches, while re-training or swapping weights does."""
    h = hashlib.sha256()
    for p in sorted(Path(p) for p in content_files):
        if p.is_file():
            h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    for p in sorted(Path(p) for p in paths):
        if not p.is_file():
            continue
        size = p.stat().st_size
        h.update(f"{p.name}\0{size}\0".encode())
        with open(p, "rb") as f:
            h.update(f.read(head))
            if size > 2 * head:
                f.seek(size - head)
                h.update(f.read(head))
    return h.hexdigest()[:16]


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_CONFIG_FILES = ("config.json", "preprocessor_config.json", "processor_config.json",
                 "tokenizer_config.json", "special_tokens_map.json")


class LaionCLAP(CLAP):
    """LAION-CLAP (HTSAT audio tower + RoBERTa text tower) from a local folder or a hub id.

    ``path_or_id``: a folder saved with ``save_pretrained`` (or a hub snapshot), or a hub id such as
    ``laion/clap-htsat-unfused`` (resolved through the local HF cache; needs a hub otherwise).
    ``device``: ``None`` picks ``cuda`` when available, else ``cpu``.
    ``text_max_length``: token limit for texts (77, as in LAION-CLAP training).
    """

    def __init__(self, path_or_id: str | os.PathLike, device: str | None = None, *,
                 text_max_length: int = 77, max_seconds: float | None = None, **kwargs):
        if kwargs:
            raise TypeError(f"LaionCLAP got unexpected arguments: {', '.join(sorted(kwargs))}")
        import torch
        from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

        from .. import store

        spec = str(path_or_id).strip()
        if not spec:
            raise ValueError("LaionCLAP needs a checkpoint folder or hub id, e.g. "
                             "'laion:/models/clap-htsat-unfused' or 'laion:laion/clap-htsat-unfused'")
        is_local = Path(spec).expanduser().exists()
        folder = store.resolve(spec, kind="LAION-CLAP")
        if folder.is_file():
            raise CheckpointError(
                f"LAION-CLAP {spec!r} is a file; pass the folder that holds config.json, the weights, "
                "preprocessor_config.json and the tokenizer files (as written by save_pretrained)")
        cfg_path = folder / "config.json"
        if not cfg_path.is_file():
            raise CheckpointError(f"LAION-CLAP folder {folder} has no config.json; it is not a "
                                  "transformers checkpoint (expected the laion/clap-htsat-* layout)")
        try:
            cfg = json.loads(cfg_path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{cfg_path} is not valid JSON ({e})") from None
        if cfg.get("model_type") != "clap":
            raise CheckpointError(f"{cfg_path} says model_type={cfg.get('model_type')!r}, not 'clap'")

        self.path = folder
        self.name = Path(spec).expanduser().resolve().name if is_local else spec
        self.device = str(pick_device(device))
        self.text_max_length = int(text_max_length)
        if max_seconds is not None:
            self.max_seconds = float(max_seconds)

        try:
            model = ClapModel.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
        except Exception as e:
            raise CheckpointError(
                f"could not load LAION-CLAP weights from {folder}: {type(e).__name__}: {e}. "
                "The weights file is missing or corrupt; download the checkpoint again") from e
        self.model = model.to(self.device).eval()
        try:
            self.feature_extractor = ClapFeatureExtractor.from_pretrained(str(folder), local_files_only=True)
        except Exception as e:
            raise CheckpointError(
                f"{folder} has no usable ClapFeatureExtractor settings (preprocessor_config.json): {e}") from e
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except Exception as e:
            raise CheckpointError(f"{folder} has no usable tokenizer files: {e}") from e

        acfg = self.model.config.audio_config
        fe = self.feature_extractor
        # The fusion branch needs the 4-channel "fusion" features; unfused models the single-channel
        # slaney-mel features of "rand_trunc". Follow the model, not a possibly stale processor file.
        self.truncation = "fusion" if getattr(acfg, "enable_fusion", False) else "rand_trunc"
        if fe.truncation != self.truncation:
            warnings.warn(f"{folder}: preprocessor truncation={fe.truncation!r} does not match the model "
                          f"(enable_fusion={acfg.enable_fusion}); using {self.truncation!r}", stacklevel=2)
        if fe.feature_size != acfg.num_mel_bins:
            raise CheckpointError(f"{folder}: feature extractor makes {fe.feature_size} mel bins but the "
                                  f"audio model expects {acfg.num_mel_bins}")
        self.padding = fe.padding
        self.sample_rate = int(fe.sampling_rate)
        self.clip_seconds = float(fe.max_length_s)
        self.dim = int(self.model.config.projection_dim)
        self._fingerprint = None

    # -- CLAP interface ----------------------------------------------------------------------
    def _features(self, w: np.ndarray):
        import torch

        state = np.random.get_state()
        try:
            feats = self.feature_extractor(
                list(w), sampling_rate=self.sample_rate, truncation=self.truncation,
                padding=self.padding, max_length=self.clip_samples, return_tensors="np")
        finally:
            np.random.set_state(state)
        x = torch.as_tensor(np.asarray(feats["input_features"], dtype=np.float32), device=self.device)
        longer = torch.zeros((len(w), 1), dtype=torch.bool, device=self.device)
        return x, longer

    @staticmethod
    def _pooled(out):
        import torch

        if isinstance(out, torch.Tensor):  # transformers 4.x returns the projected tensor
            return out
        return out.pooler_output  # 5.x: model output whose pooler_output is the projected embedding

    def embed_windows(self, windows: np.ndarray) -> np.ndarray:
        import torch

        w = self.fit_windows(windows)
        if len(w) == 0:
            return np.zeros((0, self.dim), np.float32)
        x, longer = self._features(w)
        with torch.inference_mode():
            emb = self._pooled(self.model.get_audio_features(input_features=x, is_longer=longer))
        return l2_normalize(emb.float().cpu().numpy())

    def encode_text(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        import torch

        def encode_batch(batch: list[str]) -> np.ndarray:
            tok = self.tokenizer(batch, padding=True, truncation=True,
                                 max_length=self.text_max_length, return_tensors="pt")
            tok = {k: v.to(self.device) for k, v in tok.items() if k in ("input_ids", "attention_mask")}
            with torch.inference_mode():
                return self._pooled(self.model.get_text_features(**tok)).float().cpu().numpy()

        return encode_texts_batched(texts, batch_size, self.dim, encode_batch)

    # -- identity ----------------------------------------------------------------------------
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            weights = [p for p in self.path.iterdir() if p.suffix in _WEIGHT_SUFFIXES]
            configs = [self.path / n for n in _CONFIG_FILES]
            digest = files_digest(weights, configs)
            self._fingerprint = (f"laion:{self.name}:{digest}:sr{self.sample_rate}:"
                                 f"clip{self.clip_seconds:g}:{self.truncation}:tok{self.text_max_length}")
        return self._fingerprint

    def describe(self) -> dict:
        d = super().describe()
        d.update({"backend": "laion", "path": str(self.path), "device": self.device,
                  "fusion": self.truncation == "fusion"})
        return d
