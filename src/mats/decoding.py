"""How an answer is decoded: one frozen value, built once at each entry point and passed down unchanged.

Everything that decides a clip's answer besides its audio and its question lives in a
:class:`Decoding`: the task, the gap bridge (with its parameters), the seed of the bridge's noise and
every decoding option. The command line, the server and the evaluation each build one from their
own input (arguments, a request, an ``EvalConfig``); what they leave out comes from the task
registry (:mod:`mats.tasks`) and the bridge defaults
(:mod:`mats.bridge.config`); the model resolves the bridge against its memory once
(:meth:`Decoding.resolve`), and the value then travels to the LLM untouched.

It is hashable and compares by value, so the server batches requests by it (two requests may share a
batch exactly when their ``Decoding`` is equal) and the evaluation caches decodes by it. In the
spirit of transformers' ``GenerationConfig``, but small and frozen.

This module imports nothing heavy: the CLI builds one before it loads torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from .bridge.config import BridgeConfig
from .tasks import Task, get_task

__all__ = ["Decoding"]


@dataclass(frozen=True)
class Decoding:
    """The task, the bridge, the seed and the decoding options of one answer.

    ``Decoding("caption")`` is the caption task as the registry decodes it; every option left at
    None takes the task's default (``mats.tasks``), the bridge the default bridge
    (:data:`mats.bridge.config.DEFAULT_BRIDGE`). ``rerank=K`` (K > 1) decodes K beam candidates and
    answers with the one whose CLAP text embedding is closest to the clip's audio embedding; 0 or 1
    keep the top beam."""

    task: str
    bridge: BridgeConfig | str | None = None
    seed: int | None = 0
    num_beams: int | None = None
    max_new_tokens: int | None = None
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    rerank: int | None = None
    min_new_tokens: int = 0
    length_penalty: float = 1.0  # beam scores are divided by length ** length_penalty (transformers' rule)
    spec: Task = field(init=False, repr=False)  # the registry's entry for ``task``

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # a frozen value is normalised once, here, and never again
        task = get_task(self.task)
        set_(self, "task", task.name)
        set_(self, "spec", task)
        if self.bridge is None or isinstance(self.bridge, str):
            set_(self, "bridge", BridgeConfig() if self.bridge is None else BridgeConfig(name=self.bridge))
        if not isinstance(self.bridge, BridgeConfig):
            raise TypeError(f"bridge must be a bridge name or a BridgeConfig, got {type(self.bridge).__name__}")
        for name, low in (("seed", 0), ("num_beams", 1), ("max_new_tokens", 1), ("no_repeat_ngram_size", 0),
                          ("rerank", 0), ("min_new_tokens", 0)):
            value = getattr(self, name)
            if value is None:
                value = 0 if name == "seed" else getattr(task, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be a whole number, got {value!r}")
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
            set_(self, name, int(value))
        penalty = task.repetition_penalty if self.repetition_penalty is None else self.repetition_penalty
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not penalty > 0:
            raise ValueError(f"repetition_penalty must be a number > 0, got {penalty!r}")
        set_(self, "repetition_penalty", float(penalty))
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(f"min_new_tokens ({self.min_new_tokens}) is more than max_new_tokens "
                             f"({self.max_new_tokens})")
        lp = self.length_penalty
        if isinstance(lp, bool) or not isinstance(lp, (int, float)) or lp != lp:
            raise ValueError(f"length_penalty must be a number, got {lp!r}")
        set_(self, "length_penalty", float(lp))

    # -- what the layers below read ---------------------------------------------------------------
    @property
    def candidates(self) -> int:
        """Beam candidates decoded per clip: ``rerank`` of them, or the top beam alone."""
        return max(self.rerank, 1)

    def resolve(self, memory=None) -> "Decoding":
        """A copy whose bridge has every parameter filled from ``memory`` (the model's Santa memory)
        or the paper's values (:meth:`BridgeConfig.resolve`). Idempotent."""
        resolved = self.bridge.resolve(memory)
        return self if resolved == self.bridge else replace(self, bridge=resolved)

    def with_candidates(self, k: int) -> "Decoding":
        """The same decoding asked for ``k`` candidates (``rerank=k``): the beam widens to ``k``."""
        return replace(self, rerank=int(k))

    def generation_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`mats.model.MATSModel.generate`: the beam widened to the number
        of candidates, which it returns per row, best first."""
        k = self.candidates
        out: dict[str, Any] = {"num_beams": max(self.num_beams, k), "max_new_tokens": self.max_new_tokens,
                               "repetition_penalty": self.repetition_penalty,
                               "no_repeat_ngram_size": self.no_repeat_ngram_size}
        if k > 1:
            out["num_return_sequences"] = k
        if self.min_new_tokens:
            out["min_new_tokens"] = self.min_new_tokens
        if self.length_penalty != 1.0:
            out["length_penalty"] = self.length_penalty
        return out

    def to_dict(self, memory=None) -> dict[str, Any]:
        """For reports and logs: the bridge's resolved parameters and every option, by name."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        out["bridge"] = self.bridge.describe(memory)
        return out
