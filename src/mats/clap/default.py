"""The offline default CLAP: YAMNet tags bridged into all-MiniLM-L6-v2 text space.

No CLAP with weights installs offline, so this one is assembled from two real models:

- text side: all-MiniLM-L6-v2 sentence embeddings of the plain text (training encodes captions this
  way, so nothing is added to the text);
- audio side (the "label bridge"): YAMNet scores the 521 AudioSet classes on 0.96 s patches; the
  patch scores are pooled over the window, turned into class weights, and the audio embedding is the
  normalised weighted sum of MiniLM embeddings of the class names (written with ``label_prompt``).

Settings were chosen by zero-shot top-1 accuracy on the real-sound set (``mats.data.sounds``: 91 clips,
45 classes, from sound-theme-freedesktop, openttd-opensfx and wesnoth-1.16-data; labels come from
file names). ``python benchmarks/clap_alignment.py`` reproduces every number here:

- naive bridge (max-pool, softmax at T=1 over all 521 classes): 30/91 (33 %), top-5 62 %;
- pooling alone barely matters (mean 28, top-3 patches 30, energy-weighted 28): the defaults use the
  mean of the patch logits, which is the most stable with repeat-padded short clips;
- sharper weights (T=0.5, keep the 5 best classes) and lowering ``Silence``/``Sound effect``/room
  classes by ``generic_penalty`` = 2: 31/91;
- the change that matters: lowering the broad ontology parents (``Vehicle``, ``Animal``, ``Music``,
  ``Musical instrument``, ...) by ``parent_penalty`` = 4, so the specific child ("Aircraft",
  "Trumpet", "Growling") carries the embedding: 41/91 (45 %), top-5 64 %;
- tried and not kept: label prompt "{label}" (same) or "a recording of {label}" (worse, 27); short
  clips scored as one patch instead of repeat-padded (worse, 28); T=1 (40); top-3 classes (42, one
  clip, within noise).

Remaining modality gap (defaults, same set, label texts "the sound of {label}"): audio embeddings
have mean cosine 0.75 to their own label's text and 0.58 to the other labels' texts (margin 0.17);
a caption made of the label's synonyms has cosine 0.63 to the label text. All bridged audio
embeddings are convex mixtures of AudioSet label sentences, so they sit in a narrow cone of the
MiniLM space; Santa and the training noise are there to absorb that.

Known misses: none of the three bell clips is classed "bell" (YAMNet hears the desktop bell as
"Synthesizer"/"Plop", the Wesnoth bell as "Music"/"Arrow", the level-crossing bell as a train);
ship and car horns come out as music, wind as aircraft.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np

from .base import CLAP, l2_normalize
from .yamnet import HOP, PATCH_FRAMES, PATCH_HOP, SAMPLE_RATE, WINDOW, YAMNet, patches

# AudioSet classes that fire on many clips without saying what made the sound.
GENERIC_CLASSES = (
    "Silence", "Sound effect", "Inside, small room", "Inside, large room or hall",
    "Outside, urban or manmade", "Outside, rural or natural", "Environmental noise",
    "Noise", "Static", "Hubbub, speech noise, speech babble", "Echo", "Reverberation",
)

# Broad AudioSet ontology parents: they co-fire with (and out-score) the specific child that names
# the source ("Vehicle" over "Aircraft", "Music" over "Trumpet", "Animal" over "Growling").
PARENT_CLASSES = (
    "Vehicle", "Motor vehicle (road)", "Animal", "Domestic animals, pets", "Wild animals",
    "Livestock, farm animals, working animals", "Music", "Musical instrument", "Mechanisms",
    "Tools", "Liquid", "Domestic sounds, home sounds", "Sounds of things",
)

POOLINGS = ("max", "mean", "topk", "energy")


class DefaultCLAP(CLAP):
    name = "yamnet-minilm"
    dim = 384
    sample_rate = SAMPLE_RATE
    clip_seconds = 10.0

    def __init__(self, device: str | None = None, *, label_prompt: str = "the sound of {label}",
                 pooling: str = "mean", temperature: float = 0.5, top_classes: int | None = 5,
                 generic_penalty: float = 2.0, parent_penalty: float = 4.0, top_patches: int = 3,
                 short_clip: str = "repeat",
                 yamnet_path=None, minilm_path=None, num_threads: int | None = None, text_encoder=None):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if short_clip not in ("repeat", "single"):
            raise ValueError(f"short_clip must be 'repeat' or 'single', got {short_clip!r}")
        if temperature <= 0:
            raise ValueError("temperature must be positive")
        if "{label}" not in label_prompt:
            raise ValueError("label_prompt must contain '{label}'")
        self.device = device or "cpu"
        self.label_prompt, self.pooling, self.temperature = label_prompt, pooling, float(temperature)
        self.top_classes, self.generic_penalty = top_classes, float(generic_penalty)
        self.parent_penalty = float(parent_penalty)
        self.top_patches, self.short_clip = int(top_patches), short_clip
        self.tagger = YAMNet(yamnet_path, num_threads=num_threads)
        # text_encoder: the same MiniLM already loaded elsewhere (the ONNX Runtime path's,
        # mats.onnx.engine.OnnxTextEncoder); by default the torch one
        if text_encoder is None:
            from .minilm import MiniLMTextEncoder
            text_encoder = MiniLMTextEncoder(minilm_path, device=self.device)
        self.text_encoder = text_encoder
        self.class_names = self.tagger.class_names
        self._label_cache: dict[str, np.ndarray] = {}
        generic = set(GENERIC_CLASSES)
        self._generic_mask = np.array([n in generic for n in self.class_names])
        parents = set(PARENT_CLASSES)
        self._parent_mask = np.array([n in parents for n in self.class_names])

    # -- settings ---------------------------------------------------------------------------------
    def settings(self) -> dict:
        return {"label_prompt": self.label_prompt, "pooling": self.pooling, "temperature": self.temperature,
                "top_classes": self.top_classes, "generic_penalty": self.generic_penalty,
                "parent_penalty": self.parent_penalty,
                "top_patches": self.top_patches, "short_clip": self.short_clip}

    def with_settings(self, **changes) -> "DefaultCLAP":
        """A copy sharing the loaded models, with other bridge settings (used to compare them)."""
        unknown = set(changes) - set(self.settings())
        if unknown:
            raise TypeError(f"unknown settings {sorted(unknown)}")
        other = copy.copy(self)
        for k, v in changes.items():
            setattr(other, k, v)
        return other

    def fingerprint(self) -> str:
        s = self.settings()
        return self.name + "|" + "|".join(f"{k}={s[k]}" for k in sorted(s))

    def describe(self) -> dict:
        return {**super().describe(), **self.settings()}

    # -- text -------------------------------------------------------------------------------------
    def encode_text(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return self.text_encoder.encode(texts, batch_size=batch_size)

    def label_embeddings(self) -> np.ndarray:
        """[521, 384] MiniLM embeddings of the class names written with ``label_prompt``, cached in
        memory and on disk (encoding them is a visible share of a fresh `mats tag`: docs/speed.md,
        "Starting a fresh `mats tag FILE`")."""
        if self.label_prompt not in self._label_cache:
            texts = [self.label_prompt.format(label=n) for n in self.class_names]
            self._label_cache[self.label_prompt] = self._label_embeddings_from_disk(texts)
        return self._label_cache[self.label_prompt]

    def _label_embeddings_from_disk(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        import hashlib
        import json
        import os

        from safetensors.numpy import load_file, save_file

        from .. import store

        # Keyed by the encoder's weights, the texts (prompt and class names) and the batch size,
        # which decides the padding and so the last bits of each embedding.
        key = json.dumps({"encoder": self.text_encoder.fingerprint(), "texts": texts, "batch": batch_size})
        path = store.mats_home() / "label-cache" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.safetensors"
        if path.is_file():
            try:
                return load_file(str(path))["embeddings"]
            except Exception:  # a damaged cache file is recomputed, never trusted
                pass
        emb = np.ascontiguousarray(self.encode_text(texts, batch_size=batch_size), dtype=np.float32)
        tmp = store.unique_partial(path)  # no other writer (process or thread) shares this name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({"embeddings": emb}, str(tmp))
            os.replace(tmp, path)
        except OSError:  # a read-only cache directory only costs the recomputation
            pass
        finally:
            tmp.unlink(missing_ok=True)
        return emb

    # -- audio ------------------------------------------------------------------------------------
    def windows(self, wave: np.ndarray):
        if self.short_clip == "single" and wave.size < self.clip_samples:
            # Score a short sound as itself (padded to one YAMNet patch), not as a repeated train of it.
            from ..audio import split_windows
            one_patch = (WINDOW - HOP + PATCH_FRAMES * HOP) / self.sample_rate
            return split_windows(wave, self.sample_rate, max(one_patch, wave.size / self.sample_rate))
        return super().windows(wave)

    def patch_scores(self, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """YAMNet logits [P, 521] of one window and the RMS energy of each patch [P]."""
        p = patches(window)
        scores = self.tagger.scores_from_patches(p)
        hop, span = PATCH_HOP * HOP, PATCH_FRAMES * HOP + WINDOW - HOP
        x = np.asarray(window, np.float32)
        energy = np.array([np.sqrt(np.mean(x[i * hop:i * hop + span] ** 2) + 1e-12) for i in range(len(p))])
        return scores, energy.astype(np.float32)

    def class_weights(self, scores: np.ndarray, energy: np.ndarray) -> np.ndarray:
        """Pooled, penalised, sharpened class weights [521] (sum 1) from patch logits [P, 521]."""
        if self.pooling == "max":
            pooled = scores.max(0)
        elif self.pooling == "mean":
            pooled = scores.mean(0)
        elif self.pooling == "topk":
            k = min(self.top_patches, len(scores))
            pooled = np.sort(scores, axis=0)[-k:].mean(0)
        else:  # energy: loud patches speak for the window
            w = energy / max(float(energy.sum()), 1e-12)
            pooled = (scores * w[:, None]).sum(0)
        logits = (pooled.astype(np.float64) - self.generic_penalty * self._generic_mask
                  - self.parent_penalty * self._parent_mask)
        if self.top_classes:
            # Ties broken by class index, so the result never depends on sort stability.
            keep = np.lexsort((np.arange(len(logits)), -logits))[:self.top_classes]
            mask = np.full_like(logits, -np.inf)
            mask[keep] = 0.0
            logits = logits + mask
        z = logits / self.temperature
        z = np.exp(z - z.max())
        return (z / z.sum()).astype(np.float32)

    def bridge(self, scores: np.ndarray, energy: np.ndarray) -> np.ndarray:
        return l2_normalize(self.class_weights(scores, energy) @ self.label_embeddings())

    def embed_windows(self, windows: np.ndarray) -> np.ndarray:
        windows = np.asarray(windows, dtype=np.float32)
        if windows.ndim != 2:
            raise ValueError(f"embed_windows takes [W, samples] waveforms, got shape {windows.shape}")
        return np.stack([self.bridge(*self.patch_scores(w)) for w in windows]).astype(np.float32)
