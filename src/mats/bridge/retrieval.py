"""Retrieval-augmented prompting: the memory's training texts nearest to the embedding, in the prompt.

A small LLM conditioned on one vector must recall the right sound names from its own parameters;
with the k nearest training texts written into the prompt it can copy them instead (DRCap, Li et
al. 2024). The bank is the model's Santa memory (its texts travel in ``santa/texts.txt``):

* training: the query is the sample's *noisy* text embedding (the vector the mapper sees); the
  sample's own text and its near-duplicates (cosine of the clean embeddings >= ``exclude_above``)
  are left out, so the model learns that the hints are related sounds, not the answer to copy;
* inference: the query is the *bridged* audio embedding (any bridge), nothing is left out.

The hint goes between the audio and the task tag (:func:`mats.prompts.user_turn`)::

    <Speech>{prefix}</Speech> Similar sounds: A dog barks. The sound of a bark. [multi events] Tag ...

Search is exact (deterministic; a bank of 8 k rows answers a batch in well under a millisecond)
up to the memory's "auto" threshold, then the memory's faiss index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["RetrievalConfig", "Retrieved", "retrieve_texts", "training_hints"]


@dataclass
class RetrievalConfig:
    """Saved in the model folder (``config.json``: ``model.retrieval``); ``k = 0`` switches it off."""

    k: int = 0                                # training texts in the prompt (0: no retrieval)
    template: str = "Similar sounds: {texts}"  # the hint; {texts} is the k texts joined by separator
    separator: str = " "
    max_chars: int = 160                      # each text cut to this many characters
    exclude_above: float = 0.95               # training: leave out texts this close to the sample's own
    # Candidates searched beyond k so that k remain after the exclusions of training.
    search_margin: int = 32

    def __post_init__(self) -> None:
        if int(self.k) < 0:
            raise ValueError(f"model.retrieval.k must be >= 0, got {self.k}")
        if "{texts}" not in self.template:
            raise ValueError(f"model.retrieval.template must contain '{{texts}}', got {self.template!r}")
        if not 0.0 < float(self.exclude_above) <= 1.0:
            raise ValueError(f"model.retrieval.exclude_above must lie in (0, 1], got {self.exclude_above}")

    @property
    def enabled(self) -> bool:
        return int(self.k) > 0

    def hint(self, texts: Sequence[str]) -> str:
        """The prompt text for these retrieved texts ("" when there are none)."""
        cut = [" ".join(t.split())[: int(self.max_chars)] for t in texts]
        return self.template.format(texts=self.separator.join(cut)) if cut else ""


@dataclass(frozen=True)
class Retrieved:
    row: int      # bank row of the memory
    text: str
    score: float  # cosine with the query

    def to_dict(self) -> dict:
        return {"text": self.text, "score": self.score, "row": self.row}


def retrieve_texts(memory, queries: np.ndarray, k: int, *, exclude_texts: Sequence[str] | None = None,
                   exclude_embeddings: np.ndarray | None = None,
                   exclude_above: float = 1.0, margin: int = 32) -> list[list[Retrieved]]:
    """The ``k`` bank texts nearest to each query (rows of ``queries``, any norm), best first.

    ``exclude_texts`` / ``exclude_embeddings`` (one per query, training only): a bank row is skipped
    when its text equals the query's own text or its embedding has cosine >= ``exclude_above`` with
    the query's own clean embedding. Fewer than ``k`` come back only when the exclusions leave fewer
    among the ``k + margin`` nearest."""
    if memory is None:
        raise ValueError("retrieval needs the model's Santa memory")
    q = np.atleast_2d(np.asarray(queries, np.float32))
    if len(q) == 0:
        return []
    excluding = exclude_texts is not None or exclude_embeddings is not None
    want = min(int(k) + (int(margin) if excluding else 0), memory.num_entries)
    search = "exact" if memory.num_entries <= 100_000 else "auto"
    idx, sims = memory.retrieve_indices(q, top_l=want, search=search)
    idx, sims = np.atleast_2d(idx), np.atleast_2d(sims)
    # A memory saved without its texts still names its rows (for display, never for prompts).
    texts = memory.texts if memory.texts is not None else [f"bank row {i}" for i in range(memory.num_entries)]
    out = []
    for i in range(len(q)):
        own_text = exclude_texts[i] if exclude_texts is not None else None
        near = None
        if exclude_embeddings is not None:
            own = np.asarray(exclude_embeddings[i], np.float32)
            own = own / max(float(np.linalg.norm(own)), 1e-12)
            near = memory.entries(idx[i]) @ own >= exclude_above
        row, seen = [], set()
        for j, (b, s) in enumerate(zip(idx[i], sims[i], strict=True)):
            b = int(b)
            if b in seen:  # the search pads short results cyclically
                continue
            seen.add(b)
            if texts[b] == own_text or (near is not None and near[j]):
                continue
            row.append(Retrieved(b, texts[b], float(s)))
            if len(row) == int(k):
                break
        out.append(row)
    return out


def training_hints(memory, config: RetrievalConfig, noisy: np.ndarray, clean: np.ndarray,
                   own_texts: Sequence[str]) -> list[str]:
    """The prompt hints of a training batch: queried with the noisy embeddings the mapper sees,
    leaving out each sample's own text and its near-duplicates (``config.exclude_above``)."""
    found = retrieve_texts(memory, noisy, config.k, exclude_texts=own_texts, exclude_embeddings=clean,
                           exclude_above=config.exclude_above, margin=config.search_margin)
    return [config.hint([r.text for r in row]) for row in found]
