"""The ONNX Runtime inference path: the mapper, the LLM (LoRA merged) and the default CLAP's text
encoder as ONNX Runtime sessions, with numpy around them; no torch or transformers.

:class:`OnnxModel` stands where :class:`mats.model.MATSModel` stands in :class:`mats.pipeline.MATS`
(``config``, ``tokenizer``, ``generate``, ``prompt_ids``), so the one run loop and every entry point
use it unchanged. A clip's prompt (the text around the audio prefix and the retrieved texts, as input
embeddings) is prefilled once, alone: no padding, so the prompt's KV cache and first logits of a clip
do not depend on its batch. The clips' prompt caches are then left-padded into one batch and shared by
each clip's beams (never copied per beam nor reordered: copying them at every step was a third of a
batch's decoding time), and the batch is decoded a token per step (:mod:`mats.onnx.decoding`). The graphs come from
:mod:`mats.onnx.export`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from .decoding import Processors, beam_search, greedy

__all__ = ["OnnxModel", "OnnxTextEncoder", "Tokenizer", "session"]


def session(path: Path, threads: int | None = None):
    """An ONNX Runtime CPU session of an exported (already optimised) graph."""
    import onnxruntime as ort

    from ..threads import num_threads

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or num_threads()
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    # Workers that spin while waiting for work steal the cores the other threads need (the same reason
    # mats.threads makes OpenMP wait passively): on 2 busy cores a decode step took 1.5x longer spinning.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Packing the weights for the matmul kernels is most of a session's start (0.5 s for the default
    # decoder alone); on the session's threads it takes a fifth less.
    so.add_session_config_entry("session.prepack.enable_parallel", "1")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


_loader = None  # the one background thread sessions are made on (see _in_background)


def _in_background(make):
    """``make()`` on a background thread; a Future of its result (``.result()`` waits, and raises what
    ``make`` raised). ONNX Runtime lets go of the GIL while it maps and prepacks a graph's weights (half a
    second for the default decoder), so a fresh process reads and embeds its audio meanwhile. One thread
    for all, in the order asked: a second one would take the decoder's core while the audio is embedded,
    and the answer waits for the decoder first."""
    global _loader
    if _loader is None:
        from concurrent.futures import ThreadPoolExecutor

        _loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mats-onnx-load")
    return _loader.submit(make)


class Tokenizer:
    """The part of a transformers tokenizer the run loop and the streamer use, on ``tokenizers``."""

    def __init__(self, path: Path, eos_token_id: int, pad_token_id: int):
        from tokenizers import Tokenizer as _Tokenizer

        self._tok = _Tokenizer.from_file(str(path))
        self._tok.no_truncation()
        self._tok.no_padding()
        self.eos_token_id, self.pad_token_id = eos_token_id, pad_token_id

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": self._tok.encode(text, add_special_tokens=add_special_tokens).ids}

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def batch_decode(self, rows, skip_special_tokens: bool = True) -> list[str]:
        return self._tok.decode_batch([[int(i) for i in r] for r in rows], skip_special_tokens=skip_special_tokens)


class OnnxModel:
    """Mapper + LLM of a model folder on ONNX Runtime (see the module's docstring)."""

    batch_invariant = True  # fp32, and a clip's prompt is prefilled alone (tests/test_onnx.py)
    runtime = "onnx"

    def __init__(self, export_dir: Path, config, manifest: dict | None = None, threads: int | None = None):
        export_dir = Path(export_dir)
        self.config = config
        self.export_dir = export_dir
        self.manifest = manifest or json.loads((export_dir / "manifest.json").read_text(encoding="utf-8"))
        m = self.manifest
        self.tokenizer = Tokenizer(export_dir / "tokenizer.json", m["eos_token_id"], m["pad_token_id"])
        self.embeddings = np.load(export_dir / "embeddings.npy", mmap_mode="r")
        self._decoder = _in_background(lambda: session(export_dir / "decoder.onnx", threads))
        self.mapper = session(export_dir / "mapper.onnx", threads)
        llm = m["llm"]
        self.layers, self.kv_heads, self.head_dim = llm["layers"], llm["kv_heads"], llm["head_dim"]
        names = [f"{i}.{kv}" for i in range(self.layers) for kv in ("key", "value")]
        self.prompt_names, self.past_names = [f"prompt.{n}" for n in names], [f"past.{n}" for n in names]
        self._prompt_cache: dict[tuple, tuple[list[int], list[int]]] = {}

    @property
    def decoder(self):
        return self._decoder.result()

    def save_weights(self, folder, state=None) -> None:
        raise RuntimeError("a model loaded with runtime='onnx' is inference-only (its graphs, not its weights); "
                           "load it with runtime='torch' to save it")

    # -- prompts ----------------------------------------------------------------------------------
    def prompt_ids(self, task: str, instruction: str, context: str | None = None) -> tuple[list[int], list[int]]:
        """Token ids before and after the audio prefix (as :meth:`MATSModel.prompt_ids`)."""
        from .export import render_with

        key = (task, instruction, context)
        if key not in self._prompt_cache:
            before, after = render_with(self.manifest["prompt"], task, instruction, context)
            if len(self._prompt_cache) > 10000:
                self._prompt_cache.clear()
            self._prompt_cache[key] = (self.tokenizer(before)["input_ids"], self.tokenizer(after)["input_ids"])
        return self._prompt_cache[key]

    # -- the decoder ------------------------------------------------------------------------------
    def _run(self, embeds: np.ndarray, positions: np.ndarray, prompt_mask: np.ndarray, prompt: list[np.ndarray],
             past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One pass of the decoder graph (layout: :func:`mats.onnx.export.decoder_module`)."""
        feed = {"inputs_embeds": embeds, "position_ids": positions, "prompt_mask": prompt_mask}
        feed.update(zip(self.prompt_names, prompt, strict=True))
        feed.update(zip(self.past_names, past, strict=True))
        out = self.decoder.run(None, feed)
        return out[0], out[1:]

    def _empty(self, rows: int, length: int) -> list[np.ndarray]:
        return [np.zeros((rows, self.kv_heads, length, self.head_dim), np.float32)] * (2 * self.layers)

    def _prefill(self, embeds: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """One clip's prompt [T, H] alone: its last logits [V] and its KV cache (the prompt part of the
        decoding that follows). The graph's prompt input is one masked position: nothing before it."""
        t = embeds.shape[0]
        logits, present = self._run(embeds[None].astype(np.float32), np.arange(t, dtype=np.int64)[None],
                                    np.zeros((1, 1), np.int64), self._empty(1, 1), self._empty(1, 0))
        return logits[0], present

    def generate(self, clap_embeddings, requests: Sequence, streamer=None, num_beams: int = 1,
                 max_new_tokens: int = 48, repetition_penalty: float | None = None,
                 no_repeat_ngram_size: int | None = None, num_return_sequences: int = 1, min_new_tokens: int = 0,
                 length_penalty: float = 1.0) -> list[str]:
        """The answers, stripped (``num_return_sequences`` per request, best first), as
        :meth:`mats.model.MATSModel.generate` gives them."""
        from ..tasks import get_task

        z = np.ascontiguousarray(np.asarray(clap_embeddings, np.float32))
        if len(z) != len(requests):
            raise ValueError(f"{len(requests)} requests for {len(z)} embeddings")
        if not len(z):
            return []
        prefix = self.mapper.run(None, {"clap_embedding": z})[0]
        firsts, caches, lengths = [], [], []
        for i, req in enumerate(requests):
            before, after = self.prompt_ids(get_task(req.task).name, req.instruction, req.context)
            seq = np.concatenate([self.embeddings[before], prefix[i], self.embeddings[after]])
            logits, cache = self._prefill(seq)
            firsts.append(logits)
            caches.append(cache)
            lengths.append(seq.shape[0])
        beams = int(num_beams or 1)
        processors = Processors(self.tokenizer.eos_token_id, float(repetition_penalty or 1.0),
                                int(no_repeat_ngram_size or 0), int(min_new_tokens or 0))
        state = _BatchState(self, caches, lengths, beams)
        pad = self.tokenizer.pad_token_id
        if beams > 1:
            ids = beam_search(state.step, np.stack(firsts), beams, int(max_new_tokens), processors, pad,
                              float(length_penalty), int(num_return_sequences))
        else:
            if streamer is not None:
                streamer.put(np.zeros((1, 0), np.int64))  # generate hands a streamer the (empty) prompt first
            ids = greedy(state.step, np.stack(firsts), int(max_new_tokens), processors, pad,
                         on_tokens=streamer.put if streamer is not None else None)
            if streamer is not None:
                streamer.end()
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]


class _BatchState:
    """The decoding batch's KV cache: the clips' prompt caches left-padded to one length (one per clip,
    shared by its beams), and the generated part, one per row, which each step grows by a position and
    reorders after the beams (rows never move between clips)."""

    def __init__(self, model: OnnxModel, caches: list[list[np.ndarray]], lengths: list[int], beams: int):
        self.model = model
        longest = max(lengths)
        clips = len(caches)
        self.prompt = []
        for j in range(2 * model.layers):
            kv = np.zeros((clips, model.kv_heads, longest, model.head_dim), np.float32)
            for i, cache in enumerate(caches):
                kv[i, :, longest - lengths[i]:] = cache[j][0]
            self.prompt.append(kv)
        self.prompt_mask = np.zeros((clips, longest), np.int64)
        for i, n in enumerate(lengths):
            self.prompt_mask[i, longest - n:] = 1
        rows = clips * beams
        self.past = model._empty(rows, 0)
        self.positions = np.repeat(np.asarray(lengths, np.int64), beams)
        self.identity = np.arange(rows)

    def step(self, tokens: np.ndarray, origin: np.ndarray) -> np.ndarray:
        if not np.array_equal(origin, self.identity):
            self.past = [p[origin] for p in self.past]
        embeds = np.asarray(self.model.embeddings[tokens], np.float32)[:, None]
        logits, self.past = self.model._run(embeds, self.positions[:, None], self.prompt_mask, self.prompt,
                                            self.past)
        self.positions = self.positions + 1
        return logits


class OnnxTextEncoder:
    """all-MiniLM-L6-v2 on ONNX Runtime: what :class:`mats.clap.minilm.MiniLMTextEncoder` computes
    (mean pooling, L2 norm; 128 tokens at most), tokenised by ``tokenizers``."""

    dim = 384

    def __init__(self, export_dir: Path, threads: int | None = None, max_length: int = 128):
        export_dir = Path(export_dir)
        self.max_length = max_length
        files = json.loads((export_dir / "manifest.json").read_text())["files"]
        self._digest = files["minilm.onnx"] + files.get("minilm.onnx.data", "")[:16]  # graph and weights
        self._loaded = _in_background(lambda: self._load(export_dir, threads))

    def _load(self, export_dir: Path, threads: int | None):
        from tokenizers import Tokenizer as _Tokenizer

        tok = _Tokenizer.from_file(str(export_dir / "minilm-tokenizer.json"))
        tok.enable_truncation(self.max_length)
        tok.enable_padding(pad_id=0, pad_token="[PAD]")
        return session(export_dir / "minilm.onnx", threads), tok

    @property
    def session(self):
        return self._loaded.result()[0]

    @property
    def tokenizer(self):
        return self._loaded.result()[1]

    def fingerprint(self) -> str:
        return f"minilm-onnx|max_length={self.max_length}|{self._digest}"

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        from ..clap.base import encode_texts_batched

        def encode_batch(texts_: list[str]) -> np.ndarray:
            enc = self.tokenizer.encode_batch(texts_)
            ids = np.asarray([e.ids for e in enc], np.int64)
            mask = np.asarray([e.attention_mask for e in enc], np.int64)
            types = np.asarray([e.type_ids for e in enc], np.int64)
            return self.session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]

        return encode_texts_batched(texts, batch_size, self.dim, encode_batch)
