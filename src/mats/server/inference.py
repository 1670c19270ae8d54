"""The model work behind the endpoints, run only on the batcher's worker thread.

Generate jobs share a group exactly when their :class:`GenerateKey` is equal: the same resolved
:class:`~mats.decoding.Decoding` and the same shape of answer. The group goes through the model's
run loop (:meth:`mats.pipeline.MATS.run`), like the command line and the evaluation, and each
request gets its own Result: a bad clip, a cancelled request or a model fault on one item fails that
request alone.

Errors are sorted by kind for the HTTP layer: audio the front end refuses becomes
:class:`~mats.server.guard.AudioRefused` (400/413), a request whose client went away
:class:`~mats.pipeline.Cancelled`, anything else a :class:`ServerFault` (500).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Hashable, Sequence

from .guard import AudioRefused

if TYPE_CHECKING:
    from ..decoding import Decoding
    from ..pipeline import MATS

log = logging.getLogger("mats.server")

__all__ = ["GenerateKey", "GenerateItem", "ZeroShotItem", "EmbedItem", "ServerFault", "ClientGone", "process"]


class ServerFault(RuntimeError):
    """The model failed on a request (not the client's fault): answered 500."""


class ClientGone(Exception):
    """The client closed the connection while its request waited: its work is withdrawn."""


@dataclass(frozen=True)
class GenerateKey:
    decoding: Decoding
    per_window: bool = False
    explain: int = 0  # how many retrieved training texts to return; 0 = none
    usage: bool = False  # also count the prompt's and the answer's tokens (OpenAI's "usage")
    # A streamed request decodes alone: its key holds an object of its own (equal to no other key's).
    stream: object = None
    # events=true: (hop, min_event) in seconds, None for the library's default; each recording is cut
    # into events and answered by MATS.events (one recording at a time, on this worker like any job).
    events: tuple[float | None, float | None] | None = None


@dataclass(frozen=True)
class GenerateItem:
    path: Path
    name: str
    question: str | None
    gone: Callable[[], bool] | None = None  # the client went away: skip the work
    on_text: Callable[[str], None] | None = None  # streamed: each new piece of the answer (worker thread)


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


def _failure(item, e: BaseException) -> BaseException:
    """The exception the request is answered with, by kind."""
    from ..audio import AudioError
    from ..pipeline import Cancelled

    if isinstance(e, AudioError):
        # The front end's messages name the temporary upload file; the client knows its own name.
        return AudioRefused(str(e).replace(str(item.path), item.name))
    if isinstance(e, (Cancelled, AudioRefused)):
        return e
    log.error("model fault on %s: %s: %s", item.name, type(e).__name__, e, exc_info=(type(e), e, e.__traceback__))
    return ServerFault(f"the model failed on this request ({type(e).__name__}); the server log has the details")


def _generate(model: MATS, key: GenerateKey, items: Sequence[GenerateItem], max_batch: int, budget: int) -> list:
    from ..pipeline import Item

    if key.events is not None:
        return [_events(model, key, item, max_batch, budget) for item in items]

    work = [Item(it.path, question=it.question, name=it.name, cancelled=it.gone) for it in items]
    out: list = []
    streamer = None
    if key.stream is not None:
        from ..streaming import TextDeltas
        (item,) = items
        streamer = TextDeltas(model.model.tokenizer, item.on_text or (lambda piece: None), item.gone)
    # Counting a retrieval-augmented prompt needs the texts that were in it: the run returns them.
    retrieval_k = int(model.model.config.retrieval.k) if key.usage else 0
    explain = key.explain or retrieval_k
    results = model.run(work, key.decoding, per_window=key.per_window, explain=explain, batch_size=max_batch,
                        max_decoded_samples=budget, streamer=streamer)
    for item, r in zip(items, results, strict=True):
        if r.error is not None:
            from ..pipeline import Cancelled
            if streamer is not None and isinstance(r.exception, Cancelled):
                log.info("stream of %s stopped after %d tokens: the client went away", item.name, streamer.tokens)
            out.append(_failure(item, r.exception))
            continue
        answer = {"text": r.text, "tags": r.tags, "retrieved": r.retrieved if key.explain else None}
        if key.usage:
            answer["usage"] = _usage(model, key.decoding, item.question, r, streamer)
        if r.windows is not None:
            answer["windows"] = [{"start": w.start, "end": w.end, "text": w.text,
                                  **({"tags": w.tags} if w.tags is not None else {})} for w in r.windows]
        out.append(answer)
    return out


def _events(model: MATS, key: GenerateKey, item: GenerateItem, max_batch: int, budget: int):
    """One recording's events through :meth:`MATS.events` under the server's decoded-size budget; the
    answer's text is the summary that names the sound events in order."""
    from ..events import ANSWER_BATCH, summarize
    from ..pipeline import Cancelled

    if item.gone is not None and item.gone():  # withdrawn while it waited: nothing is read
        return Cancelled("the request was cancelled")
    hop, min_event = key.events
    try:
        found = model.events(item.path, key.decoding, hop=hop, min_event=min_event, question=item.question,
                             batch_size=min(max_batch, ANSWER_BATCH), max_decoded_samples=budget,
                             cancelled=item.gone)
    except Exception as e:  # noqa: BLE001 - by kind: bad audio 400, else 500
        return _failure(item, e)
    for e in found:
        if e.error is not None:  # the other events keep their answers; this one says why it has none
            log.error("model fault on an event of %s (%.1f-%.1f s): %s", item.name, e.start, e.end, e.error)
    summary = summarize(found)
    return {"text": summary, "summary": summary, "events": [e.to_dict() for e in found]}


def _usage(model: MATS, decoding: Decoding, question: str | None, r, streamer) -> dict:
    """OpenAI's token counts: the prompt's positions (text, audio prefix, retrieved texts) and the
    answer's tokens (as decoded when streamed, else the answer's text tokenized again)."""
    prompt = model.prompt_tokens(decoding, question, r.retrieved)
    if streamer is not None:
        completion = streamer.tokens
    else:
        completion = len(model.model.tokenizer(r.text or "", add_special_tokens=False)["input_ids"])
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "finish_reason": "length" if completion >= decoding.max_new_tokens else "stop"}


def _zero_shot(model: MATS, item: ZeroShotItem, budget: int):
    from ..zeroshot import zero_shot
    try:
        row = zero_shot(model.clap, [item.path], list(item.labels), prompt=item.prompt, top_k=item.top_k,
                        max_decoded_samples=budget)[0]
    except Exception as e:  # noqa: BLE001 - by kind: bad audio 400, else 500
        return _failure(item, e)
    return {**row, "file": item.name}


def _embed(model: MATS, item: EmbedItem, budget: int):
    try:
        e = model.embed_audio([item.path], max_decoded_samples=budget)[0]
    except Exception as e:  # noqa: BLE001 - by kind: bad audio 400, else 500
        return _failure(item, e)
    return {"file": item.name, "clap": model.clap.name, "dim": int(e.shape[0]),
            "embedding": [float(x) for x in e]}


def process(model: MATS, key: Hashable, items: Sequence, max_batch: int, budget: int) -> list:
    """The batcher's ``process``: one call per group of jobs with the same key; one result (or
    exception) per item."""
    if isinstance(key, GenerateKey):
        return _generate(model, key, items, max_batch, budget)
    if key == ("zero-shot",):
        return [_zero_shot(model, it, budget) for it in items]
    if key == ("embed",):
        return [_embed(model, it, budget) for it in items]
    raise ValueError(f"unknown job kind {key!r}")
