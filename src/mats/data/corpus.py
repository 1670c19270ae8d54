"""Text-only training corpus.

One JSONL row per sample::

    {"text": "a dog barks while a car passes", "task": "tags",
     "instruction": null, "answer": "dog, bark, car", "source": "audioset-labels"}

``text`` is the description that stands in for the audio (it is CLAP-text-encoded); ``answer`` is
what the LLM must say. ``instruction`` is optional for caption/tags/music (a training variant is
drawn per step) and required for qa/open (it is the question).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..jsonl import iter_jsonl
from ..tasks import TASKS

REQUIRED = ("text", "task", "answer")


class CorpusError(ValueError):
    pass


@dataclass
class Sample:
    text: str
    task: str
    answer: str
    instruction: str | None = None
    source: str = "unknown"


def _check_encodable(value: str, key: str, where: str) -> None:
    # JSON escapes can spell lone surrogates ("\ud800"), which no UTF-8 writer or tokenizer accepts.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise CorpusError(f"{where}: field {key!r} holds an unpaired surrogate escape at character "
                          f"{e.start + 1}; not valid text") from None


def validate_row(row: object, where: str) -> Sample:
    if not isinstance(row, dict):
        raise CorpusError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for key in REQUIRED:
        if key not in row:
            raise CorpusError(f"{where}: missing field {key!r}")
        if not isinstance(row[key], str) or not row[key].strip():
            raise CorpusError(f"{where}: field {key!r} must be a non-empty string")
        _check_encodable(row[key], key, where)
    task = row["task"]
    if task not in TASKS:
        raise CorpusError(f"{where}: unknown task {task!r} (known: {', '.join(TASKS)})")
    instruction = row.get("instruction")
    if instruction is not None and not isinstance(instruction, str):
        raise CorpusError(f"{where}: field 'instruction' must be a string or null")
    if instruction is not None:
        _check_encodable(instruction, "instruction", where)
    if task in ("qa", "open") and not (instruction or "").strip():
        raise CorpusError(f"{where}: task {task!r} needs an 'instruction' (the question)")
    unknown = set(row) - {"text", "task", "answer", "instruction", "source"}
    if unknown:
        raise CorpusError(f"{where}: unknown field(s) {sorted(unknown)}")
    return Sample(text=row["text"].strip(), task=task, answer=row["answer"].strip(),
                  instruction=(instruction or None), source=str(row.get("source", "unknown")))


def read_jsonl(path: str | Path) -> list[Sample]:
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"corpus file {path} does not exist")
    samples = [validate_row(row, where) for where, row in iter_jsonl(path, CorpusError)]
    if not samples:
        raise CorpusError(f"{path}: the corpus is empty")
    return samples


def write_jsonl(samples: Iterable[Sample], path: str | Path) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for s in samples:
            row = {"text": s.text, "task": s.task, "answer": s.answer, "source": s.source}
            if s.instruction:
                row["instruction"] = s.instruction
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


@dataclass
class CorpusSource:
    path: str
    weight: float = 1.0


@dataclass
class Corpus:
    """Several JSONL sources mixed with sampling weights (per source, not per row)."""

    samples: list[Sample]
    source_of: np.ndarray  # [N] index into sources
    sources: list[CorpusSource] = field(default_factory=list)

    @classmethod
    def load(cls, sources: Sequence[CorpusSource]) -> "Corpus":
        if not sources:
            raise CorpusError("no corpus sources given")
        samples, idx = [], []
        for i, src in enumerate(sources):
            if src.weight <= 0:
                raise CorpusError(f"source {src.path}: weight must be > 0")
            rows = read_jsonl(src.path)
            samples.extend(rows)
            idx.extend([i] * len(rows))
        return cls(samples, np.asarray(idx), list(sources))

    def __len__(self) -> int:
        return len(self.samples)

    def texts(self) -> list[str]:
        return [s.text for s in self.samples]

    def sampling_probabilities(self) -> np.ndarray:
        """Per-row probabilities: each source gets its weight's share, split evenly over its rows."""
        weights = np.array([s.weight for s in self.sources], dtype=np.float64)
        counts = np.bincount(self.source_of, minlength=len(self.sources)).astype(np.float64)
        per_row = weights[self.source_of] / counts[self.source_of]
        return per_row / per_row.sum()

    def split(self, held_out: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Row indices (train, held-out); the held-out rows never appear in training."""
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(self))
        held_out = min(held_out, max(len(self) // 10, 1)) if held_out else 0
        return np.sort(order[held_out:]), np.sort(order[:held_out])


def pick_instruction(sample: Sample, rng: random.Random) -> str:
    from ..prompts import instruction_for
    return instruction_for(sample.task, sample.instruction, rng)
