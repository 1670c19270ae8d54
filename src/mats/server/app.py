"""The HTTP API and the web page: ``create_app(model, settings)`` returns a FastAPI app.

    from mats import MATS
    from mats.server import create_app, Settings
    app = create_app(MATS.from_pretrained(), Settings(batch_window_ms=20))
    # uvicorn.run(app), or mount it in your own service

Every task of the registry with a command gets ``POST /v1/<command>`` (caption, tag, music, ask);
besides them ``/v1/zero-shot`` (labels in the request), ``/v1/embed`` (the CLAP audio embedding),
``GET /health``, ``GET /v1/info``, the page at ``/`` and the API reference at ``/docs``.

A POST takes JSON (``{"audio": "<base64>", ...}``, or ``{"path": ...}`` where the server shares a
folder) or ``multipart/form-data`` (a ``file`` part plus the same fields); ``events=true`` on a task
endpoint answers the recording's events (:meth:`mats.pipeline.MATS.events`). Errors are JSON:
``{"error": "...", "status": N}``; a field that fails validation is a 422 whose message starts
with the field's name.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import os
import shutil
import threading
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from ..bridge.config import BridgeError
from ..decoding import Decoding
from ..events import DEFAULT_HOP, DEFAULT_MIN_EVENT, check_hop
from ..pipeline import MATS, Cancelled
from ..tasks import command_tasks
from . import inference, openai_api, schemas
from .batching import Busy, MicroBatcher, WorkerFailed
from .guard import AudioRefused, PathRefused, check_audio, resolve_allowed
from .inference import ClientGone
from .middleware import RequestGuard, is_openai_path, openai_error, route_path
from .settings import Settings
from .uploads import Upload, write_temp as _write_temp
from .validation import field_errors as _field_errors, validate as _validate

__all__ = ["create_app", "Settings"]

log = logging.getLogger("mats.server")
STATIC = Path(__file__).resolve().parent / "static"


# -- errors -------------------------------------------------------------------------------------

def _error(status: int, message: str, headers: dict | None = None, request: Request | None = None) -> JSONResponse:
    """The documented error; on the OpenAI-compatible paths OpenAI's error object instead."""
    if request is not None and is_openai_path(route_path(request.scope)):
        return JSONResponse(openai_error(status, message), status_code=status, headers=headers)
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def _invalid(field_name: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", field_name), "msg": message, "type": "value_error"}])


# How often a waiting request checks that its client is still there.
_DISCONNECT_POLL_S = 0.1


# -- reading a request ----------------------------------------------------------------------------

def _parse_json(body: bytes, json_cls: type[BaseModel], form_cls: type[BaseModel]):
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
        raise HTTPException(400, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise HTTPException(422, "body: the JSON body must be an object, e.g. {\"audio\": \"<base64>\"}")
    opts = _validate(json_cls, data)
    if (opts.audio is None) == (opts.path is None):
        raise _invalid("audio", "give exactly one of \"audio\" (base64 of the file) or \"path\"")
    return opts, form_cls.model_validate(opts.model_dump(exclude={"audio", "path"}))


async def read_request(request: Request, json_cls: type[BaseModel], form_cls: type[BaseModel],
                       settings: Settings, list_fields: tuple[str, ...] = ()) -> Upload:
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype == "application/json":
        body = await request.body()
        # Parsing and validation run off the event loop: a big body must not stall other requests.
        opts, options = await run_in_threadpool(_parse_json, body, json_cls, form_cls)
        if opts.path is not None:
            real = resolve_allowed(opts.path, settings.allow_dir)
            return Upload(options, real, opts.filename or opts.path, False)
        try:
            data_bytes = base64.b64decode(opts.audio, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid("audio", "not valid base64") from None
        if not data_bytes:
            raise _invalid("audio", "the audio is empty")

        async def write(f):
            f.write(data_bytes)
        name = os.path.basename(opts.filename or "") or "upload"
        return Upload(options, await _write_temp(write, opts.filename), name, True)
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form(max_files=1, max_fields=64, max_part_size=256 * 1024)
        try:
            data = {}
            for key in form.keys():
                if key == "file":
                    continue
                values = [v for v in form.getlist(key) if isinstance(v, str)]
                data[key] = values if key in list_fields else values[-1]
            upload = form.get("file")
            if "path" in data:
                path = data.pop("path")
                options = _validate(form_cls, data)
                real = resolve_allowed(path, settings.allow_dir)
                return Upload(options, real, options.filename or path, False)
            options = _validate(form_cls, data)
            if not isinstance(upload, UploadFile):
                raise _invalid("file", "no audio: send the file as the form part named \"file\"")

            async def write(f):
                await run_in_threadpool(shutil.copyfileobj, upload.file, f, 1 << 20)
            name = os.path.basename(options.filename or upload.filename or "") or "upload"
            saved = await _write_temp(write, upload.filename)
            if saved.stat().st_size == 0:
                saved.unlink()
                raise _invalid("file", "the uploaded file is empty")
            return Upload(options, saved, name, True)
        finally:
            await form.close()
    if not ctype:
        raise HTTPException(415, "missing Content-Type: send application/json or multipart/form-data")
    raise HTTPException(415, f"unsupported Content-Type {ctype!r}: send application/json "
                             "({\"audio\": base64, ...}) or multipart/form-data (a \"file\" part)")


def _body_doc(json_cls, form_cls) -> dict:
    """OpenAPI for a body that may be JSON or a form (FastAPI cannot infer one that is both)."""
    form_schema = form_cls.model_json_schema()
    form_schema = {**form_schema, "properties": {"file": {"type": "string", "format": "binary"},
                                                 **form_schema.get("properties", {})}}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": json_cls.model_json_schema()},
        "multipart/form-data": {"schema": form_schema}}}}


def _event_options(o, window: float) -> tuple[float | None, float | None] | None:
    """``(hop, min_event)`` of an events=true request (None: the library's default), None without
    events. A hop or min_event the events cannot use is a 400 with one line, as the CLI refuses it."""
    if not o.events:
        for name in ("hop", "min_event"):
            if getattr(o, name) is not None:
                raise _invalid(name, "goes with events=true")
        return None
    if o.per_window:
        raise _invalid("per_window", "events and per_window are two answers over time: choose one")
    if o.explain:
        raise _invalid("explain", "explain answers a whole clip; it does not go with events")
    hop, min_event = o.hop, o.min_event
    if hop is not None:
        try:
            hop = check_hop(hop, window)
        except ValueError as e:  # the library speaks of the CLI's --hop
            raise HTTPException(400, str(e).replace("--hop", "hop")) from None
    if min_event is not None and not (math.isfinite(min_event) and min_event > 0):
        raise HTTPException(400, f"min_event must be positive, got {min_event:g}")
    return hop, min_event


def _max_duration(model: MATS, settings: Settings) -> float:
    """The longest recording this server answers: the decoded-size budget as mono at the CLAP's rate
    (a file stored at a higher rate or with more channels gets less), and at most the CLAP's limit."""
    return round(min(float(model.clap.max_seconds), settings.budget() / model.clap.sample_rate), 1)


# -- the app --------------------------------------------------------------------------------------

def create_app(model: MATS, settings: Settings | None = None) -> FastAPI:
    """A FastAPI app serving ``model``. The model is used only by the app's worker thread, started
    and stopped with the app's lifespan. ``settings`` is copied: the caller's stays as it was."""
    settings = replace(settings) if settings is not None else Settings()
    if settings.allow_dir is not None:
        raw = str(settings.allow_dir)
        if raw.startswith("~"):
            raise ValueError(f"--allow-dir {raw}: give the folder without '~'")
        if not Path(raw).is_dir():
            raise ValueError(f"--allow-dir {raw}: no such folder")
        settings.allow_dir = Path(raw).resolve()
    endpoint_tasks = {t.command: t for t in command_tasks()}
    # One budget source: the header check and the worker's decoder both ask the settings.
    batcher = MicroBatcher(lambda key, items: inference.process(model, key, items, settings.max_batch,
                                                                settings.budget()),
                           window_s=settings.batch_window_ms / 1000, max_batch=settings.max_batch,
                           max_queue=settings.max_queue)
    if not model.batch_invariant:
        log.warning("the model's LLM weights are not fp32: an answer may differ with the batch its request "
                    "shares (load with dtype fp32 for answers that never depend on the batch)")

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        try:
            yield
        finally:
            await run_in_threadpool(batcher.stop)

    app = FastAPI(title="MATS", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Captions, tags, answers and zero-shot labels for audio, from a model "
                              "trained on text alone. The page at / uses this API.")
    app.state.model, app.state.settings, app.state.batcher = model, settings, batcher
    app.add_middleware(RequestGuard, settings=settings)

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(request, exc: RequestValidationError):
        return _error(422, _field_errors(exc.errors()), request=request)

    @app.exception_handler(AudioRefused)
    @app.exception_handler(PathRefused)
    async def _on_refused(request, exc):
        return _error(exc.status, str(exc), request=request)

    @app.exception_handler(HTTPException)
    async def _on_http(request, exc: HTTPException):
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None), request)

    @app.exception_handler(ClientGone)
    async def _on_gone(request, exc: ClientGone):
        return _error(499, "the client went away before the answer was ready", request=request)

    @app.exception_handler(Exception)
    async def _on_fault(request, exc: Exception):
        # Whatever escaped an endpoint: still the documented JSON error (the traceback goes to the log).
        return _error(500, f"internal error ({type(exc).__name__}); the server log has the details",
                      request=request)

    def bridges() -> list[str]:
        return list(model.bridges)

    def header(upload: Upload):
        return check_audio(upload.path, upload.name, settings.budget(), model.clap.sample_rate,
                           model.clap.max_seconds)

    async def run_job(request: Request, key, make_item):
        """Hand a job to the worker and wait for it; a client that goes away withdraws its job
        (``make_item`` receives the callable the run loop asks before it reads and decodes)."""
        gone = threading.Event()
        if await request.is_disconnected():
            raise ClientGone()
        job = asyncio.ensure_future(batcher.submit(key, make_item(gone.is_set)))
        try:
            while True:
                done, _ = await asyncio.wait({job}, timeout=_DISCONNECT_POLL_S)
                if done:
                    return job.result()
                if await request.is_disconnected():
                    raise ClientGone()
        except Busy as e:
            raise HTTPException(503, str(e), headers={"Retry-After": "1"}) from None
        except (AudioRefused, PathRefused) as e:
            raise HTTPException(e.status, str(e)) from None
        except Cancelled:
            raise ClientGone() from None
        except (inference.ServerFault, WorkerFailed) as e:
            raise HTTPException(500, str(e)) from None
        finally:
            if not job.done():
                gone.set()
                job.cancel()

    # -- pages ------------------------------------------------------------------------------
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", headers=_PAGE_HEADERS)

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return FileResponse(STATIC / "docs.html", headers=_PAGE_HEADERS)

    @app.get("/health", summary="liveness")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/info", response_model=schemas.Info, summary="model, CLAP, tasks, bridges, limits")
    async def info():
        return {
            "model": _model_name(model),
            "clap": model.clap.describe() if hasattr(model.clap, "describe") else {"name": model.clap.name},
            "llm": model.llm_name,
            "tasks": [{"endpoint": f"/v1/{c}", "task": t.name, "needs_question": t.needs_question,
                       "help": t.help} for c, t in endpoint_tasks.items()],
            "bridges": bridges(),
            "default_bridge": Decoding("caption").bridge.name,
            "batch_invariant": model.batch_invariant,
            "retrieval_k": model.retrieval_k,
            "limits": {"max_upload_bytes": settings.max_upload_bytes, "max_decoded_samples": settings.budget(),
                       "max_windows": settings.max_windows, "request_timeout_s": settings.request_timeout_s,
                       "path_field": settings.allow_dir is not None, "api_key": bool(settings.api_key),
                       "clip_seconds": model.clap.clip_seconds, "max_duration_s": _max_duration(model, settings)},
            "batching": {"window_ms": settings.batch_window_ms, "max_batch": settings.max_batch},
            "events": {"default_hop": DEFAULT_HOP, "default_min_event": DEFAULT_MIN_EVENT,
                       "window": model.clap.clip_seconds},
        }

    # -- tasks ------------------------------------------------------------------------------
    def add_task_endpoint(command: str, task) -> None:
        async def endpoint(request: Request):
            upload = await read_request(request, schemas.TaskJSON, schemas.TaskOptions, settings)
            try:
                o = upload.options
                question = (o.question or "").strip() or None
                if task.needs_question and not question:
                    raise _invalid("question", f"/v1/{command} needs a non-empty question")
                if not task.needs_question and o.question is not None:
                    raise _invalid("question", f"/v1/{command} takes no question")
                try:
                    decoding = model.decoding(task.name, bridge=o.bridge, seed=o.seed, num_beams=o.num_beams,
                                              max_new_tokens=o.max_new_tokens, rerank=o.rerank)
                except BridgeError:
                    raise _invalid("bridge", f"unknown or unavailable bridge {o.bridge!r}; this model has "
                                             f"{', '.join(bridges())}") from None
                events = _event_options(o, model.clap.clip_seconds)
                head = header(upload)
                if o.per_window:
                    windows = math.ceil(head.duration / model.clap.clip_seconds)
                    if windows > settings.max_windows:
                        raise _invalid("per_window", f"{head.duration:.0f} s is {windows} windows, more than "
                                                     f"this server's {settings.max_windows}")
                key = inference.GenerateKey(decoding, o.per_window, o.top_k if o.explain else 0, events=events)
                r = await run_job(request, key, lambda gone: inference.GenerateItem(
                    upload.path, upload.name, question, gone))
            finally:
                upload.close()
            return {"file": upload.name, "task": task.name, "bridge": decoding.bridge.name, "question": question,
                    "duration": round(head.duration, 3), **{k: v for k, v in r.items() if v is not None}}

        app.add_api_route(f"/v1/{command}", endpoint, methods=["POST"], response_model=schemas.Answer,
                          response_model_exclude_none=True, summary=task.help, name=command,
                          openapi_extra=_body_doc(schemas.TaskJSON, schemas.TaskOptions),
                          responses=_ERRORS)

    for command, task in endpoint_tasks.items():
        add_task_endpoint(command, task)

    @app.post("/v1/zero-shot", response_model=schemas.ZeroShotAnswer, responses=_ERRORS,
              summary="rank labels you give by the CLAP's audio-text similarity",
              openapi_extra=_body_doc(schemas.ZeroShotJSON, schemas.ZeroShotOptions))
    async def zero_shot(request: Request):
        upload = await read_request(request, schemas.ZeroShotJSON, schemas.ZeroShotOptions, settings,
                                    list_fields=("labels",))
        try:
            header(upload)
            o = upload.options
            return await run_job(request, ("zero-shot",), lambda gone: inference.ZeroShotItem(
                upload.path, upload.name, tuple(o.labels), o.prompt, o.top_k))
        finally:
            upload.close()

    @app.post("/v1/embed", response_model=schemas.EmbedAnswer, responses=_ERRORS,
              summary="the CLAP audio embedding (L2-normalised), for retrieval",
              openapi_extra=_body_doc(schemas.EmbedJSON, schemas.EmbedOptions))
    async def embed(request: Request):
        upload = await read_request(request, schemas.EmbedJSON, schemas.EmbedOptions, settings)
        try:
            header(upload)
            return await run_job(request, ("embed",), lambda gone: inference.EmbedItem(upload.path, upload.name))
        finally:
            upload.close()

    openai_api.register(app, model, settings, batcher, header=header, run_job=run_job,
                        model_id=f"mats-{_model_name(model)}")
    return app


_ERRORS = {s: {"model": schemas.Error, "description": d} for s, d in (
    (400, "unreadable audio or JSON"), (401, "API key missing or wrong"), (404, "path not shared"),
    (413, "body or decoded audio over the limit"), (415, "not JSON or a form"),
    (422, "a field is invalid (the message names it)"), (500, "the model failed on this request"),
    (503, "too many waiting requests, or the server is stopping"),
    (504, "no answer within the request timeout"))}

# The page loads only its own files: no CDN, nothing inline from elsewhere.
_PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                                            "media-src 'self' blob:; style-src 'self'",
                 "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def _model_name(model) -> str:
    from ..config import DEFAULT_MODEL
    folder = Path(model.folder)
    return "default" if folder.resolve() == DEFAULT_MODEL.resolve() else folder.name


def _version() -> str:
    from ..version import __version__
    return __version__
