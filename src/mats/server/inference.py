"""The model work behind the endpoints, run only on the batcher's worker thread.

A group of generate jobs shares one key: (task, bridge, seed, max_new_tokens, num_beams, rerank).
The pipeline's answer for a row does not depend on the other rows of its batch when those are equal
(the bridge draws its noise row by row from the seed), so each clip gets exactly what a call on its
own would give (tests/test_serve_api.py checks it against ``MATS.run``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Hashable, Sequence

import numpy as np

from .guard import AudioRefused

__all__ = ["GenerateItem", "ZeroShotItem", "EmbedItem", "generate_key", "process"]


@dataclass(frozen=True)
class GenerateItem:
    path: Path
    name: str
    question: str | None
    per_window: bool
    explain: int  # how many retrieved training texts to return; 0 = none


@dataclass(frozen=True)
class ZeroShotItem:
    path: Path
    name: str
    labels: tuple[str, ...]
    prompt: str
    top_k: int


@dataclass(frozen=True)
class EmbedItem:
    path: Path
    name: str


def generate_key(task: str, bridge: str, seed: int, max_new_tokens, num_beams, rerank) -> tuple:
    return ("generate", task, bridge, seed, max_new_tokens, num_beams, rerank)


def _clap_error(item, e: Exception) -> AudioRefused:
    # The CLAP's messages name the temporary upload file; the client knows its own name.
    return AudioRefused(str(e).replace(str(item.path), item.name))


def _generate(model, key: tuple, items: Sequence[GenerateItem], parse, max_batch: int) -> list:
    from ..clap.base import l2_normalize
    _, task, bridge, seed, max_new_tokens, num_beams, rerank = key
    results: list = [None] * len(items)
    rows, owners, pooled = [], [], {}
    for i, item in enumerate(items):
        try:
            w = model.clap.encode_audio_windows(item.path)
        except Exception as e:  # noqa: BLE001 - one bad clip fails alone
            results[i] = _clap_error(item, e)
            continue
        # Exactly what MATS.embed_audio computes for the clip: the pooled, re-normalised windows.
        pooled[i] = l2_normalize(w.embeddings.mean(0)[None])[0]
        rows.append(pooled[i])
        owners.append((i, None))
        if item.per_window:
            for k in range(len(w.embeddings)):
                rows.append(w.embeddings[k])
                owners.append((i, (float(w.starts[k]), float(w.ends[k]))))
    if rows:
        questions = [items[i].question for i, _ in owners] if items[owners[0][0]].question else None
        texts = model.generate(np.stack(rows), task, questions=questions, bridge=bridge, seed=seed,
                               batch_size=max_batch, max_new_tokens=max_new_tokens, num_beams=num_beams,
                               rerank=rerank)
        for (i, span), text in zip(owners, texts):
            parsed = parse(text)
            if span is None:
                results[i] = {**parsed, "windows": [] if items[i].per_window else None}
            else:
                results[i]["windows"].append({"start": span[0], "end": span[1], **parsed})
    for i, item in enumerate(items):
        if item.explain and i in pooled and model.santa is not None:  # no memory, nothing to show
            # A retrieval-augmented model shows the texts its prompt carried (queried with the
            # bridged embedding); otherwise the neighbours Santa mixes in (queried with the audio).
            prompted = model.model.config.retrieval.enabled
            results[i]["retrieved"] = model.retrieved(pooled[i][None], top_k=item.explain,
                                                      bridge=bridge if prompted else None, seed=seed)[0]
    return results


def _zero_shot(model, item: ZeroShotItem):
    from ..zeroshot import zero_shot
    try:
        row = zero_shot(model.clap, [item.path], list(item.labels), prompt=item.prompt, top_k=item.top_k)[0]
    except Exception as e:  # noqa: BLE001
        return _clap_error(item, e)
    return {**row, "file": item.name}


def _embed(model, item: EmbedItem):
    try:
        e = model.embed_audio([item.path])[0]
    except Exception as e:  # noqa: BLE001
        return _clap_error(item, e)
    return {"file": item.name, "clap": model.clap.name, "dim": int(e.shape[0]),
            "embedding": [float(x) for x in e]}


def process(model, key: Hashable, items: Sequence, parse, max_batch: int) -> list:
    """The batcher's ``process``: one call per group of jobs with the same key."""
    if key[0] == "generate":
        return _generate(model, key, items, parse(key[1]), max_batch)
    if key[0] == "zero-shot":
        return [_zero_shot(model, it) for it in items]
    if key[0] == "embed":
        return [_embed(model, it) for it in items]
    raise ValueError(f"unknown job kind {key[0]!r}")
