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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import numpy as np

from .bridge.bridges import BridgeConfig, BridgeError, apply_bridge, available_bridges
from .bridge.retrieval import retrieve_texts
from .bridge.santa import SantaMemory
from .clap.base import CLAP, WindowEmbeddings, l2_normalize
from .config import DEFAULT_MODEL, FORMAT_VERSION, from_dict, read_model_config
from .decoding import Decoding
from .model_config import ModelConfig
from .tasks import Request, Result, split_tags, trained_tasks

if TYPE_CHECKING:  # torch: imported by the torch runtime only
    from .model import MATSModel

__all__ = ["MATS", "Item", "Result", "Decoding", "Cancelled", "DEFAULT_MODEL", "read_model_config"]


def _holds_shift(path: Path, shift: np.ndarray) -> bool:
    """The file already stores this very vector (then it is kept, with the gap statistics beside it)."""
    from .bridge.shift import load_shift
    return path.is_file() and np.array_equal(load_shift(path), np.asarray(shift, np.float32).reshape(-1))


class MATS:
    """A loaded MATS model with its CLAP and bridge memory. Deterministic: same input, same output."""

    def __init__(self, model: MATSModel, clap: CLAP, folder: Path | None = None, santa: SantaMemory | None = None,
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
                        dtype: str | None = None, clap: CLAP | None = None, threads: int | None = None,
                        runtime: str | None = None) -> MATS:
        """Load a model folder (default: the offline default model shipped with mats).

        ``clap``: an already loaded CLAP to use instead of the one the config names (it must embed
        into the same space: same dimension, and the same fingerprint when the folder records one).
        ``threads``: CPU threads for torch and onnxruntime (default: ``MATS_THREADS`` or the cores
        available to this process; see mats.threads).
        ``runtime``: "torch", "onnx" (ONNX Runtime on the CPU, fp32: :mod:`mats.onnx.engine`; the
        graphs are exported on first use, see :mod:`mats.onnx.export`) or "auto": ONNX Runtime on a
        CPU with fp32 weights, else torch (:func:`mats.runtimes.choose_runtime`). None:
        ``$MATS_RUNTIME`` or "auto". A model loaded on ONNX Runtime answers; to train it, load it on
        torch."""
        from . import threads as threads_
        from .bridge.santa import SantaMemory
        from .bridge.shift import SHIFT_FILE, load_shift
        from .clap import load_clap
        from .runtimes import choose_runtime, default_runtime, load_onnx_model

        threads_.configure(threads)

        folder = Path(folder) if folder is not None else DEFAULT_MODEL
        raw = read_model_config(folder)
        config = from_dict(ModelConfig, raw.get("model"), f"{folder}/config.json: model")
        model = text_encoder = None
        runtime = runtime or default_runtime()
        if choose_runtime(runtime, device, dtype) == "onnx":
            loaded = load_onnx_model(folder, config, strict=runtime == "onnx")
            if loaded is not None:
                model, text_encoder = loaded
        if model is None:
            from .model import MATSModel

            model = MATSModel.from_pretrained(folder, device=device, dtype=dtype, config=config)
        if clap is None:
            extra = {"text_encoder": text_encoder} if text_encoder is not None else {}
            clap = load_clap(model.config.clap, device=device, **extra)
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
    def embed_audio(self, audio: Sequence, max_decoded_samples: int | None = None) -> np.ndarray:
        """CLAP audio embeddings [N, D] (windows pooled). Raises on unreadable input.
        ``max_decoded_samples``: the decoded-size budget per file (default: mats.audio's)."""
        return self.clap.encode_audio(list(audio), max_decoded_samples=max_decoded_samples)

    def decoding(self, task: str | Decoding, **options) -> Decoding:
        """The :class:`~mats.decoding.Decoding` this model runs: the task's defaults with ``options``
        (bridge, seed, num_beams, max_new_tokens, repetition_penalty, no_repeat_ngram_size, rerank,
        min_new_tokens, length_penalty),
        the bridge resolved against this model's memory. Refuses a bridge the model cannot run."""
        if isinstance(task, Decoding):
            if any(v is not None for v in options.values()):
                raise TypeError(f"options {sorted(options)} given beside a Decoding: put them in the Decoding")
            decoding = task
        else:
            decoding = Decoding(task, **options)
        why_not = available_bridges(self.santa, self.shift).get(decoding.bridge.name)
        if why_not is not None:
            raise BridgeError(f"bridge {decoding.bridge.name!r} cannot run on this model: {why_not}")
        return decoding.resolve(self.santa)

    @property
    def llm_name(self) -> str:
        """The LLM's name as its config gives it (a hub id, or the last part of a local path)."""
        return Path(str(self.model.config.llm)).name

    @property
    def retrieval_k(self) -> int:
        """How many retrieved training texts the model writes into its prompt (0: none)."""
        return int(self.model.config.retrieval.k)

    @property
    def batch_invariant(self) -> bool:
        """Whether a clip's answer is the same in any batch: true for fp32 weights; bf16/fp16
        matmuls round differently with the batch's shape, so a few answers change with it."""
        return self.model.batch_invariant

    @property
    def runtime(self) -> str:
        """Which engine decodes: "torch" or "onnx" (ONNX Runtime)."""
        return self.model.runtime

    def bridge(self, embeddings: np.ndarray, config: BridgeConfig | str, seed: int = 0) -> np.ndarray:
        """The bridged embeddings fed to the mapper. Noise is drawn row by row from the same seed,
        so a clip's output does not depend on which other clips share its batch."""
        config = config if isinstance(config, BridgeConfig) else BridgeConfig(name=config)
        if config.name in ("noise", "santa"):
            rows = [apply_bridge(embeddings[i:i + 1], config, memory=self.santa, shift=self.shift, seed=seed)
                    for i in range(len(embeddings))]
            return np.concatenate(rows) if rows else np.asarray(embeddings, np.float32)
        return apply_bridge(embeddings, config, memory=self.santa, shift=self.shift, seed=seed)

    def generate(self, embeddings: np.ndarray, decoding: str | Decoding, questions: Sequence[str] | None = None,
                 batch_size: int = 8, streamer=None, **options) -> list[str]:
        """Text for each audio embedding. ``decoding``: a :class:`~mats.decoding.Decoding`, or a task
        name with ``options`` (see :meth:`decoding`); ``questions`` (one per row) for qa/open.

        With ``rerank=K`` (K > 1) the answer is, among K beam candidates, the one whose CLAP text
        embedding is closest to the clip's own audio embedding (before any bridge): the CLAP that
        bridges the modalities also judges which wording matches the recording best.

        A retrieval-augmented model (``config.model.retrieval.k > 0``) also writes the memory's
        ``k`` training texts nearest to each bridged embedding into the prompt (see ``retrieved``).

        ``streamer``: given the tokens as they are decoded (see :mod:`mats.streaming`); one
        embedding and greedy decoding only."""
        return self._generate(np.asarray(embeddings, dtype=np.float32), self.decoding(decoding, **options),
                              questions, batch_size, streamer)

    def _generate(self, embeddings: np.ndarray, decoding: Decoding, questions: Sequence[str] | None,
                  batch_size: int, streamer=None) -> list[str]:
        """:meth:`generate` with a Decoding this model has already resolved (the run loop's path)."""
        groups = self._candidates(embeddings, decoding, questions, batch_size, streamer)
        if decoding.candidates <= 1:
            return [g[0] for g in groups]
        out = []
        for i in range(0, len(groups), batch_size):
            out.extend(self.rerank(embeddings[i:i + batch_size], groups[i:i + batch_size]))
        return out

    def candidates(self, embeddings: np.ndarray, decoding: str | Decoding, questions: Sequence[str] | None = None,
                   k: int | None = None, batch_size: int = 8, streamer=None, **options) -> list[list[str]]:
        """The beam candidates for each embedding, best first: ``decoding.candidates`` of them (what
        ``rerank`` chooses among), or ``k`` (the beam is widened to ``k`` if needed)."""
        decoding = self.decoding(decoding, **options)
        if k is not None:
            if int(k) < 1:
                raise ValueError(f"k must be >= 1, got {k}")
            decoding = decoding.with_candidates(int(k))
        return self._candidates(np.asarray(embeddings, dtype=np.float32), decoding, questions, batch_size, streamer)

    def _candidates(self, embeddings: np.ndarray, decoding: Decoding, questions: Sequence[str] | None,
                    batch_size: int, streamer=None) -> list[list[str]]:
        task, k = decoding.spec, decoding.candidates
        n = len(embeddings)
        if streamer is not None and (n != 1 or k != 1 or decoding.num_beams != 1):
            raise ValueError("a streamer needs one embedding and greedy decoding (num_beams=1, rerank=0), "
                             f"got {n} embeddings, num_beams={decoding.num_beams}, {k} candidates")
        if questions is not None and len(questions) != n:
            raise ValueError(f"{len(questions)} questions for {n} audio embeddings")
        z = self.bridge(embeddings, decoding.bridge, decoding.seed) if n else embeddings
        retrieval = self.model.config.retrieval
        hints = [None] * n
        if retrieval.enabled and n:
            if self.santa is None or self.santa.texts is None:
                raise BridgeError("this model prompts with retrieved training texts, but its folder has no "
                                  "Santa memory with texts (santa/texts.txt)")
            hints = [retrieval.hint([r.text for r in row]) for row in retrieve_texts(self.santa, z, retrieval.k)]
        out = []
        for i in range(0, n, batch_size):
            reqs = [Request(task.name, task.instruction(questions[j] if questions else None), context=hints[j])
                    for j in range(i, min(n, i + batch_size))]
            extra = {"streamer": streamer} if streamer is not None else {}
            texts = self.model.generate(z[i:i + batch_size], reqs, **decoding.generation_kwargs(),
                                        **extra)
            out.extend(texts[j:j + k] for j in range(0, len(texts), k))
        return out

    def rerank(self, audio_embeddings: np.ndarray, candidates: Sequence[Sequence[str]]) -> list[str]:
        """For each clip, the candidate text whose CLAP embedding has the highest cosine with the
        clip's audio embedding (ties: the earlier, i.e. higher-scored, beam)."""
        flat = [c for row in candidates for c in row]
        nonempty = [c for c in flat if c.strip()]
        encoded = np.asarray(self.clap.encode_text(nonempty), np.float32) if nonempty else []
        emb = dict(zip(nonempty, encoded, strict=True))
        out = []
        for audio, row in zip(np.asarray(audio_embeddings, np.float32), candidates, strict=True):
            audio = audio / max(float(np.linalg.norm(audio)), 1e-12)
            scores = [float(emb[c] @ audio) / max(float(np.linalg.norm(emb[c])), 1e-12) if c in emb
                      else -np.inf for c in row]
            out.append(row[int(np.argmax(scores))] if row else "")
        return out

    # -- tasks ---------------------------------------------------------------------------------
    def caption(self, audio: Sequence, **options) -> list[str]:
        return self.generate(self.embed_audio(audio), "caption", **options)

    def tag(self, audio: Sequence, **options) -> list[list[str]]:
        return [split_tags(t) for t in self.generate(self.embed_audio(audio), "tags", **options)]

    def describe_music(self, audio: Sequence, **options) -> list[str]:
        return self.generate(self.embed_audio(audio), "music", **options)

    def ask(self, audio, question: str, **options) -> str:
        if not question or not question.strip():
            raise ValueError("the question is empty")
        return self.generate(self.embed_audio([audio]), "qa", questions=[question], **options)[0]

    # -- the run loop: every entry point (CLI, server, evaluation) answers through it ----------
    def run(self, items: Iterable[Item | str | os.PathLike | np.ndarray], decoding: str | Decoding,
            question: str | None = None, per_window: bool = False, pooled: bool = True,
            explain: int | bool = 0, batch_size: int = 8, progress: bool = False,
            max_decoded_samples: int | None = None, streamer=None, cancelled: Callable[[], bool] | None = None,
            **options) -> Iterator[Result]:
        """One :class:`~mats.tasks.Result` per item, in input order, as batches finish.

        ``items``: audio files, CLAP audio embeddings ([D] arrays), or :class:`Item` (with a question
        and a name of its own); ``question`` is the question of items without one. ``decoding``: a
        :class:`~mats.decoding.Decoding`, or a task name with ``options`` (see :meth:`decoding`).

        A failing item yields a Result with ``error`` (and ``exception``) and the others go on: an
        unreadable file fails alone; when the model fails on a batch, its items are retried one by
        one, so only the item that fails gets the error. ``per_window``: ``windows``, one Result per
        CLAP window with start/end seconds (``pooled=False`` skips the whole-file answer).
        ``explain``: ``retrieved``, the memory's training texts nearest to each clip (True: the
        model's retrieval k, or 8); for a retrieval-augmented model the very texts in its prompt.
        ``max_decoded_samples``: the decoded-size budget per file (default: mats.audio's).
        ``streamer``: given the answer's tokens as they are decoded (:class:`mats.streaming.TextDeltas`);
        one item, no windows, greedy decoding only. ``cancelled``: the :attr:`Item.cancelled` of the
        items without one of their own."""
        from tqdm import tqdm

        decoding = self.decoding(decoding, **options)
        task = decoding.spec
        items = [it if isinstance(it, Item) else Item(it) for it in items]
        items = [it if it.cancelled or not cancelled else replace(it, cancelled=cancelled) for it in items]
        items = [it if it.question or not question else replace(it, question=question) for it in items]
        if task.needs_question and any(not (it.question or "").strip() for it in items):
            raise ValueError(f"task {task.name!r} needs a question for every item")
        if not pooled and not per_window:
            raise ValueError("pooled=False leaves nothing to answer without per_window=True")
        if streamer is not None and (len(items) != 1 or per_window):
            raise ValueError("a streamer follows the answer of one item (no per_window)")
        top_k = (self.retrieval_k or 8) if explain is True else int(explain)
        if top_k and self.santa is None:  # refused before any clip is decoded
            raise BridgeError("explain: this model has no Santa memory to retrieve from")
        bar = tqdm(total=len(items), disable=not progress, desc=task.name, unit="file", dynamic_ncols=True)
        for i in range(0, len(items), batch_size):
            chunk = items[i:i + batch_size]
            yield from self._run_chunk(chunk, decoding, per_window, pooled, top_k, batch_size, max_decoded_samples,
                                       streamer)
            bar.update(len(chunk))
        bar.close()

    def events(self, audio, decoding: str | Decoding, hop: float | None = None, min_event: float | None = None,
               question: str | None = None, batch_size: int | None = None, max_decoded_samples: int | None = None,
               max_seconds: float | None = None, cancelled: Callable[[], bool] | None = None, **options) -> list:
        """The events of one recording (:mod:`mats.events`), each sound event answered by :meth:`run` on its
        embedding with one ``decoding``; silence events carry no answer. ``hop``/``min_event``: seconds
        (defaults ``mats.events.DEFAULT_HOP``/``DEFAULT_MIN_EVENT``); ``mats.events.summarize`` of the
        result names the events in order. The audio is streamed, so memory does not grow with its length;
        ``max_seconds``: the longest recording (default ``mats.audio.MAX_STREAM_SECONDS``). Returns a
        :class:`mats.events.Events` (a list): a truncated file gives the events before the damage, with
        ``stopped_at`` and ``warning`` saying where it stopped. ``batch_size``: events decoded together
        (default ``mats.events.ANSWER_BATCH``, which bounds the decoder's memory). ``cancelled`` (a
        server's client that went away) is asked between blocks of audio and before each event is
        decoded; when it says yes, :class:`Cancelled` is raised and no more work is done."""
        from .events import ANSWER_BATCH, answer_events, detect_events
        decoding = self.decoding(decoding, **options)

        def stop_if_gone() -> None:
            if cancelled is not None and cancelled():
                raise Cancelled("the request was cancelled")

        found = detect_events(self.clap, audio, hop=hop, min_event=min_event, max_decoded_samples=max_decoded_samples,
                              max_seconds=max_seconds, check=stop_if_gone)
        answered = answer_events(self, found, decoding, batch_size=batch_size or ANSWER_BATCH, question=question,
                                 cancelled=cancelled)
        stop_if_gone()  # gone while the events were decoded: those it stopped hold a Cancelled error
        return answered

    def _run_chunk(self, chunk: Sequence[Item], decoding: Decoding, per_window: bool, pooled: bool, top_k: int,
                   batch_size: int, max_decoded_samples: int | None, streamer=None) -> list[Result]:
        work = [self._embedded(item, decoding, per_window, max_decoded_samples) for item in chunk]
        live = []
        for w in work:  # a request whose client went away while its audio was read costs no decoding
            if w.result.error is None and w.item.cancelled is not None and w.item.cancelled():
                _fail(w.result, Cancelled("the request was cancelled"))
            elif w.result.error is None:
                live.append(w)
        try:
            self._answer(live, decoding, pooled, top_k, batch_size, streamer)
        except Cancelled as e:  # the streamer's client went away mid-answer: nothing to retry
            for w in live:
                _fail(w.result, e)
        except Exception:  # noqa: BLE001 - retried one by one, so that only the failing item fails
            for w in live:
                try:
                    self._answer([w], decoding, pooled, top_k, batch_size, streamer)
                except Exception as e:  # noqa: BLE001
                    _fail(w.result, e)
        return [w.result for w in work]

    def _embedded(self, item: Item, decoding: Decoding, per_window: bool, max_decoded_samples: int | None) -> _Work:
        """The item's pooled CLAP embedding and, with ``per_window``, its windows' (or its error)."""
        work = _Work(item, Result(item.label, decoding.task, question=item.question, bridge=decoding.bridge.name))
        if item.cancelled is not None and item.cancelled():
            _fail(work.result, Cancelled("the request was cancelled"))
            return work
        try:
            if isinstance(item.audio, np.ndarray):
                if per_window:
                    raise ValueError("per_window needs the audio, not an embedding")
                work.pooled = np.asarray(item.audio, np.float32).reshape(-1)
                return work
            w = self.clap.encode_audio_windows(item.audio, max_decoded_samples=max_decoded_samples)
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the batch
            _fail(work.result, e)
            return work
        # What CLAP.encode_audio computes: the normalised windows, pooled and re-normalised.
        work.pooled = l2_normalize(w.embeddings.mean(0)[None])[0]
        if per_window:
            work.windows = w
        return work

    def _answer(self, work: Sequence[_Work], decoding: Decoding, pooled: bool, top_k: int, batch_size: int,
                streamer=None) -> None:
        """Decode every row of ``work`` (the pooled one, the windows) in one call; fill the Results."""
        rows: list[tuple[_Work, int | None, np.ndarray]] = []
        for w in work:
            if pooled:
                rows.append((w, None, w.pooled))
            if w.windows is not None:
                rows.extend((w, k, e) for k, e in enumerate(w.windows.embeddings))
        if not rows:
            return
        questions = [w.item.question for w, _, _ in rows] if decoding.spec.needs_question else None
        texts = self._generate(np.stack([e for _, _, e in rows]), decoding, questions, batch_size=batch_size,
                              streamer=streamer)
        why = [None] * len(work)
        if top_k:
            # A retrieval-augmented model shows the texts its prompt carried (queried with the bridged
            # embedding); otherwise the neighbours Santa mixes in (queried with the audio embedding).
            prompted = self.retrieval_k > 0
            why = self.retrieved(np.stack([w.pooled for w in work]), top_k, decoding if prompted else None)
        parse = decoding.spec.parse
        for w, retrieved in zip(work, why, strict=True):
            w.result.retrieved = retrieved
            if w.windows is not None:
                w.result.windows = []
        for (w, k, _), text in zip(rows, texts, strict=True):
            tags = parse(text).get("tags")
            if k is None:
                w.result.text, w.result.tags = text, tags
            else:
                r = w.result
                r.windows.append(Result(r.file, r.task, text=text, tags=tags, question=r.question, bridge=r.bridge,
                                        start=float(w.windows.starts[k]), end=float(w.windows.ends[k])))

    def prompt_tokens(self, decoding: str | Decoding, question: str | None = None,
                      retrieved: Sequence[dict] | None = None) -> int:
        """How many positions the LLM's prompt of one clip has: the task's prompt text tokens, the
        audio prefix, and for a retrieval-augmented model the retrieved texts written into it
        (``retrieved``: the clip's ``Result.retrieved`` from a run with ``explain=True``)."""
        decoding = self.decoding(decoding)
        task, retrieval = decoding.spec, self.model.config.retrieval
        hint = retrieval.hint([r["text"] for r in retrieved or ()]) if retrieval.enabled else None
        before, after = self.model.prompt_ids(task.name, task.instruction(question), hint)
        return len(before) + int(self.model.config.mapper.prefix_length) + len(after)

    @property
    def bridges(self) -> tuple[str, ...]:
        """The bridges this model can run (santa/nearest/projection need its memory, shift its vector)."""
        return tuple(name for name, why_not in available_bridges(self.santa, self.shift).items() if why_not is None)

    def retrieved(self, embeddings: np.ndarray, top_k: int | None = None,
                  decoding: Decoding | None = None) -> list[list[dict]]:
        """Why the model says what it says: for each audio embedding, the Santa memory's nearest
        training texts (``text``, cosine ``score``, bank ``row``) and the weight Santa gives each among
        them (``softmax(tau * score)`` over those shown, tau from the memory; no noise).

        ``decoding``: query with the embedding bridged as that decoding bridges it; for a
        retrieval-augmented model, ``top_k=None`` with the decoding of a ``generate`` call gives
        exactly the texts that were in its prompt. ``top_k`` defaults to the model's retrieval k, or 8."""
        if self.santa is None:
            raise BridgeError("this model has no Santa memory to retrieve from")
        k = int(top_k) if top_k is not None else (self.retrieval_k or 8)
        if k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        q = np.atleast_2d(np.asarray(embeddings, np.float32))
        if decoding is not None and len(q):
            decoding = self.decoding(decoding)
            q = self.bridge(q, decoding.bridge, decoding.seed)
        tau = float(self.santa.config.tau)
        out = []
        for row in retrieve_texts(self.santa, q, k):
            sims = np.array([r.score for r in row], np.float64)
            w = np.exp(tau * (sims - sims.max()))
            w = w / w.sum()
            out.append([{**r.to_dict(), "weight": float(wi)} for r, wi in zip(row, w, strict=True)])
        return out


@dataclass(frozen=True)
class Item:
    """One input of :meth:`MATS.run`: an audio file or a CLAP audio embedding, the question asked
    about it, the name its Result carries (default: the path), and ``cancelled``, asked before the
    item's audio is read and again before it is decoded (a server's client that went away)."""

    audio: str | os.PathLike | np.ndarray
    question: str | None = None
    name: str | None = None
    cancelled: Callable[[], bool] | None = field(default=None, compare=False)

    @property
    def label(self) -> str:
        if self.name is not None:
            return self.name
        return "<embedding>" if isinstance(self.audio, np.ndarray) else str(self.audio)


class Cancelled(RuntimeError):
    """The item's ``cancelled()`` said its answer is no longer wanted."""


@dataclass
class _Work:
    """An item on its way through the run loop: its Result, and the embeddings it is decoded from."""

    item: Item
    result: Result
    pooled: np.ndarray | None = None
    windows: WindowEmbeddings | None = None


def _fail(result: Result, e: BaseException) -> Result:
    result.error, result.exception = f"{type(e).__name__}: {e}", e
    return result
