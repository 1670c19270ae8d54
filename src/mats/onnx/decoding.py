"""Greedy and beam search in numpy, step for step as transformers' ``generate`` decodes (version 5's
vectorised beam search), around any function that gives the next-token logits.

The engine (:mod:`mats.onnx.engine`) calls :func:`beam_search` / :func:`greedy` with its ONNX Runtime
decoder; the rules are transformers' (``GenerationMixin._beam_search`` and ``_sample``, the repetition
penalty, n-gram blocking and minimum-length processors), so the same logits give the same tokens:

- beam search works on log-softmax scores; the processors act on them; ``2 * num_beams`` continuations
  are kept per clip, those ending in EOS (or reaching ``max_new_tokens``) are scored
  ``sum / length ** length_penalty`` among the finished ones, the best ``num_beams`` others run on; the
  search stops when no running beam can beat the worst finished one (``early_stopping=False``:
  transformers' default heuristic, the running score divided by the current length);
- greedy decoding applies the processors to the raw logits and pads finished rows with the pad token.

Ties in the top-k are broken by the lower index (what a stable sort gives), where torch leaves them
unspecified; among continuous scores they do not occur in practice.

Imports nothing but numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["Processors", "beam_search", "greedy", "log_softmax"]

NEG = np.float32(-1.0e9)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@dataclass(frozen=True)
class Processors:
    """The logits processors of a MATS decoding, in transformers' order: minimum new tokens (from
    generate's own list), then the repetition penalty and n-gram blocking (MATSModel.generate's)."""

    eos_token_id: int
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    min_new_tokens: int = 0

    def __call__(self, generated: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """``generated``: [rows, cur_len] tokens so far; ``scores``: [rows, V] (changed in place)."""
        cur_len = generated.shape[1]
        if cur_len < self.min_new_tokens:
            scores[:, self.eos_token_id] = -np.inf
        if self.repetition_penalty != 1.0 and cur_len:
            picked = np.take_along_axis(scores, generated, axis=1)
            picked = np.where(picked < 0, picked * np.float32(self.repetition_penalty),
                              picked / np.float32(self.repetition_penalty)).astype(np.float32)
            np.put_along_axis(scores, generated, picked, axis=1)
        n = self.no_repeat_ngram_size
        if n and cur_len >= n:
            windows = np.lib.stride_tricks.sliding_window_view(generated, n, axis=1)  # [rows, W, n]
            prefix = generated[:, cur_len + 1 - n:]
            matches = (windows[..., :-1] == prefix[:, None, :]).all(-1)
            rows, where = np.nonzero(matches)
            scores[rows, windows[rows, where, -1]] = -np.inf
        return scores


def _topk(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest entries of each row, largest first (ties: lower index first)."""
    part = np.argpartition(-x, k - 1, axis=-1)[:, :k] if k < x.shape[-1] else np.tile(np.arange(x.shape[-1]),
                                                                                       (x.shape[0], 1))
    vals = np.take_along_axis(x, part, axis=-1)
    order = np.lexsort((part, -vals), axis=-1)
    return np.take_along_axis(part, order, axis=-1)


def _take(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """x [B, K, ...] gathered along axis 1 by idx [B, J]."""
    return np.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


def beam_search(step: Callable[[np.ndarray, np.ndarray], np.ndarray], first_logits: np.ndarray, num_beams: int,
                max_new_tokens: int, processors: Processors, pad_token_id: int, length_penalty: float = 1.0,
                num_return_sequences: int = 1) -> np.ndarray:
    """Token ids [B * num_return_sequences, L] (best first per clip, padded with ``pad_token_id``).

    ``first_logits`` [B, V]: the prompt's last-position logits of each clip. ``step(tokens, beam_idx)``
    is called with the chosen tokens [B * num_beams] and the beam each row continues ([B * num_beams],
    indices into the previous rows: the caller reorders its KV cache by it) and returns the next logits."""
    batch, vocab = first_logits.shape
    beams, eos = num_beams, processors.eos_token_id
    keep = 2 * beams  # transformers: max(2, 1 + number of EOS tokens) * num_beams
    max_length = max_new_tokens
    running = np.full((batch, beams, max_length), pad_token_id, np.int64)
    sequences = running.copy()
    running_scores = np.zeros((batch, beams), np.float32)
    running_scores[:, 1:] = NEG
    scores_done = np.full((batch, beams), NEG, np.float32)
    finished = np.zeros((batch, beams), bool)
    open_ = np.ones((batch, 1), bool)  # improvement still possible (the early-stop heuristic)
    running_origin = np.full((batch, beams, max_length), -1, np.int64)
    origin_done = running_origin.copy()
    top_mask = np.arange(keep) < beams
    offsets = (np.arange(batch) * beams)[:, None]
    logits = np.repeat(first_logits, beams, axis=0)
    cur_len = 0
    while True:
        log_probs = processors(running.reshape(batch * beams, max_length)[:, :cur_len], log_softmax(logits))
        log_probs = (log_probs.reshape(batch, beams, vocab) + running_scores[:, :, None]).reshape(batch, -1)
        top = _topk(log_probs, keep)
        top_scores = np.take_along_axis(log_probs, top, axis=1)
        top_beam = top // vocab
        top_seqs = _take(running, top_beam).copy()
        top_seqs[:, :, cur_len] = top % vocab
        top_origin = _take(running_origin, top_beam).copy()
        top_origin[:, :, cur_len] = top_beam + offsets
        hits = (top_seqs[:, :, cur_len] == eos) | (cur_len + 1 >= max_length)

        # the best num_beams continuations that did not finish run on
        run_scores = top_scores + hits.astype(np.float32) * NEG
        nxt = _topk(run_scores, beams)
        running, running_scores = _take(top_seqs, nxt), _take(run_scores, nxt)
        running_origin = _take(top_origin, nxt)

        # the finished ones among the top num_beams join the finished list if they beat it
        just_done = hits & top_mask[None, :]
        done_scores = top_scores / np.float32((cur_len + 1) ** length_penalty)
        done_scores = done_scores + (~open_).astype(np.float32) * NEG
        done_scores = done_scores + (~just_done).astype(np.float32) * NEG
        merged_scores = np.concatenate([scores_done, done_scores], axis=1)
        best = _topk(merged_scores, beams)
        sequences = _take(np.concatenate([sequences, top_seqs], axis=1), best)
        scores_done = _take(merged_scores, best)
        origin_done = _take(np.concatenate([origin_done, top_origin], axis=1), best)
        finished = _take(np.concatenate([finished, just_done], axis=1), best)

        cur_len += 1
        best_running = running_scores[:, :1] / np.float32(cur_len ** length_penalty)
        worst_done = np.where(finished, scores_done.min(axis=1, keepdims=True), NEG)
        open_ = open_ & (best_running > worst_done).any(axis=-1, keepdims=True)
        if not open_.any() or hits.all():
            break
        tokens = running[:, :, cur_len - 1].reshape(-1)
        logits = step(tokens, running_origin[:, :, cur_len - 1].reshape(-1))
    sequences = sequences[:, :num_return_sequences].reshape(batch * num_return_sequences, max_length)
    origin_done = origin_done[:, :num_return_sequences].reshape(batch * num_return_sequences, max_length)
    length = int((origin_done >= 0).sum(axis=1).max())
    return sequences[:, :length]


def greedy(step: Callable[[np.ndarray, np.ndarray], np.ndarray], first_logits: np.ndarray, max_new_tokens: int,
           processors: Processors, pad_token_id: int, on_tokens: Callable[[np.ndarray], None] | None = None
           ) -> np.ndarray:
    """Token ids [B, L] of greedy decoding (transformers' ``_sample`` without sampling): finished rows
    continue with ``pad_token_id``. ``on_tokens``: given each step's tokens (a streamer's ``put``)."""
    batch = first_logits.shape[0]
    eos = processors.eos_token_id
    out = np.zeros((batch, 0), np.int64)
    live = np.ones(batch, bool)
    logits = first_logits
    identity = np.arange(batch)
    while True:
        scores = processors(out, logits.astype(np.float32, copy=True))
        tokens = np.where(live, scores.argmax(axis=-1), pad_token_id).astype(np.int64)
        out = np.concatenate([out, tokens[:, None]], axis=1)
        if on_tokens is not None:
            on_tokens(tokens)
        live &= tokens != eos
        if not live.any() or out.shape[1] >= max_new_tokens:
            return out
        logits = step(tokens, identity)
