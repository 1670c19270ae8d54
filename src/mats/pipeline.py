"""Inference: audio files in, captions / tags / answers out.

    from mats import MATS
    m = MATS.from_pretrained()            # the offline default model, or a model folder
    m.caption(["dog.wav", "rain.ogg"])    # ['A dog barks.', ...]
    m.tag(["dog.wav"])                    # [['dog', 'bark']]
    m.ask("dog.wav", "What animal is this?")

The path through the method: CLAP audio embedding -> gap bridge (Santa by default) -> mapper ->
LLM. ``embed_audio`` and ``generate`` expose the two halves, so evaluation can embed once and try
every bridge.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from .bridge.bridges import BRIDGES, BridgeConfig, apply_bridge
from .model import MATSModel, Request
from .prompts import get_task, instruction_for

DEFAULT_MODEL = Path(__file__).resolve().parent / "resources" / "default_model"

__all__ = ["MATS", "Result", "DEFAULT_MODEL", "split_tags"]


@dataclass
class Result:
    """One output line: a file (or one window of it), the task and the generated text."""

    file: str
    task: str
    text: str | None = None
    tags: list[str] | None = None
    question: str | None = None
    start: float | None = None
    end: float | None = None
    error: str | None = None
    bridge: str | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def split_tags(text: str) -> list[str]:
    """'dog, bark and car.' -> ['dog', 'bark', 'car'] (deduplicated, order kept)."""
    parts = re.split(r",|;|\band\b|\n", text)
    seen: dict[str, None] = {}
    for p in parts:
        p = p.strip().strip(".").strip()
        if p and p.lower() not in (s.lower() for s in seen):
            seen[p] = None
    return list(seen)


class MATS:
    """A loaded MATS model with its CLAP and bridge memory. Deterministic: same input, same output."""

    def __init__(self, model: MATSModel, clap, folder: Path, santa=None, shift: np.ndarray | None = None):
        self.model = model
        self.clap = clap
        self.folder = folder
        self.santa = santa
        self.shift = shift

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike | None = None, device: str | None = None,
                        dtype: str | None = None, clap=None, threads: int | None = None) -> "MATS":
        """``threads``: CPU threads for torch and onnxruntime (default: ``MATS_THREADS`` or the
        cores available to this process; see mats.threads)."""
        from . import threads as threads_
        from .bridge.santa import SantaMemory
        from .clap import load_clap

        threads_.configure(threads)

        folder = Path(folder) if folder is not None else DEFAULT_MODEL
        if not (folder / "config.json").is_file():
            if folder == DEFAULT_MODEL:
                raise FileNotFoundError(
                    f"the default model is missing at {folder}; reinstall mats or train it with "
                    "`mats corpus build && mats train --config configs/default.json`")
            raise FileNotFoundError(f"{folder} is not a MATS model folder (no config.json)")
        model = MATSModel.from_pretrained(folder, device=device, dtype=dtype)
        clap = clap if clap is not None else load_clap(model.config.clap, device=device)
        if clap.dim != model.config.mapper.clap_dim:
            raise ValueError(f"CLAP {clap.name} has dim {clap.dim}, the model expects "
                             f"{model.config.mapper.clap_dim}")
        santa = SantaMemory.load(folder / "santa") if (folder / "santa" / "santa.json").is_file() else None
        shift = None
        if (folder / "shift.safetensors").is_file():
            from .gap import load_shift
            shift = load_shift(folder / "shift.safetensors")
        return cls(model, clap, folder, santa, shift)

    # -- the two halves ------------------------------------------------------------------------
    def embed_audio(self, audio: Sequence) -> np.ndarray:
        """CLAP audio embeddings [N, D] (windows pooled). Raises on unreadable input."""
        return self.clap.encode_audio(list(audio))

    def bridge(self, embeddings: np.ndarray, bridge: str | BridgeConfig = "santa", seed: int = 0) -> np.ndarray:
        config = bridge if isinstance(bridge, BridgeConfig) else BridgeConfig(name=bridge)
        if config.name in ("noise", "santa"):
            # Noise drawn row by row from the same seed: a clip's output does not depend on which
            # other clips share its batch.
            rows = [apply_bridge(embeddings[i:i + 1], config, memory=self.santa, shift=self.shift, seed=seed)
                    for i in range(len(embeddings))]
            return np.concatenate(rows) if rows else np.asarray(embeddings, np.float32)
        return apply_bridge(embeddings, config, memory=self.santa, shift=self.shift, seed=seed)

    def generate(self, embeddings: np.ndarray, task: str, questions: Sequence[str] | None = None,
                 bridge: str | BridgeConfig = "santa", seed: int = 0, batch_size: int = 8,
                 **decoding) -> list[str]:
        """Text for each embedding. ``questions`` (one per row) for qa/open; decoding overrides the
        task's defaults (num_beams, max_new_tokens, repetition_penalty, no_repeat_ngram_size, rerank).

        ``rerank=K`` (K > 1) decodes K beam candidates per clip and answers with the one whose CLAP
        text embedding is closest to the clip's own audio embedding (before any bridge): the CLAP
        that bridges the modalities also judges which wording matches the recording best."""
        t = get_task(task)
        n = len(embeddings)
        if questions is not None and len(questions) != n:
            raise ValueError(f"{len(questions)} questions for {n} audio embeddings")
        embeddings = np.asarray(embeddings, dtype=np.float32)
        z = self.bridge(embeddings, bridge, seed) if n else embeddings
        params = {"num_beams": t.num_beams, "max_new_tokens": t.max_new_tokens,
                  "repetition_penalty": t.repetition_penalty, "rerank": t.rerank}
        if t.no_repeat_ngram_size:
            params["no_repeat_ngram_size"] = t.no_repeat_ngram_size
        params.update({k: v for k, v in decoding.items() if v is not None})
        rerank = int(params.pop("rerank") or 0)
        if rerank < 0:
            raise ValueError(f"rerank must be >= 0, got {rerank}")
        if rerank > 1:
            params["num_beams"] = max(int(params["num_beams"]), rerank)
            params["num_return_sequences"] = rerank
        out = []
        for i in range(0, n, batch_size):
            reqs = [Request(t.name, instruction_for(t.name, questions[j] if questions else None))
                    for j in range(i, min(n, i + batch_size))]
            texts = self.model.generate(torch.from_numpy(z[i:i + batch_size]), reqs, **params)
            if rerank > 1:
                texts = self.rerank(embeddings[i:i + batch_size],
                                    [texts[j:j + rerank] for j in range(0, len(texts), rerank)])
            out.extend(texts)
        return out

    def rerank(self, audio_embeddings: np.ndarray, candidates: Sequence[Sequence[str]]) -> list[str]:
        """For each clip, the candidate text whose CLAP embedding has the highest cosine with the
        clip's audio embedding (ties: the earlier, i.e. higher-scored, beam)."""
        flat = [c for row in candidates for c in row]
        nonempty = [c for c in flat if c.strip()]
        emb = dict(zip(nonempty, np.asarray(self.clap.encode_text(nonempty), np.float32))) if nonempty else {}
        out = []
        for audio, row in zip(np.asarray(audio_embeddings, np.float32), candidates):
            audio = audio / max(float(np.linalg.norm(audio)), 1e-12)
            scores = [float(emb[c] @ audio) / max(float(np.linalg.norm(emb[c])), 1e-12) if c in emb
                      else -np.inf for c in row]
            out.append(row[int(np.argmax(scores))] if row else "")
        return out

    # -- tasks ---------------------------------------------------------------------------------
    def caption(self, audio: Sequence, **kw) -> list[str]:
        return self.generate(self.embed_audio(audio), "caption", **kw)

    def tag(self, audio: Sequence, **kw) -> list[list[str]]:
        return [split_tags(t) for t in self.generate(self.embed_audio(audio), "tags", **kw)]

    def describe_music(self, audio: Sequence, **kw) -> list[str]:
        return self.generate(self.embed_audio(audio), "music", **kw)

    def ask(self, audio, question: str, **kw) -> str:
        if not question or not question.strip():
            raise ValueError("the question is empty")
        return self.generate(self.embed_audio([audio]), "qa", questions=[question], **kw)[0]

    def run(self, files: Iterable, task: str, question: str | None = None, per_window: bool = False,
            bridge: str = "santa", seed: int = 0, batch_size: int = 8, progress: bool = False,
            **decoding) -> Iterator[Result]:
        """Results file by file (in input order); a failing file yields a Result with ``error``
        and the batch goes on."""
        from tqdm import tqdm

        files = list(files)
        if task in ("qa", "open") and not (question or "").strip():
            raise ValueError(f"task {task!r} needs a question")
        bar = tqdm(total=len(files), disable=not progress, desc=task, unit="file", dynamic_ncols=True)
        for i in range(0, len(files), batch_size):
            chunk = files[i:i + batch_size]
            rows, meta = [], []
            for f in chunk:
                try:
                    if per_window:
                        w = self.clap.encode_audio_windows(f)
                        for e, s, t in zip(w.embeddings, w.starts, w.ends):
                            rows.append(e)
                            meta.append((f, float(s), float(t), None))
                    else:
                        rows.append(self.clap.encode_audio([f])[0])
                        meta.append((f, None, None, None))
                except Exception as e:  # one bad file must not stop the batch
                    meta.append((f, None, None, f"{type(e).__name__}: {e}"))
            texts = iter(self.generate(np.stack(rows), task, [question] * len(rows) if question else None,
                                       bridge=bridge, seed=seed, batch_size=batch_size, **decoding)
                         if rows else [])
            for f, s, t, err in meta:
                if err:
                    yield Result(str(f), task, error=err, question=question)
                    continue
                text = next(texts)
                yield Result(str(f), task, text=text, tags=split_tags(text) if task == "tags" else None,
                             question=question, start=s, end=t, bridge=bridge)
            bar.update(len(chunk))
        bar.close()

    @property
    def bridges(self) -> tuple[str, ...]:
        return BRIDGES
