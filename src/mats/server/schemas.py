"""Request and response models. Pydantic checks every field, so a bad value is a 422 that names it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_QUESTION_CHARS = 2000
MAX_LABELS = 200


class TaskOptions(BaseModel):
    """Fields of caption / tag / music / ask (JSON body, or form fields next to the uploaded file)."""
    model_config = ConfigDict(extra="forbid")

    question: str | None = Field(None, max_length=MAX_QUESTION_CHARS,
                                 description="the question (ask only)")
    bridge: str | None = Field(None, max_length=32,
                               description="gap bridge (default: GET /v1/info's default_bridge; it lists this model's)")
    per_window: bool = Field(False, description="also answer for each CLAP window (a timeline for long audio)")
    events: bool = Field(False, description="what happens when: the recording cut into events (start, end, kind, "
                                            "answer, confidence), answered with the summary that names them in order")
    # Not bounded here: a hop that is zero, negative or longer than the CLAP's window is a 400 with one line.
    hop: float | None = Field(None, description="with events: seconds between window starts, more than 0 and at "
                                                "most the CLAP's window (default: GET /v1/info's events.default_hop)")
    min_event: float | None = Field(None, description="with events: no change point or silence cuts an event "
                                                      "shorter than this, seconds (default: events.default_min_event)")
    explain: bool = Field(False, description="add the Santa memory's nearest training texts with their weights")
    top_k: int = Field(8, ge=1, le=32, description="how many training texts `explain` returns")
    seed: int = Field(0, ge=0, le=2 ** 31 - 1, description="seed of the bridge's noise")
    max_new_tokens: int | None = Field(None, ge=1, le=256, description="answer length limit (default: per task)")
    num_beams: int | None = Field(None, ge=1, le=16, description="beam size (default: per task)")
    rerank: int | None = Field(None, ge=0, le=16,
                               description="beam candidates the CLAP scores against the clip (0 = top beam)")
    filename: str | None = Field(None, max_length=255, description="the name the answer gives the audio")


class AudioSource(BaseModel):
    """Where the audio of a JSON request comes from: ``audio`` (base64 of the file's bytes) or
    ``path`` (a file in the folder the server shares with --allow-dir; off by default)."""
    audio: str | None = Field(None, description="the audio file's bytes, base64-encoded")
    path: str | None = Field(None, max_length=4096, description="a file under the server's --allow-dir")


class TaskJSON(TaskOptions, AudioSource):
    pass


class ZeroShotOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[str] = Field(..., min_length=2, max_length=MAX_LABELS,
                              description="candidate labels (a form field may give them comma-separated)")
    prompt: str = Field("the sound of {label}", max_length=200, description="text template for each label")
    top_k: int = Field(5, ge=1, le=MAX_LABELS)
    filename: str | None = Field(None, max_length=255)

    @field_validator("labels", mode="before")
    @classmethod
    def _split(cls, v):
        if isinstance(v, str):
            v = v.split(",")
        if isinstance(v, list) and len(v) == 1 and isinstance(v[0], str) and "," in v[0]:
            v = v[0].split(",")
        return v

    @field_validator("labels")
    @classmethod
    def _clean(cls, v: list[str]) -> list[str]:
        out = []
        for label in (s.strip() for s in v):
            if len(label) > 200:
                raise ValueError("a label is longer than 200 characters")
            if label and label not in out:
                out.append(label)
        if len(out) < 2:
            raise ValueError("give at least two distinct, non-empty labels")
        return out

    @field_validator("prompt")
    @classmethod
    def _template(cls, v: str) -> str:
        if "{label}" not in v or v.count("{") != 1 or v.count("}") != 1:
            raise ValueError("the prompt must contain '{label}' once and no other braces")
        return v


class ZeroShotJSON(ZeroShotOptions, AudioSource):
    pass


class EmbedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filename: str | None = Field(None, max_length=255)


class EmbedJSON(EmbedOptions, AudioSource):
    pass


# -- responses -----------------------------------------------------------------------------------

class WindowAnswer(BaseModel):
    start: float
    end: float
    text: str
    tags: list[str] | None = None


class EventAnswer(BaseModel):
    start: float = Field(description="seconds from the start of the recording")
    end: float
    kind: str = Field(description='"sound", or "silence" (never answered: no text, no tags)')
    confidence: float = Field(description="mean cosine of the event's CLAP windows to their mean (1: all alike)")
    text: str | None = Field(None, description="the answer for this event (absent for silence)")
    tags: list[str] | None = Field(None, description="the tags, for a task that answers with tags")
    error: str | None = Field(None, description="why this event has no answer (the model failed on it)")


class Retrieved(BaseModel):
    text: str = Field(description="a training text of the Santa memory")
    score: float = Field(description="its cosine similarity with the clip's CLAP embedding")
    weight: float = Field(description="its Santa mixing weight (softmax over the retrieved texts)")


class Answer(BaseModel):
    file: str
    task: str
    text: str
    bridge: str
    tags: list[str] | None = None
    question: str | None = None
    duration: float | None = None
    windows: list[WindowAnswer] | None = None
    events: list[EventAnswer] | None = None
    summary: str | None = Field(None, description="with events: the sound events' answers in order (also the text)")
    retrieved: list[Retrieved] | None = None


class LabelScore(BaseModel):
    label: str
    score: float


class ZeroShotAnswer(BaseModel):
    file: str
    label: str
    score: float
    top_k: list[LabelScore]


class EmbedAnswer(BaseModel):
    file: str
    clap: str
    dim: int
    embedding: list[float]


class TaskInfo(BaseModel):
    endpoint: str
    task: str
    needs_question: bool
    help: str


class Info(BaseModel):
    model: str
    clap: dict
    llm: str
    tasks: list[TaskInfo]
    bridges: list[str]
    default_bridge: str
    batch_invariant: bool = True  # false: an answer may differ with the batch it shares (bf16 weights)
    retrieval_k: int = 0  # > 0: the model writes this many retrieved training texts into its prompt
    limits: dict
    batching: dict
    events: dict = Field(description="the defaults of events=true: default_hop and default_min_event (seconds), "
                                     "and window, the CLAP's window the hop may not exceed")


class Error(BaseModel):
    error: str
    status: int
