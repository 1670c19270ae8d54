"""OpenAI-compatible routes: ``POST /v1/chat/completions`` and ``GET /v1/models``, so that OpenAI's
clients (the official ``openai`` package, chat front ends, LangChain-style tools) talk to MATS unchanged.

A request is OpenAI's chat completion with the audio in a user message, as OpenAI sends it or as vLLM
takes it::

    {"model": "mats-default", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is making this sound?"},                      # optional
        {"type": "input_audio", "input_audio": {"data": "<base64>", "format": "wav"}}]}]}
    # or {"type": "audio_url", "audio_url": {"url": "data:audio/wav;base64,<base64>"}}

Exactly one audio part in the whole conversation. The question is the text of the last user message:
no text asks for the caption, text asks it as a question (the ``ask`` task). Extra fields choose
what the task endpoints choose: ``task`` (caption, tag, music, ask), ``bridge``, ``num_beams``,
``rerank`` and ``min_tokens`` (vLLM's name). ``max_tokens`` (or ``max_completion_tokens``) bounds
the answer, ``seed`` seeds the bridge's noise; ``temperature`` and ``top_p`` are accepted and change
nothing (MATS decodes deterministically); ``n`` above 1 and ``logprobs`` are refused.

``stream: true`` answers in server-sent events (``chat.completion.chunk`` objects, then
``data: [DONE]``): token by token for greedy decoding (``num_beams: 1, rerank: 0``), and in one
piece once the CLAP has chosen for beam decoding with rerank (the default of caption and tag). A
client that goes away stops the decoding at the next token.

Nothing is decoded here: a request becomes a :class:`~mats.decoding.Decoding` and an item of the
server's run loop (:mod:`mats.server.inference`), with the same upload files, header check, budget,
API key and limits as every other endpoint. Errors are OpenAI's ``{"error": {"message", "type",
"param", "code"}}``; bad input is a 400 whose ``param`` names the field.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ..bridge.config import BridgeError
from ..pipeline import Cancelled
from ..tasks import get_task
from . import inference
from .batching import Busy, WorkerFailed
from .guard import AudioRefused, PathRefused
from .middleware import openai_error
from .schemas import MAX_QUESTION_CHARS
from .uploads import Upload, write_temp_bytes

__all__ = ["register", "ChatCompletionRequest", "OpenAIError"]

log = logging.getLogger("mats.server")

# input_audio.format values (OpenAI's "wav" and "mp3", and what else libsndfile reads).
AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg", "oga", "opus", "aiff", "aif")
_DATA_URL = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<data>.*)$", re.DOTALL)
_MIME_SUFFIX = {"audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav", "audio/vnd.wave": "wav",
                "audio/mpeg": "mp3", "audio/mp3": "mp3", "audio/flac": "flac", "audio/x-flac": "flac",
                "audio/ogg": "ogg", "audio/opus": "opus", "audio/aiff": "aiff", "audio/x-aiff": "aiff"}


class OpenAIError(Exception):
    """An answer in OpenAI's error shape: ``status``, ``message``, the field (``param``) and a ``code``."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers

    def response(self) -> JSONResponse:
        return JSONResponse(openai_error(self.status, self.message, self.param, self.code),
                            status_code=self.status, headers=self.headers)


def _bad(param: str, message: str, code: str = "invalid_value") -> OpenAIError:
    return OpenAIError(400, f"{param}: {message}", param, code)


# -- the request ---------------------------------------------------------------------------------

class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The fields of ``POST /v1/chat/completions`` (``messages`` is checked by hand, for messages
    that name the exact part at fault)."""
    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., max_length=200, description="the served model's id (GET /v1/models)")
    messages: list[Any] = Field(..., min_length=1, max_length=64)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=256, description="answer length limit (default: per task)")
    max_completion_tokens: int | None = Field(None, ge=1, le=256, description="the same as max_tokens")
    n: int = Field(1, ge=1, description="answers per request: only 1")
    seed: int | None = Field(None, ge=0, le=2 ** 31 - 1, description="seed of the bridge's noise (default 0)")
    temperature: float | None = Field(None, ge=0, le=2, description="accepted; decoding is deterministic")
    top_p: float | None = Field(None, ge=0, le=1, description="accepted; decoding is deterministic")
    logprobs: bool | None = Field(None, description="not supported: leave out or false")
    user: str | None = Field(None, max_length=256)
    # MATS's own choices (vLLM-style extra fields; the openai client sends them with extra_body=...)
    task: str | None = Field(None, max_length=32, description="caption, tag, music or ask (default: caption "
                                                             "without text, ask with text)")
    bridge: str | None = Field(None, max_length=32, description="gap bridge (GET /v1/info lists this model's)")
    num_beams: int | None = Field(None, ge=1, le=16, description="beam size (default: per task)")
    rerank: int | None = Field(None, ge=0, le=16, description="beam candidates the CLAP chooses among (0: top beam)")
    min_tokens: int | None = Field(None, ge=0, le=256, description="answer length floor (default 0)")


@dataclass
class Chat:
    """A chat completion request made ready for the run loop."""
    options: ChatCompletionRequest
    audio: bytes
    audio_name: str  # a file name with the audio's format as its extension
    question: str | None


def _where(loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _audio_part(part: dict, where: str) -> tuple[bytes, str]:
    """The bytes and a file name of one audio part (``input_audio`` or ``audio_url`` with a data: URL)."""
    if part["type"] == "input_audio":
        spec = part.get("input_audio")
        if not isinstance(spec, dict) or not isinstance(spec.get("data"), str):
            raise _bad(f"{where}.input_audio", "give {\"data\": \"<base64>\", \"format\": \"wav\"}")
        fmt = spec.get("format")
        if fmt is not None and (not isinstance(fmt, str) or fmt.lower() not in AUDIO_FORMATS):
            raise _bad(f"{where}.input_audio.format", f"unknown audio format {fmt!r}; one of "
                                                      f"{', '.join(AUDIO_FORMATS)}")
        data, field, suffix = spec["data"], f"{where}.input_audio.data", (fmt or "wav").lower()
    else:
        spec = part.get("audio_url")
        url = spec.get("url") if isinstance(spec, dict) else spec if isinstance(spec, str) else None
        field = f"{where}.audio_url.url"
        if not isinstance(url, str):
            raise _bad(f"{where}.audio_url", "give {\"url\": \"data:audio/wav;base64,...\"}")
        m = _DATA_URL.match(url[:4096]) if url.startswith("data:") else None
        if m is None:
            raise _bad(field, "only data: URLs are read (data:audio/wav;base64,...); this server fetches "
                              "nothing from the network", "unsupported_url")
        head = url[: url.index(",")]
        mime = m.group("mime").strip().lower()
        if not mime.startswith("audio/"):
            raise _bad(field, f"the data: URL holds {mime or 'text/plain'!s}, not audio (audio/wav, audio/mpeg, "
                              "audio/flac, audio/ogg, ...)", "invalid_audio_type")
        if ";base64" not in head.lower():
            raise _bad(field, "the data: URL must be base64 (data:audio/wav;base64,...)")
        data, suffix = url[len(head) + 1:], _MIME_SUFFIX.get(mime, "")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(field, "not valid base64", "invalid_base64") from None
    if not raw:
        raise _bad(field, "the audio is empty", "empty_audio")
    return raw, f"audio.{suffix}" if suffix else "audio"


def _text_of(content, where: str) -> str:
    if isinstance(content, str):
        return content
    return " ".join(p["text"] for p in content if p["type"] == "text")


def parse_chat(body: bytes) -> Chat:
    """The request's options, its one audio clip and its question; an :class:`OpenAIError` naming
    the field otherwise. Runs off the event loop (a body may hold megabytes of base64)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise OpenAIError(400, "the body is not valid JSON", None, "invalid_json") from None
    if not isinstance(data, dict):
        raise OpenAIError(400, "the JSON body must be an object", None, "invalid_json")
    try:
        options = ChatCompletionRequest.model_validate(data)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        where = _where(err["loc"])
        if err["type"] == "extra_forbidden":
            raise OpenAIError(400, f"{where}: unknown or unsupported field", where, "unknown_parameter") from None
        raise _bad(where, err["msg"]) from None
    if options.n != 1:
        raise _bad("n", "only n=1 is supported (MATS gives one answer per request)", "unsupported_value")
    if options.logprobs:
        raise _bad("logprobs", "log probabilities are not supported", "unsupported_value")
    audio: list[tuple[bytes, str, str]] = []
    questions: list[str | None] = []
    for i, message in enumerate(options.messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _bad(where, "a message is an object {\"role\": ..., \"content\": ...}")
        role, content = message.get("role"), message.get("content")
        if role not in ("system", "developer", "user", "assistant"):
            raise _bad(f"{where}.role", f"unknown role {role!r}; system, developer, user or assistant")
        if content is None and role == "assistant":
            continue
        if not isinstance(content, (str, list)):
            raise _bad(f"{where}.content", "content is a string or a list of parts")
        if isinstance(content, list):
            for j, part in enumerate(content):
                pw = f"{where}.content[{j}]"
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text":
                    if not isinstance(part.get("text"), str):
                        raise _bad(f"{pw}.text", "a text part needs a string \"text\"")
                elif kind in ("input_audio", "audio_url"):
                    if role != "user":
                        raise _bad(pw, f"audio belongs in a user message, not a {role} message")
                    audio.append((*_audio_part(part, pw), pw))
                else:
                    raise _bad(f"{pw}.type", f"unsupported part type {kind!r}; text, input_audio or audio_url")
        if role == "user":
            questions.append(_text_of(content, where).strip() or None)
    if not audio:
        raise _bad("messages", "no audio: put the clip in a user message as an input_audio part "
                               "({\"type\": \"input_audio\", \"input_audio\": {\"data\": base64, \"format\": "
                               "\"wav\"}}) or an audio_url part with a data: URL", "missing_audio")
    if len(audio) > 1:
        raise _bad(audio[1][2], f"{len(audio)} audio parts; a request answers about one clip", "too_many_audio")
    question = questions[-1] if questions else None
    if question is not None and len(question) > MAX_QUESTION_CHARS:
        raise _bad("messages", f"the question is longer than {MAX_QUESTION_CHARS} characters")
    raw, name, _ = audio[0]
    return Chat(options, raw, name, question)


# -- the answer ----------------------------------------------------------------------------------

def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _failure(e: BaseException) -> OpenAIError:
    """What an error of the run (the same kinds as the task endpoints') is in OpenAI's shape."""
    if isinstance(e, OpenAIError):
        return e
    if isinstance(e, (AudioRefused, PathRefused)):
        return OpenAIError(e.status, str(e), "messages", "invalid_audio" if e.status == 400 else "audio_too_large")
    if isinstance(e, Busy):
        return OpenAIError(503, str(e), None, "server_busy", {"Retry-After": "1"})
    if isinstance(e, HTTPException):
        return OpenAIError(e.status_code, str(e.detail), None, None, getattr(e, "headers", None))
    if isinstance(e, (inference.ServerFault, WorkerFailed)):
        return OpenAIError(500, str(e), None, "model_error")
    if isinstance(e, (Cancelled, inference.ClientGone)):
        return OpenAIError(499, "the client went away before the answer was ready", None, "cancelled")
    log.error("chat completion failed: %s: %s", type(e).__name__, e, exc_info=(type(e), e, e.__traceback__))
    return OpenAIError(500, f"internal error ({type(e).__name__}); the server log has the details", None,
                       "internal_error")


def register(app: FastAPI, model, settings, batcher, *, header: Callable[[Upload], Any],
             run_job: Callable, model_id: str) -> None:
    """Add ``/v1/chat/completions`` and ``/v1/models`` to ``app``: ``header`` checks an upload's audio
    header against the budget, ``run_job`` hands a job to the worker and waits for it (both from
    :func:`mats.server.app.create_app`); ``model_id`` is the id the clients name the model by."""
    created = int(time.time())
    model_card = {"id": model_id, "object": "model", "created": created, "owned_by": "mats"}

    @app.exception_handler(OpenAIError)
    async def _on_openai_error(request, exc: OpenAIError):
        return exc.response()

    @app.get("/v1/models", summary="the served model (OpenAI's model list)", tags=["OpenAI-compatible"])
    async def list_models():
        return {"object": "list", "data": [model_card]}

    @app.get("/v1/models/{name:path}", summary="one model (OpenAI's model object)", tags=["OpenAI-compatible"])
    async def get_model(name: str):
        if name != model_id:
            raise OpenAIError(404, f"model {name!r} is not served here; this server serves {model_id!r}",
                              "model", "model_not_found")
        return model_card

    def decoding_of(chat: Chat):
        o = chat.options
        if o.model != model_id:
            raise _bad("model", f"unknown model {o.model!r}; this server serves {model_id!r} (GET /v1/models)",
                       "model_not_found")
        if o.task is not None:
            try:
                task = get_task(o.task)
            except ValueError:
                raise _bad("task", f"unknown task {o.task!r}; caption, tag, music or ask") from None
            if task.needs_question and not chat.question:
                raise _bad("messages", f"task {o.task!r} needs a question: add a text part to the user message")
            if not task.needs_question and chat.question:
                raise _bad("task", f"task {o.task!r} takes no question; leave the text out, or use task 'ask'")
        else:
            task = get_task("ask" if chat.question else "caption")
        max_tokens = o.max_completion_tokens if o.max_completion_tokens is not None else o.max_tokens
        try:
            return model.decoding(task.name, bridge=o.bridge, seed=o.seed, num_beams=o.num_beams,
                                  max_new_tokens=max_tokens, rerank=o.rerank,
                                  min_new_tokens=o.min_tokens if o.min_tokens is not None else 0)
        except BridgeError:
            raise _bad("bridge", f"unknown or unavailable bridge {o.bridge!r}; this model has "
                                 f"{', '.join(model.bridges)}") from None
        except ValueError as e:  # e.g. min_tokens above max_tokens
            raise _bad("min_tokens" if "min_new_tokens" in str(e) else "max_tokens", str(e)) from None

    @app.post("/v1/chat/completions", summary="OpenAI's chat completion with an audio part (streaming too)",
              tags=["OpenAI-compatible"], responses={400: {"description": "a field is invalid (param names it)"}})
    async def chat_completions(request: Request):
        upload = None
        try:
            ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
            if ctype != "application/json":
                raise OpenAIError(415, "send the request as application/json", None, "unsupported_media_type")
            chat = await run_in_threadpool(parse_chat, await request.body())
            decoding = decoding_of(chat)
            upload = Upload(chat.options, await write_temp_bytes(chat.audio, chat.audio_name), chat.audio_name, True)
            header(upload)
            greedy = decoding.num_beams == 1 and decoding.candidates == 1
            if chat.options.stream:
                stream = _Stream(request, batcher, decoding, chat, upload, model_id, greedy)
                upload = None  # the stream owns it now
                return StreamingResponse(stream.events(), media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                                         background=BackgroundTask(stream.close))
            key = inference.GenerateKey(decoding, usage=True)
            path, name, question = upload.path, upload.name, chat.question
            r = await run_job(request, key, lambda gone: inference.GenerateItem(path, name, question, gone))
        except Exception as e:  # noqa: BLE001 - every failure in OpenAI's shape, by kind
            raise _failure(e) from None
        finally:
            if upload is not None:
                upload.close()
        usage = r["usage"]
        return {"id": _completion_id(), "object": "chat.completion", "created": int(time.time()), "model": model_id,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": r["text"]},
                             "finish_reason": usage["finish_reason"], "logprobs": None}],
                "usage": {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}}


class _Stream:
    """One streamed answer: the job on the worker, the pieces it hands over, the SSE events."""

    def __init__(self, request: Request, batcher, decoding, chat: Chat, upload: Upload, model_id: str, greedy: bool):
        self.request, self.batcher, self.upload = request, batcher, upload
        self.model_id, self.greedy = model_id, greedy
        self.include_usage = bool(chat.options.stream_options and chat.options.stream_options.include_usage)
        self.id, self.created = _completion_id(), int(time.time())
        self.gone = threading.Event()
        self.pieces: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def on_text(piece: str) -> None:  # on the worker thread
            loop.call_soon_threadsafe(self.pieces.put_nowait, piece)

        # Greedy decoding streams token by token and so decodes alone; beams + rerank may share a batch.
        self.key = inference.GenerateKey(decoding, usage=True, stream=object() if greedy else None)
        self.item = inference.GenerateItem(upload.path, upload.name, chat.question, self.gone.is_set,
                                           on_text if greedy else None)

    def close(self) -> None:
        self.upload.close()

    def chunk(self, delta: dict, finish_reason: str | None = None, **extra) -> str:
        return _sse({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                     "model": self.model_id, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                          "finish_reason": finish_reason}], **extra})

    async def events(self):
        job = asyncio.ensure_future(self.batcher.submit(self.key, self.item))
        getter = None
        try:
            yield self.chunk({"role": "assistant", "content": ""})
            while True:
                getter = asyncio.ensure_future(self.pieces.get())
                done, _ = await asyncio.wait({getter, job}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    break
                yield self.chunk({"content": getter.result()})
            getter.cancel()
            while not self.pieces.empty():  # handed over just before the answer
                yield self.chunk({"content": self.pieces.get_nowait()})
            r = job.result()
            if not self.greedy and r["text"]:  # beams + rerank: the answer once the CLAP has chosen it
                yield self.chunk({"content": r["text"]})
            usage = r["usage"]
            yield self.chunk({}, usage["finish_reason"])
            if self.include_usage:
                yield _sse({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                            "model": self.model_id, "choices": [],
                            "usage": {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}})
        except Exception as e:  # noqa: BLE001 - the status line is sent: the error goes in the stream
            err = _failure(e)
            yield _sse(openai_error(err.status, err.message, err.param, err.code))
        finally:
            if getter is not None:
                getter.cancel()
            if not job.done():  # the client went away (the response was cancelled): stop the decoding
                self.gone.set()
                job.cancel()
                log.info("chat stream: the client went away; its decoding stops at the next token")
            self.close()
        yield "data: [DONE]\n\n"
