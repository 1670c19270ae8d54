"""Zero-shot audio classification with any CLAP (the `mats zero-shot` command).

Each label is written into ``prompt`` and embedded by the CLAP text encoder; each input's audio
embedding is compared by cosine similarity. Scores are ``softmax(100 * cosine)`` over the labels
(the logit scale CLAP models are trained with), so they sum to 1 per file and are comparable
across files only as a ranking, not as calibrated probabilities.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["zero_shot", "clean_labels", "LOGIT_SCALE"]

LOGIT_SCALE = 100.0


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def clean_labels(labels: Sequence[str]) -> list[str]:
    out, seen = [], set()
    for lab in labels:
        lab = lab.strip()
        if lab and lab not in seen:
            seen.add(lab)
            out.append(lab)
    if len(out) < 2:
        raise ValueError("zero-shot needs at least two distinct, non-empty labels")
    return out


def zero_shot(clap, inputs, labels: Sequence[str], prompt: str = "the sound of {label}",
              top_k: int = 5, max_decoded_samples: int | None = None) -> list[dict]:
    """Classify each input among ``labels``. Returns one dict per input:
    ``{"file", "label", "score", "top_k": [{"label", "score"}, ...]}``. Errors are raised
    (the CLI catches them per file). ``max_decoded_samples``: the decoded-size budget per file."""
    labels = clean_labels(labels)
    if "{label}" not in prompt:
        raise ValueError("prompt must contain '{label}'")
    text = clap.encode_text([prompt.format(label=lab) for lab in labels])
    if isinstance(inputs, (str, Path, np.ndarray, tuple)):
        inputs = [inputs]
    results = []
    for item in inputs:
        audio = clap.encode_audio([item], max_decoded_samples=max_decoded_samples)[0]
        probs = _softmax(LOGIT_SCALE * (text @ audio))
        order = np.argsort(-probs, kind="stable")[:max(1, top_k)]
        name = str(item) if isinstance(item, (str, Path)) else None
        results.append({"file": name, "label": labels[order[0]], "score": float(probs[order[0]]),
                        "top_k": [{"label": labels[i], "score": float(probs[i])} for i in order]})
    return results
