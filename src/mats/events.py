"""Events of a long recording: what happens when (issue 21, first slice).

A recording is cut into events, each with a start, an end, a kind ("sound" or "silence"), a confidence
and, for sounds, an embedding that the model answers like any clip:

1. **Silence** comes from the waveform: frames of ``SILENCE_FRAME`` seconds whose RMS is below
   ``silence_db`` (dBFS) are silent; a silent stretch at least ``min_event`` and ``MIN_SILENCE`` long is
   an event of its own (kind "silence", never captioned); shorter pauses belong to the sound around
   them. A recording that is all silence is one silence event.
2. **Change points** inside each sounding stretch: at every ``hop`` seconds ``t`` the CLAP embeds the
   window that ends at ``t`` and the one that starts at ``t`` (the CLAP's window length, shortened to
   what the stretch holds on either side but never below ``min_event``); where their cosine distance is
   a local maximum above ``threshold``, a new event starts. The change point is then placed more
   finely than the hop grid (``refine``, :data:`REFINE`): within ``REFINE_REACH`` hops, at the boundary
   between the CLAP's own frames (the default CLAP's YAMNet patches, 0.48 s apart) where the frames
   before it and after it differ most; a CLAP without frames compares short windows either side instead.
3. **Events**: each stretch between change points is embedded as windows of the CLAP's length every
   ``hop`` seconds (cut from that stretch only); the event's embedding is the L2-normalised mean of its
   windows, its confidence the mean cosine of those windows to that mean. Adjacent sound events whose
   embeddings are closer than ``threshold`` merge (they hear the same thing).

The recording is streamed (:func:`mats.audio.stream_audio`) and cut into events a page
(``PAGE_SECONDS``) at a time, so memory does not grow with its length; the longest recording is a
duration (``mats.audio.MAX_STREAM_SECONDS``, six hours), not a memory budget. A file whose data ends
early (truncated) gives the events before the damage, and :class:`Events` says where it stopped.

:func:`answer_events` decodes every sound event's embedding through :meth:`mats.pipeline.MATS.run`, so
an event's caption or tags are made exactly as the answer to a clip with that embedding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from .clap.base import l2_normalize

if TYPE_CHECKING:  # pragma: no cover
    from .clap.base import CLAP
    from .decoding import Decoding

__all__ = ["Event", "Events", "detect_events", "answer_events", "summarize", "check_hop", "to_srt", "to_vtt",
           "DEFAULT_HOP", "DEFAULT_MIN_EVENT", "THRESHOLD", "REFINE", "REFINERS", "SILENCE_DB", "SILENCE_FRAME",
           "PAGE_SECONDS", "CARRY_SECONDS", "ANSWER_BATCH"]

DEFAULT_HOP = 1.0  # seconds between window starts (and between candidate change points)
DEFAULT_MIN_EVENT = 1.0  # seconds: no change point or silence cuts a shorter event (a short sound
# between two silences is still an event of its own)
# Cosine distance between the windows either side of a time above which a new event starts (and below
# which neighbours merge): the best boundary F1 on recordings built from the dev packages of the real
# sound split only. First chosen (0.3) on three clips joined or 3 s apart (benchmarks/events_threshold.py);
# then 0.25 on the layout, 2-5 events joined, cross-faded or apart, some across 20-40 s of quiet
# (benchmarks/long_audio.py --sweep; benchmarks/results/long_audio_threshold_dev.json); then 0.15 once
# change points are placed on the CLAP's frames (REFINE): F1 0.90-0.91 from 0.1 to 0.15 on 36 dev
# recordings, 0.89 at 0.2, 0.87 at 0.25; the top of that plateau, because a dev event repeats one clip
# and real sounds vary more within an event (benchmarks/long_audio.py --boundaries;
# benchmarks/results/long_audio_boundaries_dev.json).
THRESHOLD = 0.15
# The window of a CLAP known without loading it (DefaultCLAP.clip_seconds), so that the CLI refuses a bad
# --hop before the model loads; other CLAPs are checked once loaded.
CLAP_WINDOWS = {"yamnet-minilm": 10.0, "default": 10.0}
SILENCE_DB = -50.0  # RMS in dBFS below which a frame is silent
SILENCE_FRAME = 0.1  # seconds per RMS frame
MIN_SILENCE = 2.0  # seconds: shorter pauses (between a drum's hits, say) belong to the sound around them
# Placing a change point found on the hop grid more finely: "frames" at the CLAP's frame boundary where
# the frames either side differ most (a CLAP without frames: as "windows"); "windows" where short windows
# either side differ most, every quarter hop; "grid" keeps the hop grid. On the dev recordings of
# benchmarks/long_audio.py --boundaries, frames place more boundaries within +-1 s than windows, which
# place more than the grid (docs/default-model.md, "Long recordings";
# benchmarks/results/long_audio_boundaries_dev.json).
# Tried and not kept (18 dev recordings, reach 1 hop): a pause (a silent run of 0.3 or 1 s) in reach
# taking the cut: 58 or 70 % of events bounded against 72 % without (a repeated clip's own pauses draw it).
REFINERS = ("frames", "windows", "grid")
REFINE = "frames"
REFINE_SPAN = 2.0  # seconds either side of a cut that the refinement compares (1.5 or 3 s: the same on dev)
# Hops either side of the grid's change point searched: the 10 s windows place a change up to ~1.5 s off
# when one sound dominates them (36 dev recordings: 1.5 bounds more events than 1, about as many as 2).
REFINE_REACH = 1.5
# Streaming: audio is cut into events a page at a time; the page's last event (if shorter than CARRY_SECONDS)
# is analysed again with the next page. Memory is a page of audio (300 s at 16 kHz: 19 MB) whatever the length.
PAGE_SECONDS = 300.0
CARRY_SECONDS = 120.0
# Events answered per decoding batch: the decoder's beams make a batch of 8 peak at 1.69 GB RSS against
# 1.24 GB for 2, in the same time (16 real test clips, default caption decoding, a fresh process each:
# benchmarks/long_audio.py --batch-memory, benchmarks/results/long_audio_answer_batch.json); a long
# recording has hundreds of events, and its answer should stay under 1.5 GB.
ANSWER_BATCH = 2


@dataclass
class Event:
    """One event of a recording: times in seconds, ``kind`` "sound" or "silence"; sounds carry their
    embedding (L2-normalised mean of their windows) and, once answered, ``text`` and ``tags``."""

    start: float
    end: float
    kind: str = "sound"
    confidence: float = 1.0
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)
    text: str | None = None
    tags: list[str] | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        out = {"start": round(self.start, 3), "end": round(self.end, 3), "kind": self.kind, "text": self.text,
               "tags": self.tags, "confidence": round(float(self.confidence), 4)}
        if self.error is not None:
            out["error"] = self.error
        return out


def check_hop(hop: float, window: float) -> float:
    """``hop`` as a float when it is usable with windows of ``window`` seconds; ValueError otherwise."""
    try:
        hop = float(hop)
    except (TypeError, ValueError):
        raise ValueError(f"--hop must be a number of seconds, got {hop!r}") from None
    if not np.isfinite(hop) or hop <= 0:
        raise ValueError(f"--hop must be positive, got {hop:g}")
    if hop > window:
        raise ValueError(f"--hop {hop:g} s is larger than the CLAP's window of {window:g} s: windows would skip audio")
    return hop


def _check_min_event(min_event: float) -> float:
    min_event = float(min_event)
    if not np.isfinite(min_event) or min_event <= 0:
        raise ValueError(f"--min-event must be positive, got {min_event:g}")
    return min_event


def silent_frames(wave: np.ndarray, sample_rate: int, silence_db: float = SILENCE_DB,
                  frame: float = SILENCE_FRAME) -> tuple[np.ndarray, int]:
    """(silent flag per frame, frame length in samples): RMS of each ``frame``-second slice < ``silence_db``."""
    n = max(1, int(round(frame * sample_rate)))
    count = -(-wave.size // n)
    padded = np.zeros(count * n, np.float32)
    padded[:wave.size] = wave
    sq = padded.reshape(count, n).astype(np.float64) ** 2
    lengths = np.full(count, n, np.float64)
    lengths[-1] = wave.size - (count - 1) * n
    rms = np.sqrt(sq.sum(1) / lengths)
    limit = 10.0 ** (silence_db / 20.0)
    return rms < limit, n


def _runs(flags: np.ndarray) -> list[tuple[bool, int, int]]:
    """(value, first, end) of each run of equal flags."""
    out, i = [], 0
    while i < len(flags):
        j = i
        while j < len(flags) and flags[j] == flags[i]:
            j += 1
        out.append((bool(flags[i]), i, j))
        i = j
    return out


def _stretches(wave: np.ndarray, sr: int, min_event: float, silence_db: float) -> list[tuple[bool, int, int]]:
    """(silent, start sample, end sample) covering the wave: silences shorter than ``min_event`` (and
    than ``MIN_SILENCE``) join the sound around them (a recording that is all silence stays one silence)."""
    flags, n = silent_frames(wave, sr, silence_db)
    min_frames = max(1, int(round(max(min_event, MIN_SILENCE) * sr / n)))
    runs = _runs(flags)
    if len(runs) > 1:
        flags = flags.copy()
        for silent, a, b in runs:
            if silent and b - a < min_frames:
                flags[a:b] = False
        runs = _runs(flags)
    return [(s, a * n, min(b * n, wave.size)) for s, a, b in runs]


class _Embedder:
    """The CLAP's embeddings of slices of the audio held (``wave``, whose first sample is sample ``offset``
    of the recording; spans are in recording samples), each slice embedded once."""

    def __init__(self, clap: CLAP, wave: np.ndarray, offset: int = 0):
        self.clap, self.wave, self.offset, self.cache = clap, wave, offset, {}

    def hold(self, wave: np.ndarray, offset: int) -> None:
        """Hold ``wave`` from recording sample ``offset`` on; embeddings of spans that start before it go."""
        self.wave, self.offset = wave, offset
        self.cache = {k: v for k, v in self.cache.items() if k[0] >= offset}

    def __call__(self, spans: Sequence[tuple[int, int]], batch_size: int = 16) -> np.ndarray:
        todo = [s for s in dict.fromkeys(spans) if s not in self.cache]
        o = self.offset
        for i in range(0, len(todo), batch_size):
            part = todo[i:i + batch_size]
            wins = np.stack([self.clap.fit_windows(self.wave[a - o:b - o])[0] for a, b in part])
            emb = l2_normalize(np.asarray(self.clap.embed_windows(wins), np.float32))
            self.cache.update(zip(part, emb, strict=True))
        return np.stack([self.cache[s] for s in spans]) if spans else np.zeros((0, self.clap.dim), np.float32)


def _windows(a: int, b: int, clip: int, hop: int) -> list[tuple[int, int]]:
    """Windows of ``clip`` samples every ``hop`` inside [a, b), the last aligned to b (as split_windows)."""
    if b - a <= clip:
        return [(a, b)]
    starts = list(range(a, b - clip + 1, hop))
    if starts[-1] + clip < b:
        starts.append(b - clip)
    return [(s, s + clip) for s in starts]


def _change_points(embed: _Embedder, a: int, b: int, clip: int, hop: int, min_len: int,
                   threshold: float, refine: str = REFINE) -> list[int]:
    """Sample positions inside [a, b) where the window before and the window after differ most."""
    times = []
    spans: list[tuple[int, int]] = []
    for t in range(a + hop, b, hop):
        span = min(clip, t - a, b - t)
        if span < min_len:
            continue
        times.append(t)
        spans += [(t - span, t), (t, t + span)]
    emb = embed(spans)  # all at once: the CLAP runs full batches
    scores = (1.0 - np.sum(emb[0::2] * emb[1::2], axis=1)).tolist()
    cuts: list[int] = []
    for i, (t, d) in enumerate(zip(times, scores, strict=True)):
        if d <= threshold:
            continue
        if (i > 0 and scores[i - 1] > d) or (i + 1 < len(scores) and scores[i + 1] >= d):
            continue  # not a local maximum (ties go to the first of them)
        if cuts and t - cuts[-1] < min_len:
            continue
        if b - t < min_len:
            continue
        cuts.append(t)
    out: list[int] = []
    for t in sorted(_refine(embed, t, a, b, hop, min_len, refine) for t in cuts):
        if t - (out[-1] if out else a) >= min_len and b - t >= min_len:
            out.append(t)
    return out


def _refine(embed: _Embedder, t: int, a: int, b: int, hop: int, min_len: int, refine: str) -> int:
    """The cut near ``t``, a change point on the hop grid, placed more precisely within ``REFINE_REACH``
    hops either side (``refine``: see :data:`REFINERS`)."""
    if refine == "grid":
        return t
    reach = int(round(REFINE_REACH * hop))
    lo, hi = max(a + min_len, t - reach), min(b - min_len, t + reach)
    if lo > hi:
        return t
    if refine == "frames" and _has_frames(embed.clap):
        return _refine_frames(embed, t, lo, hi, a, b)
    return _refine_windows(embed, t, lo, hi, a, b, hop, min_len)


def _has_frames(clap) -> bool:
    """Whether the CLAP scores frames of its window: the default CLAP's ``patch_scores`` (YAMNet patches
    of 0.96 s every 0.48 s, at YAMNet's rate)."""
    from .clap.yamnet import SAMPLE_RATE
    return callable(getattr(clap, "patch_scores", None)) and clap.sample_rate == SAMPLE_RATE


def _refine_frames(embed: _Embedder, t: int, lo: int, hi: int, a: int, b: int) -> int:
    """The frame boundary between ``lo`` and ``hi`` where the CLAP's frames in ``REFINE_SPAN`` s before it
    and those after it differ most: cosine distance of their mean class scores. Frames are the YAMNet
    patches of the audio around the cut (0.96 s every 0.48 s); the patch that straddles a candidate is
    left out, so neither side hears the other sound. The raw scores, not the CLAP's embedding of them:
    its sharpened top-5 weights are as far apart at several candidates, and the first of such ties
    placed cuts early (fewer events bounded on dev)."""
    from .clap.yamnet import HOP, PATCH_HOP
    clap, o, sr = embed.clap, embed.offset, embed.clap.sample_rate
    step = PATCH_HOP * HOP  # samples between patch starts; a patch is two steps long (and 15 ms)
    span = max(2, int(round(REFINE_SPAN * sr / step)))  # patches each side
    r0 = max(a, lo - span * step - step)
    r1 = min(b, hi + (span + 1) * step)
    whole = max(0, (r1 - r0 - 2 * step) // step + 1)  # patches fully inside [r0, r1) (the rest is padding)
    scores = clap.patch_scores(embed.wave[r0 - o:r1 - o])[0][:whole]
    best, best_d = t, -1.0
    for k in range(-(-(lo - r0) // step), (hi - r0) // step + 1):
        left, right = slice(max(0, k - 1 - span), max(0, k - 1)), slice(k, min(whole, k + span))
        if left.stop - left.start < 1 or right.stop - right.start < 1:
            continue
        d = 1.0 - float(l2_normalize(scores[left].mean(0)) @ l2_normalize(scores[right].mean(0)))
        if d > best_d + 1e-9:
            best, best_d = r0 + k * step, d
    return best


def _refine_windows(embed: _Embedder, t: int, lo: int, hi: int, a: int, b: int, hop: int, min_len: int) -> int:
    """The cut between ``lo`` and ``hi`` (in quarter hops) where short windows either side (``REFINE_SPAN``
    seconds, at least ``min_len``) differ most: long windows place a change late or early when one of the
    two sounds dominates the CLAP's window. For a CLAP without frames."""
    sr = embed.clap.sample_rate
    span = max(min_len, int(round(REFINE_SPAN * sr)))
    step = max(1, hop // 4)
    cands = list(range(t - (t - lo) // step * step, hi + 1, step))  # on t's quarter-hop grid
    if not cands:
        return t
    spans = [(max(a, c - span), c) for c in cands] + [(c, min(b, c + span)) for c in cands]
    emb = embed(spans)
    d = 1.0 - np.sum(emb[:len(cands)] * emb[len(cands):], axis=1)
    return cands[int(np.argmax(d))]


def _event(embed: _Embedder, a: int, b: int, clip: int, hop: int, sr: int) -> Event:
    emb = embed(_windows(a, b, clip, hop))
    centre = l2_normalize(emb.mean(0))
    return Event(a / sr, b / sr, "sound", float(np.mean(emb @ centre)), centre.astype(np.float32))


class Events(list):
    """The events of a recording (a list of :class:`Event`), with what was heard of it: ``seconds`` of
    audio read and, when its data ended early (a truncated file), ``stopped_at`` (seconds) and
    ``warning`` (where and why, one line)."""

    seconds: float = 0.0
    stopped_at: float | None = None
    warning: str | None = None


def detect_events(clap: CLAP, audio, hop: float | None = None, min_event: float | None = None,
                  threshold: float = THRESHOLD, silence_db: float = SILENCE_DB,
                  max_decoded_samples: int | None = None, max_seconds: float | None = None,
                  page_seconds: float = PAGE_SECONDS, check: Callable[[], None] | None = None,
                  refine: str = REFINE) -> Events:
    """The events of one recording (a path, a waveform at the CLAP's rate, or ``(waveform, sr)``), in
    order, covering it from 0 to its end. Raises on unreadable audio or a bad ``hop``/``min_event``
    (None: :data:`DEFAULT_HOP` / :data:`DEFAULT_MIN_EVENT`).

    The audio is streamed (:func:`mats.audio.stream_audio`; ``max_seconds``: the longest recording,
    default ``mats.audio.MAX_STREAM_SECONDS``) and analysed a page at a time: once ``page_seconds``
    are held they are cut into events, every event but the last is final, and the last one (unless it
    is already ``CARRY_SECONDS`` long) is analysed again with the next page. Memory is thus a page of
    audio whatever the length; a recording no longer than a page is analysed in one piece. An event
    that is cut where a page ends joins its neighbour when they hear the same thing (as neighbours
    merge inside a page). A truncated file gives the events before the damage; see :class:`Events`.
    ``check`` is called before each block of audio is analysed: an exception from it stops the work
    there (a server's client that went away: :meth:`mats.pipeline.MATS.events`). ``refine``: how a change
    point found on the hop grid is placed (:data:`REFINERS`)."""
    from .audio import stream_audio
    hop = check_hop(DEFAULT_HOP if hop is None else hop, clap.clip_seconds)
    min_event = _check_min_event(DEFAULT_MIN_EVENT if min_event is None else min_event)
    if not page_seconds > CARRY_SECONDS:
        raise ValueError(f"page_seconds must be more than CARRY_SECONDS ({CARRY_SECONDS:g}), got {page_seconds:g}")
    if refine not in REFINERS:
        raise ValueError(f"refine must be one of {', '.join(REFINERS)}, got {refine!r}")
    sr = clap.sample_rate
    stream = stream_audio(audio, sr, max_seconds=max_seconds, max_decoded_samples=max_decoded_samples)
    page, carry = int(round(page_seconds * sr)), int(round(CARRY_SECONDS * sr))
    opts = dict(clip=clap.clip_samples, hop=max(1, int(round(hop * sr))), min_len=max(1, int(round(min_event * sr))),
                min_event=min_event, threshold=threshold, silence_db=silence_db, refine=refine)
    embed = _Embedder(clap, np.zeros(0, np.float32))
    out = Events()
    held: list[np.ndarray] = []  # audio from embed.offset on, not yet cut into final events
    size = 0
    for block in stream:
        if check is not None:
            check()
        held.append(block)
        size += block.size
        if size < page:
            continue
        wave = np.concatenate(held)
        embed.hold(wave, embed.offset)
        found = _page_events(embed, **opts)
        last = found[-1]
        start = int(round(last.start * sr))
        end = embed.offset + wave.size
        if end - start > carry:  # the last event is long already: final too; the next page starts afresh
            _extend(out, found, threshold)
            held, size = [], 0
            embed.hold(np.zeros(0, np.float32), end)
        else:
            _extend(out, found[:-1], threshold)
            held, size = [wave[start - embed.offset:]], end - start
            embed.hold(held[0], start)
    if size:
        embed.hold(np.concatenate(held), embed.offset)
        _extend(out, _page_events(embed, **opts), threshold)
    out.seconds = stream.seconds
    if stream.stopped_at is not None:
        out.stopped_at = stream.stopped_at
        out.warning = f"{stream.what}: stopped at {stream.stopped_at:.1f} s: {stream.damage}"
    return out


def _page_events(embed: _Embedder, clip: int, hop: int, min_len: int, min_event: float, threshold: float,
                 silence_db: float, refine: str) -> list[Event]:
    """The events of the audio ``embed`` holds (times in seconds of the recording)."""
    sr, o = embed.clap.sample_rate, embed.offset
    events: list[Event] = []
    for silent, a, b in _stretches(embed.wave, sr, min_event, silence_db):
        a, b = a + o, b + o
        if silent:
            events.append(Event(a / sr, b / sr, "silence"))
            continue
        bounds = [a, *_change_points(embed, a, b, clip, hop, min_len, threshold, refine), b]
        parts = [_event(embed, s, e, clip, hop, sr) for s, e in zip(bounds[:-1], bounds[1:], strict=True)]
        merged = [parts[0]]
        for ev in parts[1:]:  # neighbours that hear the same thing are one event
            prev = merged[-1]
            if 1.0 - float(prev.embedding @ ev.embedding) <= threshold:
                merged[-1] = _event(embed, int(round(prev.start * sr)), int(round(ev.end * sr)), clip, hop, sr)
            else:
                merged.append(ev)
        events.extend(merged)
    return events


def _extend(out: list[Event], found: Sequence[Event], threshold: float) -> None:
    """Append a page's final events; the first joins the event before it (the previous page's last) when
    both are silence, or both sounds closer than ``threshold``: the page's end cut it, not a change."""
    for i, ev in enumerate(found):
        prev = out[-1] if out and i == 0 else None
        if prev is not None and prev.kind == ev.kind == "silence":
            prev.end = ev.end
        elif prev is not None and prev.kind == ev.kind == "sound" and \
                1.0 - float(prev.embedding @ ev.embedding) <= threshold:
            wa, wb = prev.end - prev.start, ev.end - ev.start  # windows are spread evenly: weigh by length
            centre = l2_normalize(wa * prev.embedding + wb * ev.embedding).astype(np.float32)
            prev.confidence = (wa * prev.confidence + wb * ev.confidence) / (wa + wb)
            prev.end, prev.embedding = ev.end, centre
        else:
            out.append(ev)


def answer_events(mats, events: Sequence[Event], decoding: str | Decoding, batch_size: int = ANSWER_BATCH,
                  cancelled: Callable[[], bool] | None = None, **options) -> list[Event]:
    """Fill ``text``/``tags`` (or ``error``) of every sound event by ``mats.run`` (a
    :class:`mats.pipeline.MATS`, which this module does not import: the pipeline imports it) on the
    event's embedding, one ``decoding`` for all; silence stays unanswered. Returns ``events`` (an
    :class:`Events` stays one, with its ``stopped_at``/``warning``). ``cancelled`` is asked before each
    event is decoded (the run loop's; an event it stops gets a ``Cancelled`` error)."""
    sounds = [e for e in events if e.kind == "sound"]
    runs = mats.run([e.embedding for e in sounds], decoding, batch_size=batch_size, cancelled=cancelled, **options)
    for ev, r in zip(sounds, runs, strict=True):
        ev.text, ev.tags, ev.error = r.text, r.tags, r.error
    return events if isinstance(events, list) else list(events)


def summarize(events: Sequence[Event]) -> str:
    """The sound events' answers in order as one sentence: "A dog barks, then water runs." (repeats of
    the same answer back to back are said once); "" when nothing was heard."""
    parts: list[str] = []
    for e in events:
        if e.kind != "sound" or not e.text:
            continue
        text = " ".join(e.text.split()).rstrip(" .")
        if parts and parts[-1].lower() == text.lower():
            continue
        parts.append(text)
    if not parts:
        return ""
    out = [parts[0]] + [p[:1].lower() + p[1:] if p[1:2].islower() or len(p) < 2 else p for p in parts[1:]]
    return ", then ".join(out) + "."


def event_text(e: Event) -> str:
    """What a subtitle says for an event: its caption, or its tags joined by commas."""
    if e.tags:
        return ", ".join(e.tags)
    return " ".join((e.text or "").split())


def _clock(seconds: float, sep: str) -> str:
    ms = max(0, int(round(seconds * 1000)))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _cues(events: Sequence[Event]) -> list[tuple[float, float, str]]:
    # Subtitles carry what is heard: silence gets no cue, nor a sound event without an answer.
    return [(e.start, e.end, event_text(e)) for e in events if e.kind == "sound" and event_text(e)]


def to_srt(events: Sequence[Event]) -> str:
    """SubRip: numbered cues ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, a blank line after each."""
    return "".join(f"{i}\n{_clock(a, ',')} --> {_clock(b, ',')}\n{text}\n\n"
                   for i, (a, b, text) in enumerate(_cues(events), 1))


def to_vtt(events: Sequence[Event]) -> str:
    """WebVTT: the ``WEBVTT`` header, then cues ``HH:MM:SS.mmm --> HH:MM:SS.mmm`` ("-->" cannot occur in a
    cue's text, so it is written "->"; "&" and "<" are escaped as the specification requires)."""
    out = ["WEBVTT\n\n"]
    for a, b, text in _cues(events):
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace("-->", "->")
        out.append(f"{_clock(a, '.')} --> {_clock(b, '.')}\n{text}\n\n")
    return "".join(out)
