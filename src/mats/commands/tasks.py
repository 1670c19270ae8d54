"""`mats caption | tag | music | ask | chat`: run a model on audio files.

One command per task of the registry (:mod:`mats.tasks`) that has a command name; tasks that need a
question take it as the last argument.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys

from ..bridge.config import BRIDGES, DEFAULT_BRIDGE
from ..tasks import command_tasks, get_task
from . import add_decoding, add_device, add_format, add_runtime
from .batch import BATCH_EPILOG, ResultsFile, add_batch_options, check_resume, open_results, shard

log = logging.getLogger(__name__)

EPILOG = """\
Inputs: audio files (WAV, FLAC, OGG, MP3 where libsndfile reads them) or folders, which expand to
the audio files inside (recursively, sorted). Long recordings are cut into the CLAP's windows and
pooled; --per-window gives one answer per window with start/end seconds instead.
--events finds what happens when: events with start, end, kind ("sound" or "silence"), an answer
and a confidence, where the CLAP's windows (one every --hop seconds) change; silence is an event of
its own and is never captioned. With --events the audio is streamed: memory stays the same whatever
the length, and recordings of up to 6 hours are answered (MATS_MAX_STREAM_SECONDS changes it).

Output formats:
  text   FILE<TAB>answer   (default)
  jsonl  one JSON object per input: {"file", "task", "text"[, "tags", "start", "end", "error",
         "retrieved": [{"text", "score", "row", "weight"}, ...] with --show-retrieved]}
  csv    file,task,start,end,text,error[,retrieved]
  with --events:
  text   FILE [START-ENDs]<TAB>answer (or "(silence)"), one line per event; then, with more than
         one sound event, FILE<TAB>summary (the events in order)
  jsonl  {"file", "task", "events": [{"start", "end", "kind", "text", "tags", "confidence"}, ...],
         "summary"}: the summary names the sound events in order; a file whose data ends early
         (truncated) gives the events before the damage, "stopped_at" (seconds) and "warning"
         (also printed on stderr, whatever the format)
  csv    file,task,start,end,kind,text,tags,confidence,error (one row per event)
  srt    SubRip subtitles, one cue per sound event (one input file)
  vtt    WebVTT subtitles, likewise
  (text with --show-retrieved: a third column, "text (score) | text (score) | ...")

A file that cannot be read is reported on its own line (with "error") and the batch goes on; the
exit code is 1 if any file failed. Output is deterministic: the same files, seed and model give the
same text.

""" + BATCH_EPILOG


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model folder (default: the offline default model)")
    add_format(p, ("text", "jsonl", "csv", "srt", "vtt"))
    add_bridge(p)
    p.add_argument("--per-window", action="store_true", help="one answer per CLAP window of long audio")
    p.add_argument("--events", action="store_true",
                   help="what happens when: events (start, end, kind, answer, confidence) where the CLAP's windows "
                        "change; silence is its own event, never captioned; --format srt|vtt writes subtitles")
    p.add_argument("--hop", type=float, metavar="S",
                   help="with --events: seconds between window starts, more than 0 and at most the CLAP's window "
                        "(default 1)")
    p.add_argument("--min-event", type=float, metavar="S",
                   help="with --events: no change point or silence cuts an event shorter than this, in seconds "
                        "(default 1; a silence also needs 2); a short sound between silences stays an event")
    p.add_argument("--show-retrieved", action="store_true",
                   help="also print the model's memory texts nearest to each clip, with their cosine: the "
                        "neighbours Santa mixes in (a retrieval-augmented model: the texts in its prompt)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="clips decoded together (default 8; with --events 2, which bounds the memory a long "
                        "recording's many events take: see mats.events.ANSWER_BATCH)")
    add_batch_options(p)
    add_decoding(p)
    add_seed(p)
    add_device(p)
    add_runtime(p)


def add_bridge(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bridge", choices=BRIDGES,
                   help=f"how the audio embedding reaches the text space (default: {DEFAULT_BRIDGE})")


def add_seed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed of the bridge's noise (default 0)")


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    for task in command_tasks():
        p = sub.add_parser(task.command, help=task.help, description=task.help.capitalize() + ".",
                           epilog=EPILOG, formatter_class=fmt, parents=[common])
        if task.needs_question:
            p.add_argument("paths", nargs="+", metavar="PATH", help="audio files/folders, then the question last")
        else:
            p.add_argument("paths", nargs="+", metavar="PATH", help="audio files or folders")
        _options(p)
        p.set_defaults(func=_run, task=task.name, question=None)
    p = sub.add_parser("chat", help="talk about one audio file, turn by turn", parents=[common],
                       description="Interactive questions about one audio file. Empty line or Ctrl-D ends.")
    p.add_argument("path")
    p.add_argument("--model", help="model folder (default: the offline default model)")
    add_bridge(p)
    add_device(p)
    add_runtime(p)
    add_seed(p)
    add_format(p, ("text", "jsonl"))
    p.set_defaults(func=_chat)


def _load(args):
    from ..pipeline import MATS
    return MATS.from_pretrained(args.model, device=args.device, dtype=args.dtype, runtime=args.runtime)


def _check_model_folder(args) -> None:
    """The --model folder's config, checked without loading anything (torch-free)."""
    from pathlib import Path

    from ..config import DEFAULT_MODEL, read_model_config
    read_model_config(Path(args.model) if args.model else DEFAULT_MODEL)


def _take_question(args) -> None:
    """Tasks with a question: `mats ask PATH... "question"` (the last argument is the question)."""
    if len(args.paths) < 2:
        raise ValueError(f"mats {args.command} needs audio file(s) and then the question: "
                         f"mats {args.command} PATH... \"question\"")
    args.question = args.paths[-1]
    args.paths = args.paths[:-1]
    if not args.question.strip():
        raise ValueError("the question is empty")
    if _looks_like_audio(args.question):
        raise ValueError(f"the last argument must be the question, but {args.question!r} is an audio "
                         f"file or folder; usage: mats {args.command} PATH... \"question\"")


def _looks_like_audio(arg: str) -> bool:
    from pathlib import Path

    from ..audio import AUDIO_EXTENSIONS
    p = Path(arg).expanduser()
    try:
        return p.is_dir() or (p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    except OSError:  # a long question is not a valid file name
        return False


def _one_line(s: str) -> str:
    """Text format is one line per answer: newlines and tabs inside an answer become spaces."""
    return " ".join(s.split())


def _why(r) -> str:
    return " | ".join(f"{_one_line(x['text'])} ({x['score']:.2f})" for x in r.retrieved or [])


def _unreadable(files, task: str, question: str | None) -> list | None:
    """The error Results when no file can be read at all (missing, empty, not audio), so the
    command reports them in a fraction of a second instead of loading the model first; None
    when any file looks readable (the run then reports each bad file in its place)."""
    from ..audio import probe_audio
    from ..tasks import Result

    results = []
    for f in files:
        try:
            probe_audio(f)
        except Exception as e:  # the same line as the run would print for this file
            results.append(Result(str(f), task, error=f"{type(e).__name__}: {e}", question=question))
        else:
            return None
    return results


def _print(r, args, writer, out: ResultsFile | None = None) -> None:
    if out is not None:  # one object per input (its windows inside it)
        out.write(r.to_dict())
    elif args.format == "jsonl":
        print(json.dumps(r.to_dict(), ensure_ascii=False), flush=True)
    elif writer:
        writer.writerow([r.file, r.task, r.start if r.start is not None else "",
                         r.end if r.end is not None else "", r.text or "", r.error or ""]
                        + [_why(r)] * args.show_retrieved)
    else:
        where = r.file + (f" [{r.start:.1f}-{r.end:.1f}s]" if r.start is not None else "")
        why = f"\t{_why(r)}" if args.show_retrieved and not r.error else ""
        print(f"{where}\t{'ERROR: ' + _one_line(r.error) if r.error else _one_line(r.text)}{why}", flush=True)


def _decoding(args, task: str):
    """The command's Decoding, built and checked before the model loads (a bad option costs no load)."""
    from ..decoding import Decoding
    return Decoding(task, bridge=args.bridge, seed=args.seed, num_beams=getattr(args, "beams", None),
                    max_new_tokens=getattr(args, "max_new_tokens", None), rerank=getattr(args, "rerank", None))


def _run(args) -> int:
    from ..audio import expand_audio_args

    if get_task(args.task).needs_question:
        _take_question(args)
    decoding = _decoding(args, args.task)
    check_resume(args)
    _check_events(args)
    files = shard(expand_audio_args(args.paths), args.shard)
    if args.format in ("srt", "vtt") and len(files) > 1:
        raise ValueError(f"--format {args.format} writes the subtitles of one recording; give one audio file "
                         f"(got {len(files)})")
    if not files:  # more shards than inputs: this one has none
        log.info("shard %d/%d of these inputs is empty", *args.shard)
        return 0
    with open_results(args) as out:
        if out is not None:
            total, files = len(files), out.pending(files)
            if args.resume:
                log.info("--resume: %d of %d inputs already answered in %s; %d to go", total - len(files), total,
                         args.out, len(files))
        return _answer_files(args, decoding, files, out) if files else 0


def _check_events(args) -> None:
    """--events and its options, checked before anything loads (a bad --hop costs no model load)."""
    from ..events import CLAP_WINDOWS, check_hop

    if not args.events:
        for flag, value in (("--hop", args.hop), ("--min-event", args.min_event)):
            if value is not None:
                raise ValueError(f"{flag} goes with --events")
        if args.format in ("srt", "vtt"):
            raise ValueError(f"--format {args.format} writes events as subtitles: add --events")
        return
    if args.per_window:
        raise ValueError("--events and --per-window are two answers over time: choose one")
    if args.show_retrieved:
        raise ValueError("--show-retrieved answers a whole clip; it does not go with --events")
    if args.format in ("srt", "vtt") and args.out is not None:
        raise ValueError(f"--out writes JSON lines; print --format {args.format} to stdout instead")
    if args.hop is not None:
        from pathlib import Path

        from ..config import DEFAULT_MODEL, read_model_config
        clap = read_model_config(Path(args.model) if args.model else DEFAULT_MODEL).get("model", {}).get("clap")
        check_hop(args.hop, CLAP_WINDOWS.get(clap, float("inf")))  # other CLAPs: checked once loaded
    if args.min_event is not None and not args.min_event > 0:
        raise ValueError(f"--min-event must be positive, got {args.min_event:g}")


def _answer_files(args, decoding, files, out: ResultsFile | None) -> int:
    if args.events:
        return _answer_events(args, decoding, files, out)
    unreadable = _unreadable(files, args.task, args.question)
    if unreadable is not None:
        _check_model_folder(args)  # a wrong --model is still the error to report
    writer = csv.writer(sys.stdout) if args.format == "csv" and out is None else None
    if writer:
        writer.writerow(["file", "task", "start", "end", "text", "error"] + ["retrieved"] * args.show_retrieved)
    if unreadable is not None:
        for r in unreadable:
            _print(r, args, writer, out)
        return 1
    m = _load(args)
    failed = 0
    for r in m.run(files, decoding, question=args.question, per_window=args.per_window,
                   pooled=not args.per_window, explain=args.show_retrieved, batch_size=args.batch_size or 8,
                   progress=not args.quiet and (sys.stderr.isatty() or len(files) > 1)):
        failed += r.error is not None
        if out is not None:
            _print(r, args, writer, out)
            continue
        for row in r.windows if r.windows is not None else [r]:
            _print(row, args, writer)
    return 1 if failed else 0


EVENT_COLUMNS = ["file", "task", "start", "end", "kind", "text", "tags", "confidence", "error"]


def _answer_events(args, decoding, files, out: ResultsFile | None) -> int:
    """--events: one recording at a time (its events answered in one run), printed as it finishes."""
    unreadable = _unreadable(files, args.task, args.question)
    if unreadable is not None:
        _check_model_folder(args)
    writer = csv.writer(sys.stdout) if args.format == "csv" and out is None else None
    if writer:
        writer.writerow(EVENT_COLUMNS)
    if unreadable is not None:
        for r in unreadable:
            _print_events(str(r.file), args, writer, out, None, r.error)
        return 1
    from ..events import check_hop
    m = _load(args)
    if args.hop is not None:
        check_hop(args.hop, m.clap.clip_seconds)
    failed = 0
    for f in files:
        try:
            events, error = m.events(f, decoding, hop=args.hop, min_event=args.min_event, question=args.question,
                                     batch_size=args.batch_size), None
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the batch
            events, error = None, f"{type(e).__name__}: {e}"
        failed += error is not None or any(e.error for e in events or ())
        _print_events(str(f), args, writer, out, events, error)
    return 1 if failed else 0


def _print_events(file: str, args, writer, out: ResultsFile | None, events, error: str | None) -> None:
    from ..events import summarize, to_srt, to_vtt

    if error is not None:
        row = {"file": file, "task": args.task, "error": error}
    else:
        row = {"file": file, "task": args.task, "events": [e.to_dict() for e in events],
               "summary": summarize(events)}
        warning = getattr(events, "warning", None)
        if warning:  # a truncated file: its events up to the damage, and where it stopped
            row.update(stopped_at=round(events.stopped_at, 3), warning=warning)
            print(f"warning: {warning}", file=sys.stderr, flush=True)
    if out is not None:
        out.write(row)
    elif args.format == "jsonl":
        print(json.dumps(row, ensure_ascii=False), flush=True)
    elif args.format in ("srt", "vtt"):
        if error is not None:  # nothing to subtitle: the error goes where errors go
            raise RuntimeError(f"{file}: {error}")
        print((to_srt if args.format == "srt" else to_vtt)(events), end="", flush=True)
    elif writer:
        if error is not None:
            writer.writerow([file, args.task, "", "", "", "", "", "", error])
        for e in events or ():
            writer.writerow([file, args.task, f"{e.start:.3f}", f"{e.end:.3f}", e.kind, e.text or "",
                             ", ".join(e.tags or ()), f"{e.confidence:.4f}", e.error or ""])
        sys.stdout.flush()
    elif error is not None:
        print(f"{file}\tERROR: {_one_line(error)}", flush=True)
    else:
        for e in events:
            what = "(silence)" if e.kind == "silence" else ("ERROR: " + _one_line(e.error) if e.error
                                                            else _one_line(e.text or ""))
            print(f"{file} [{e.start:.1f}-{e.end:.1f}s]\t{what}", flush=True)
        if sum(e.kind == "sound" for e in events) > 1:
            print(f"{file}\t{summarize(events)}", flush=True)


def _chat(args) -> int:
    from ..audio import probe_audio

    # A wrong model or an unreadable file is said before the model loads, as for the batch commands.
    _check_model_folder(args)
    probe_audio(args.path)
    decoding = _decoding(args, "qa")
    m = _load(args)
    emb = m.embed_audio([args.path])
    log.info("Listening to %s. Ask a question (empty line to quit).", args.path)
    history: list[tuple[str, str]] = []
    while True:
        try:
            q = input("you> ").strip()
        except EOFError:
            break
        if not q:
            break
        # Earlier turns go into the instruction, so follow-up questions keep their context.
        context = "".join(f"Q: {a}\nA: {b}\n" for a, b in history[-3:])
        answer = m.generate(emb, decoding, questions=[context + q])[0]
        history.append((q, answer))
        if args.format == "jsonl":
            print(json.dumps({"file": args.path, "question": q, "text": answer}, ensure_ascii=False), flush=True)
        else:
            print(f"mats> {answer}", flush=True)
    return 0
