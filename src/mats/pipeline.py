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
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from .bridge.bridges import BridgeConfig, BridgeError, apply_bridge, available_bridges
from .bridge.retrieval import retrieve_texts
from .config import DEFAULT_MODEL, FORMAT_VERSION, from_dict, read_model_config
from .model import MATSModel, ModelConfig, Request
from .tasks import Result, get_task, split_tags, trained_tasks

__all__ = ["MATS", "Result", "DEFAULT_MODEL", "read_model_config"]


def _holds_shift(path: Path, shift: np.ndarray) -> bool:
    """The file already stores this very vector (then it is kept, with the gap statistics beside it)."""
    from .bridge.shift import load_shift
    return path.is_file() and np.array_equal(load_shift(path), np.asarray(shift, np.float32).reshape(-1))


class MATS:
    """A loaded MATS model with its CLAP and bridge memory. Deterministic: same input, same output."""

    def __init__(self, model: MATSModel, clap, folder: Path | None = None, santa=None,
                 shift: np.ndarray | None = None, train_config: dict | None = None,
                 trained_tasks: Iterable[str] | None = None):
        self.model = model
        self.clap = clap
        self.folder = folder
        self.santa = santa
        self.shift = shift
        self.train_config = train_config  # the `train` section it was trained with, when known
        # the distinct tasks of its training corpus, when known (evaluation asks a benchmark with the
        # paper's per-dataset task only if the model was trained on it)
        self.trained_tasks = sorted(set(trained_tasks)) if trained_tasks is not None else None

    # -- the model folder: written and read here, and nowhere else -----------------------------
    #
    #   config.json          {"model_type": "mats", "format_version", "model": ModelConfig,
    #                         "train": TrainConfig (when trained; its noise_variance is the model's
    #                         training noise, which santa.json repeats for its entries), "clap_fingerprint",
    #                         "trained_tasks" (the corpus's distinct tasks, when known)}
    #   mapper.safetensors   mapper weights                        (MATSModel.save_weights)
    #   lora/                peft adapter, base model named as in the config (no machine paths)
    #   santa/               Santa memory: santa.safetensors, santa.json, texts.txt (optional)
    #   shift.safetensors    the 'shift' bridge's vector (+ shift.npy) (optional)
    #   README.md            model card (generated)
    #   log.csv, loss.png    training log and plot (written by the trainer, read for the card)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike | None = None, device: str | None = None,
                        dtype: str | None = None, clap=None, threads: int | None = None) -> "MATS":
        """Load a model folder (default: the offline default model shipped with mats).

        ``clap``: an already loaded CLAP to use instead of the one the config names (it must embed
        into the same space: same dimension, and the same fingerprint when the folder records one).
        ``threads``: CPU threads for torch and onnxruntime (default: ``MATS_THREADS`` or the cores
        available to this process; see mats.threads)."""
        from . import threads as threads_
        from .bridge.santa import SantaMemory
        from .bridge.shift import SHIFT_FILE, load_shift
        from .clap import load_clap

        threads_.configure(threads)

        folder = Path(folder) if folder is not None else DEFAULT_MODEL
        raw = read_model_config(folder)
        model = MATSModel.from_pretrained(folder, device=device, dtype=dtype,
                                          config=from_dict(ModelConfig, raw.get("model"), f"{folder}/config.json: model"))
        clap = clap if clap is not None else load_clap(model.config.clap, device=device)
        if clap.dim != model.config.mapper.clap_dim:
            raise ValueError(f"CLAP {clap.name} has dim {clap.dim}, the model expects "
                             f"{model.config.mapper.clap_dim}")
        expected = raw.get("clap_fingerprint")
        if expected and clap.fingerprint() != expected:
            raise ValueError(f"{folder}: the model was trained on embeddings of CLAP {expected!r}, but the "
                             f"loaded CLAP is {clap.fingerprint()!r}; its outputs would be meaningless")
        santa = SantaMemory.load(folder / "santa") if (folder / "santa" / "santa.json").is_file() else None
        shift = load_shift(folder / SHIFT_FILE) if (folder / SHIFT_FILE).is_file() else None
        return cls(model, clap, folder, santa, shift, train_config=raw.get("train"),
                   trained_tasks=trained_tasks(raw))

    def save_pretrained(self, folder: str | os.PathLike, state: dict | None = None,
                        quality: dict | None = None) -> Path:
        """Write every artifact of the model to ``folder`` (see the layout above) and a model card.

        ``state``: full trainable weights when the live ones are sharded (FSDP); ``quality``: measured
        numbers for the card (``{"source", "rows": [{"name", metric: value}]}``)."""
        from .bridge.shift import SHIFT_FILE, save_shift
        from .config import save_json, to_dict
        from .model_card import held_out_losses, render_model_card

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_weights(folder, state=state)
        config = {"format": "mats", "model_type": "mats", "format_version": FORMAT_VERSION,
                  "model": to_dict(self.model.config)}
        if self.train_config is not None:
            config["train"] = self.train_config
        if self.trained_tasks is not None:
            config["trained_tasks"] = self.trained_tasks
        if self.clap is not None:
            config["clap_fingerprint"] = self.clap.fingerprint()
        save_json(config, folder / "config.json")
        if self.santa is not None:
            self.santa.save(folder / "santa")
        if self.shift is not None and not _holds_shift(folder / SHIFT_FILE, self.shift):
            save_shift(folder / SHIFT_FILE, {"shift": self.shift},
                       clap_fingerprint=config.get("clap_fingerprint"))
        logs = sorted(folder.glob("log*.csv"))
        held = [row for log in logs for row in held_out_losses(log)]
        card = render_model_card(folder.name, config, santa=self.santa, has_shift=self.shift is not None,
                                 held_out=held, quality=quality)
        (folder / "README.md").write_text(card, encoding="utf-8")
        self.folder = folder
        return folder

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
        that bridges the modalities also judges which wording matches the recording best.

        A retrieval-augmented model (``config.model.retrieval.k > 0``) also writes the memory's
        ``k`` training texts nearest to each bridged embedding into the prompt (see ``retrieved``)."""
        params = {k: v for k, v in decoding.items() if v is not None}
        rerank = int(params.pop("rerank", get_task(task).rerank) or 0)
        if rerank < 0:
            raise ValueError(f"rerank must be >= 0, got {rerank}")
        embeddings = np.asarray(embeddings, dtype=np.float32)
        groups = self.candidates(embeddings, task, max(rerank, 1), questions, bridge, seed, batch_size, **params)
        if rerank <= 1:
            return [g[0] for g in groups]
        out = []
        for i in range(0, len(groups), batch_size):
            out.extend(self.rerank(embeddings[i:i + batch_size], groups[i:i + batch_size]))
        return out

    def candidates(self, embeddings: np.ndarray, task: str, k: int = 8, questions: Sequence[str] | None = None,
                   bridge: str | BridgeConfig = "santa", seed: int = 0, batch_size: int = 8,
                   **decoding) -> list[list[str]]:
        """The ``k`` best beams for each embedding, best first (what ``rerank=k`` chooses among; the
        first is the top beam). Arguments as :meth:`generate`; the beam is widened to ``k`` if needed."""
        t = get_task(task)
        n = len(embeddings)
        if questions is not None and len(questions) != n:
            raise ValueError(f"{len(questions)} questions for {n} audio embeddings")
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        embeddings = np.asarray(embeddings, dtype=np.float32)
        z = self.bridge(embeddings, bridge, seed) if n else embeddings
        params = {**t.decoding(), **{key: v for key, v in decoding.items() if v is not None}}
        params.pop("rerank", None)  # choosing among the candidates is generate's business
        k = int(k)
        if k > 1:
            params["num_beams"] = max(int(params["num_beams"]), k)
            params["num_return_sequences"] = k
        retrieval = self.model.config.retrieval
        hints = [None] * n
        if retrieval.enabled and n:
            if self.santa is None or self.santa.texts is None:
                raise BridgeError("this model prompts with retrieved training texts, but its folder has no "
                                  "Santa memory with texts (santa/texts.txt)")
            hints = [retrieval.hint([r.text for r in row]) for row in retrieve_texts(self.santa, z, retrieval.k)]
        out = []
        for i in range(0, n, batch_size):
            reqs = [Request(t.name, t.instruction(questions[j] if questions else None), context=hints[j])
                    for j in range(i, min(n, i + batch_size))]
            texts = self.model.generate(torch.from_numpy(z[i:i + batch_size]), reqs, **params)
            out.extend(texts[j:j + k] for j in range(0, len(texts), k))
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
            show_retrieved: bool = False, **decoding) -> Iterator[Result]:
        """Results file by file (in input order); a failing file yields a Result with ``error``
        and the batch goes on. ``show_retrieved``: each Result carries ``retrieved``, the memory's
        training texts nearest to the bridged embedding (for a retrieval-augmented model, the very
        texts in its prompt; see ``retrieved``)."""
        from tqdm import tqdm

        files = list(files)
        the_task = get_task(task)
        if the_task.needs_question and not (question or "").strip():
            raise ValueError(f"task {the_task.name!r} needs a question")
        if show_retrieved and self.santa is None:  # refused before any clip is decoded
            raise BridgeError("show_retrieved: this model has no Santa memory to retrieve from")
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
            why = iter(self.retrieved(np.stack(rows), bridge=bridge, seed=seed)
                       if show_retrieved and rows else [])
            for f, s, t, err in meta:
                if err:
                    yield Result(str(f), the_task.name, error=err, question=question)
                    continue
                text = next(texts)
                yield Result(str(f), the_task.name, tags=the_task.parse(text).get("tags"), text=text,
                             question=question, start=s, end=t, bridge=bridge,
                             retrieved=next(why) if show_retrieved else None)
            bar.update(len(chunk))
        bar.close()

    @property
    def bridges(self) -> tuple[str, ...]:
        """The bridges this model can run (santa/nearest/projection need its memory, shift its vector)."""
        return tuple(name for name, why_not in available_bridges(self.santa, self.shift).items() if why_not is None)

    def retrieved(self, embeddings: np.ndarray, top_k: int | None = None,
                  bridge: str | BridgeConfig | None = None, seed: int = 0) -> list[list[dict]]:
        """Why the model says what it says: for each audio embedding, the Santa memory's nearest
        training texts (``text``, cosine ``score``, bank ``row``) and the weight Santa gives each among
        them (``softmax(tau * score)`` over those shown, tau from the memory; no noise).

        ``bridge``: query with the bridged embedding, as ``generate`` does; for a retrieval-augmented
        model, ``top_k=None`` with the bridge of a ``generate`` call gives exactly the texts that were in
        its prompt. ``top_k`` defaults to the model's retrieval k, or 8."""
        if self.santa is None:
            raise BridgeError("this model has no Santa memory to retrieve from")
        k = int(top_k) if top_k is not None else (self.model.config.retrieval.k or 8)
        if k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        q = np.atleast_2d(np.asarray(embeddings, np.float32))
        if bridge is not None and len(q):
            q = self.bridge(q, bridge, seed)
        tau = float(self.santa.config.tau)
        out = []
        for row in retrieve_texts(self.santa, q, k):
            sims = np.array([r.score for r in row], np.float64)
            w = np.exp(tau * (sims - sims.max()))
            w = w / w.sum()
            out.append([{**r.to_dict(), "weight": float(wi)} for r, wi in zip(row, w)])
        return out
