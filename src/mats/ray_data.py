"""Answering a collection on a Ray cluster: a callable class for ``ray.data.Dataset.map_batches``.

For collections that outgrow one machine (``mats caption DIR --shard I/N`` splits one without any
engine). Ray Data starts one actor per model copy, loads the model once in each, and streams the
rows through them; every batch goes through :meth:`mats.pipeline.MATS.run`, the loop the command
line uses, so the answers are the CLI's::

    import ray
    from mats.ray_data import MATSPredictor

    ds = ray.data.from_items([{"path": str(p)} for p in files])
    out = ds.map_batches(MATSPredictor, fn_constructor_kwargs={"task": "tags"},
                         concurrency=4, batch_size=8)
    for row in out.iter_rows():
        print(row["path"], row["text"] or row["error"])

Install with ``pip install "mats[ray]"``. Rows need a ``path`` column (a file every worker can read)
and may carry a ``question`` column for the tasks that ask one. Output rows: ``path``, ``task``,
``text``, ``tags`` (comma-separated), ``error`` (empty strings where there is nothing to say).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["MATSPredictor"]


class MATSPredictor:
    """A MATS model in a Ray actor. ``task`` and ``options`` (bridge, seed, num_beams,
    max_new_tokens, rerank, ...) make the :class:`~mats.decoding.Decoding` every row is answered
    with; ``model``: a model folder (default: the offline default model); ``question``: the question
    of rows without a ``question`` column."""

    def __init__(self, task: str = "caption", model: str | None = None, question: str | None = None,
                 device: str | None = None, dtype: str | None = None, batch_size: int = 8, **options: Any):
        from .pipeline import MATS

        self.mats = MATS.from_pretrained(model, device=device, dtype=dtype)
        self.decoding = self.mats.decoding(task, **options)  # refused here, once, if an option is bad
        self.question = question
        self.batch_size = int(batch_size)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from .pipeline import Item

        if "path" not in batch:
            raise ValueError(f"MATSPredictor needs a 'path' column; the rows have {sorted(batch)}")
        paths = [str(p) for p in batch["path"]]
        questions = [str(q) for q in batch["question"]] if "question" in batch else [self.question] * len(paths)
        items = [Item(p, question=q or self.question) for p, q in zip(paths, questions, strict=True)]
        results = list(self.mats.run(items, self.decoding, batch_size=self.batch_size))
        return {"path": paths,
                "task": [r.task for r in results],
                "text": [r.text or "" for r in results],
                "tags": [", ".join(r.tags or []) for r in results],
                "error": [r.error or "" for r in results]}
