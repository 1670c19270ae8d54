"""The task registry: every task the model knows, in one table that every layer reads.

A :class:`Task` says how the task is prompted (the paper's task tag and instruction variants, the
first being the test prompt), whether it needs a question, how its output is parsed, how it is
decoded by default, how an evaluation scores it, and under which name the CLI (``mats NAME``) and the
HTTP API (``POST /v1/NAME``) expose it. The corpus, the model's prompt, the pipeline, the commands,
the server and the evaluation all derive their task lists from here.

Evaluation tasks (:data:`EVAL_TASKS`) are the benchmark-side view: a benchmark names what it measures
("classify", "tag", ...); that maps to the prompt task that answers it and the scorer that scores it.
A benchmark may also name the paper's own prompt task for its set (``single`` for ESC-50, ...); the
evaluation asks with that one only when the model was trained on it (:func:`trained_tasks`).

This module imports nothing heavy: the CLI builds its parser from it without loading torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

__all__ = ["Task", "Request", "Result", "EvalTask", "TASKS", "EVAL_TASKS", "get_task", "get_eval_task", "split_tags",
           "command_tasks", "trained_tasks"]


def split_tags(text: str) -> list[str]:
    """'dog, bark and car.' -> ['dog', 'bark', 'car'] (deduplicated, order kept)."""
    parts = re.split(r",|;|\band\b|\n", text)
    seen: dict[str, None] = {}
    for p in parts:
        p = p.strip().strip(".").strip()
        if p and p.lower() not in (s.lower() for s in seen):
            seen[p] = None
    return list(seen)


@dataclass
class Request:
    """One generation/training item: which task, the instruction (question) and the target answer."""

    task: str
    instruction: str
    answer: str | None = None
    context: str | None = None  # the retrieval hint (retrieval-augmented models only)


@dataclass
class Result:
    """One answer: a file (or one window of it), the task and the generated text, or the error."""

    file: str
    task: str
    text: str | None = None
    tags: list[str] | None = None
    question: str | None = None
    start: float | None = None
    end: float | None = None
    error: str | None = None
    bridge: str | None = None
    retrieved: list[dict] | None = None  # with explain: the memory texts behind the answer
    windows: list["Result"] | None = None  # with per_window: one answer per CLAP window
    # The exception behind ``error``, for callers that answer by its kind (the server: bad audio 400,
    # a fault of the model 500); not part of the result's data.
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if v is not None and k != "exception"}
        if self.windows is not None:
            out["windows"] = [w.to_dict() for w in self.windows]
        return out


@dataclass(frozen=True)
class Task:
    name: str
    tag: str                         # the task tag in the prompt: "... </Speech> [tag] instruction"
    instructions: tuple[str, ...]    # training variants; the first is the test prompt ("" = the question)
    help: str                        # one line, for `mats --help` and the API docs
    command: str | None = None       # `mats COMMAND` and `POST /v1/COMMAND`; None: not a command of its own
    needs_question: bool = False     # the instruction is the user's question
    output: str = "text"             # "text" or "tags" (comma-separated labels, parsed by split_tags)
    scoring: str = "caption"         # the evaluation scorer of this task's answers
    # decoding defaults at inference (mats.decoding.Decoding takes them from here)
    num_beams: int = 4
    max_new_tokens: int = 48
    repetition_penalty: float = 1.3
    no_repeat_ngram_size: int = 3
    # Beam candidates scored by the CLAP against the recording; the best match is the answer
    # (0 or 1: the top beam as is). See MATS.generate.
    rerank: int = 0

    @property
    def test_instruction(self) -> str:
        return self.instructions[0]

    def instruction(self, question: str | None = None, rng=None) -> str:
        """The instruction text: the question (tasks that need one), a random training variant
        (``rng``, a ``random.Random``), or the test prompt."""
        if question:
            return question
        if self.needs_question:
            raise ValueError(f"task {self.name!r} needs a question")
        return rng.choice(self.instructions) if rng is not None else self.test_instruction

    def parse(self, text: str) -> dict:
        """The answer as the API returns it: ``{"text"}``, plus ``"tags"`` for tag outputs."""
        return {"text": text, "tags": split_tags(text)} if self.output == "tags" else {"text": text}


_CAPTION = Task("caption", "audio caption", (
    "Describe the following audio in a caption.",
    "Write a short caption for this sound.",
    "What can be heard in this recording? Answer in one sentence.",
    "Summarise the audio clip in a sentence.",
    "Give a one-sentence description of the audio.",
), help="describe each audio file in one sentence", command="caption", scoring="caption", rerank=8)


def _caption_in_style_of(dataset: str, title: str) -> Task:
    """The caption task under the tag the paper's evaluation configs give one caption set
    (``[audio caption audiocaps]``): caption's instructions and decoding, no command of its own.
    A model answers with that set's caption style only if its corpus had rows of this task."""
    return replace(_CAPTION, name=f"caption_{dataset}", tag=f"audio caption {dataset}", command=None,
                   help=f"describe each audio file in one sentence, as {title}'s captions do")


TASKS: dict[str, Task] = {t.name: t for t in [
    _CAPTION,
    Task("tags", "multi events", (
        "Identify the sounds in the audio clip, only display audio tags.",
        "List the sound events you hear, as comma-separated tags.",
        "Which sound classes are present? Reply with tags only.",
        "Tag this audio clip.",
        "Name the sound sources in the clip as a list of labels.",
    ), help="list the sound events in each audio file", command="tag", output="tags", scoring="tag",
        num_beams=4, max_new_tokens=24, rerank=8),
    Task("music", "music caption", (
        "Listen to this music clip and describe the music.",
        "Describe the music in this recording.",
        "What kind of music is this? Describe it.",
        "Give a caption for this piece of music.",
        "Describe the instruments and mood of the music.",
    ), help="describe music recordings", command="music", scoring="caption", max_new_tokens=64),
    Task("qa", "audio qa", ("",), help="answer a question about each audio file", command="ask",
         needs_question=True, scoring="qa", max_new_tokens=32),
    Task("open", "open ended", ("",), help="open-ended instruction about a recording (chat turns)",
         needs_question=True, scoring="qa", num_beams=1, max_new_tokens=96, no_repeat_ngram_size=0,
         repetition_penalty=1.2),
    # The paper's per-dataset tasks: its evaluation configs ask ESC-50 / UrbanSound8K / VGGSound with
    # [single event] and each caption set with its own tag. No commands of their own; evaluation
    # uses them only for a model trained on them (mats.evaluation.runner.choose_prompt_task).
    Task("single", "single event", (
        "What is the sound event in this audio clip? Answer with one label.",
        "Name the one sound you hear, as a single label.",
        "Which sound class is this? Reply with one label only.",
        "Classify this audio clip: one sound event label.",
        "Give the single label that best describes the sound.",
    ), help="name the one sound event in each audio file (single-label classification)",
        output="tags", scoring="classify", max_new_tokens=16, rerank=8),
    _caption_in_style_of("audiocaps", "AudioCaps"),
    _caption_in_style_of("clotho", "Clotho"),
]}

_TASK_ALIASES = {"tag": "tags", "ask": "qa", "question": "qa"}
# The tags themselves name tasks too ("single event", "audio caption clotho").
_TASK_BY_TAG = {t.tag: t.name for t in TASKS.values()}


def get_task(name: str) -> Task:
    """A task by name, by its command name (``tag`` -> ``tags``, ``ask`` -> ``qa``) or by its tag
    (``single event`` -> ``single``)."""
    key = _TASK_ALIASES.get(name) or _TASK_BY_TAG.get(name, name)
    try:
        return TASKS[key]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None


def command_tasks() -> list[Task]:
    """Tasks that have a command of their own (`mats caption`, `POST /v1/caption`, ...), in order."""
    return [t for t in TASKS.values() if t.command]


def trained_tasks(model_config: dict) -> set[str] | None:
    """The tasks a model was trained on, from its ``config.json`` (the top-level ``"trained_tasks"``
    list the trainer writes: the distinct tasks of its corpus); None when the folder does not say
    (folders written before the key existed)."""
    value = model_config.get("trained_tasks")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ValueError(f'config.json: "trained_tasks" must be a list of task names, got {value!r}')
    return set(value)


@dataclass(frozen=True)
class EvalTask:
    name: str
    prompt_task: str   # the Task that answers it
    scoring: str       # the scorer in mats.evaluation.scoring
    primary: tuple[str, ...]  # headline metrics, first available wins


EVAL_TASKS: dict[str, EvalTask] = {t.name: t for t in [
    EvalTask("caption", "caption", "caption", ("cider_d", "keyword_accuracy", "sbert_sim", "bleu_4")),
    EvalTask("tag", "tags", "tag", ("keyword_accuracy", "map", "f1_string")),
    EvalTask("classify", "tags", "classify", ("keyword_accuracy", "accuracy")),
    EvalTask("qa", "qa", "qa", ("accuracy", "exact_match")),
]}

# Names benchmarks and papers use for the same tasks.
_EVAL_ALIASES = {
    "captioning": "caption", "audio_caption": "caption", "aac": "caption", "music_caption": "caption",
    "music": "caption", "music_captioning": "caption",
    "classification": "classify", "single_label": "classify", "scene": "classify", "single_event": "classify",
    "tags": "tag", "tagging": "tag", "multi_label": "tag", "multi_events": "tag",
    "aqa": "qa", "question_answering": "qa", "mcq": "qa",
}


def get_eval_task(name: str) -> EvalTask:
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    key = _EVAL_ALIASES.get(key, key)
    try:
        return EVAL_TASKS[key]
    except KeyError:
        known = sorted(set(EVAL_TASKS) | set(_EVAL_ALIASES))
        raise ValueError(f"unknown task {name!r} for evaluation; known: {', '.join(known)}") from None
