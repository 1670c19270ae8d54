"""Long recordings (issue 21): what happens when, measured on multi-event recordings made of real sounds.

Quality (``--splits dev test``, each built from its own packages of the real sound split, never mixed):
recordings of 2-5 events (3 in half of them), each event a real clip repeated to 3-15 s, joined by a gap
of silence, a cross-fade or nothing, some with a long quiet stretch (20-40 s of room noise at -70 dBFS)
between two events. Each recording is answered four ways with the default model and caption decoding:

- ``events``: ``MATS.events`` (detected events, each answered on its own embedding);
- ``summary``: ``mats.events.summarize`` of those events (the composed summary, (a) of the issue);
- ``pooled``: today's whole-recording caption (windows' CLAP embeddings averaged, then decoded);
- ``per_window``: today's ``--per-window`` rows (10 s windows back to back).

Reported per split: boundary accuracy (true onsets/offsets inside the recording with a detected event
boundary within +-1 s; events with both), per-event keyword accuracy (the detected sound event that
overlaps a true event most names its label or a synonym; ``mats.evaluation.scoring.mentioned_labels``),
per-window keyword accuracy (each window that is mostly one true event names it), and for the summary,
the pooled caption and the per-window rows read in order: events named per recording, named in the
right order (longest run of mentions in the true order), by number of events; and the share of the
events the per-event answers get right that the summary names in order.

Speed and memory (``--lengths``, default 60 600 7200 s): a recording made by concatenating test-package
recordings, written as 16 kHz PCM WAV to a temporary folder, answered by ``MATS.events`` in a fresh
process: seconds (wall and the process's CPU time) to detect the events and to answer them, per minute
of audio, and peak RSS
(the fresh process's VmHWM). Recordings longer than ``--answer-all-up-to`` seconds (default 600) have their events
all detected but only the first ``--answer-first`` (default 40) sound events answered (a 2 h recording
holds ~700 events, 10+ min of decoding on 2 shared cores); the JSON says so per row.

    python benchmarks/long_audio.py [--n 18] [--splits dev test] [--lengths 60 600 7200]
                                    [--out benchmarks/results/long_audio.json] [--plot FILE.png]
    python benchmarks/long_audio.py --sweep 0.15 0.2 0.25 0.3 0.35   # choose mats.events.THRESHOLD on dev
    python benchmarks/long_audio.py --boundaries [--refine frames windows grid] [--sweep 0.2 0.25] [--split dev]
                                    # boundaries only, no decoding: choose mats.events.REFINE on dev
    python benchmarks/long_audio.py --batch-memory 8 2               # choose mats.events.ANSWER_BATCH
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import emit  # noqa: E402

TOL = 1.0  # seconds: a boundary within this of a true one is found
EVENT_COUNTS = (3, 2, 3, 4, 3, 5)  # cycled: half the recordings hold 3 events
QUIET_DB = -70.0  # the quiet stretches: room noise well under mats.events.SILENCE_DB


def load_split(split: str, sr: int):
    from mats.audio import load_audio
    from mats.data.sounds import fetch_sound_split, read_metadata
    folder = fetch_sound_split(split)
    rows = [r for r in read_metadata(folder) if r.get("split", split) == split]
    clips = []
    for r in rows:
        x = load_audio(folder / r["file"], sr)
        if float(np.sqrt(np.mean(x ** 2))) < 10 ** (-40 / 20):  # too faint to be an event of its own
            continue
        clips.append({"file": r["file"], "label": r["labels"][0], "synonyms": r.get("synonyms") or [],
                      "source": r["source"], "wave": x})
    return clips


def build(clips, k: int, sr: int, rng, quiet: bool):
    """(waveform, true events [{start, end, label, synonyms, file}]): ``k`` clips of distinct labels."""
    while True:
        pick = [clips[i] for i in rng.choice(len(clips), k, replace=False)]
        if len({c["label"] for c in pick}) == k:
            break
    quiet_at = int(rng.integers(1, k)) if quiet else -1
    out = np.zeros(0, np.float32)
    truth = []
    for i, c in enumerate(pick):
        n = int(float(rng.uniform(3, 15)) * sr)
        x = np.tile(c["wave"], -(-n // c["wave"].size))[:n]
        x = (0.5 * x / max(1e-6, float(np.abs(x).max()))).astype(np.float32)
        start = out.size
        if i:
            join = "quiet" if i == quiet_at else str(rng.choice(["gap", "fade", "none"]))
            if join == "quiet":
                m = int(float(rng.uniform(20, 40)) * sr)
                noise = rng.standard_normal(m).astype(np.float32) * np.float32(10 ** (QUIET_DB / 20))
                out = np.concatenate([out, noise])
            elif join == "gap":
                out = np.concatenate([out, np.zeros(int(float(rng.uniform(1, 4)) * sr), np.float32)])
            start = out.size
            if join == "fade":  # the new event fades in over the old one's fade-out: 0.5-1 s shared
                f = min(int(float(rng.uniform(0.5, 1.0)) * sr), out.size, x.size // 2)
                ramp = np.linspace(0, 1, f, dtype=np.float32)
                out[-f:] *= 1 - ramp
                x = x.copy()
                x[:f] *= ramp
                out[-f:] += x[:f]
                start = out.size - f
                truth[-1]["end"] = out.size / sr
                x = x[f:]
        out = np.concatenate([out, x])
        truth.append({"start": start / sr, "end": out.size / sr, "label": c["label"], "synonyms": c["synonyms"],
                      "file": c["file"]})
    return out, truth


def named_positions(text: str, truth) -> list[int | None]:
    """Where ``text`` first names each true event (label or synonym), or None."""
    from mats.evaluation.scoring import mention_position
    out = []
    for t in truth:
        found = [p for p in (mention_position(text or "", s) for s in [t["label"], *t["synonyms"]]) if p is not None]
        out.append(min(found) if found else None)
    return out


def in_order(positions) -> int:
    """Longest run of mentions that follows the true order (longest increasing subsequence)."""
    pos = [p for p in positions if p is not None]
    best: list[int] = []
    import bisect
    for p in pos:
        i = bisect.bisect_left(best, p)
        best[i:i + 1] = [p]
    return len(best)


def overlap(a0, a1, b0, b1) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def score_recording(events, summary: str, pooled: str, windows, truth, duration: float) -> dict:
    bounds = sorted({round(b, 3) for t in truth for b in (t["start"], t["end"])} - {0.0, round(duration, 3)})
    found = [e.start for e in events[1:]]
    near = {b: any(abs(f - b) <= TOL for f in found) for b in bounds}

    def ok(b):
        return near.get(round(b, 3), True)  # the recording's own start and end need no detection
    event_bounds = [ok(t["start"]) and ok(t["end"]) for t in truth]
    sounds = [e for e in events if e.kind == "sound"]
    per_event = []
    for t in truth:
        best = max(sounds, key=lambda e: overlap(e.start, e.end, t["start"], t["end"]), default=None)
        hit = best is not None and overlap(best.start, best.end, t["start"], t["end"]) > 0 and \
            named_positions(best.text, [t])[0] is not None
        per_event.append(bool(hit))
    win_hits = []
    for w in windows:
        t = max(truth, key=lambda t: overlap(w.start, w.end, t["start"], t["end"]))
        if overlap(w.start, w.end, t["start"], t["end"]) >= 0.5 * (w.end - w.start):
            win_hits.append(named_positions(w.text, [t])[0] is not None)
    flat = ", then ".join(w.text or "" for w in windows)
    right = [i for i, h in enumerate(per_event) if h]
    s_pos = named_positions(summary, truth)
    return {"k": len(truth), "boundaries": len(bounds), "boundaries_found": sum(near.values()),
            "events_bounded": sum(event_bounds), "per_event_hits": sum(per_event), "windows": len(win_hits),
            "window_hits": sum(win_hits),
            "summary_named": sum(p is not None for p in s_pos), "summary_in_order": in_order(s_pos),
            "pooled_named": sum(p is not None for p in named_positions(pooled, truth)),
            "pooled_in_order": in_order(named_positions(pooled, truth)),
            "windows_named": sum(p is not None for p in named_positions(flat, truth)),
            "windows_in_order": in_order(named_positions(flat, truth)),
            "event_answers_right": len(right), "summary_keeps_in_order": in_order([s_pos[i] for i in right]),
            "detected_sound_events": len(sounds)}


def quality(split: str, n: int, seed: int, m, tmp: Path, show: bool) -> dict:
    import soundfile as sf

    from mats.events import summarize
    sr = m.clap.sample_rate
    clips = load_split(split, sr)
    rng = np.random.default_rng(seed)
    rows, t0, audio_s = [], time.time(), 0.0
    for i in range(n):
        k = EVENT_COUNTS[i % len(EVENT_COUNTS)]
        wave, truth = build(clips, k, sr, rng, quiet=i % 3 == 2)
        path = tmp / f"{split}-{i}.wav"
        sf.write(str(path), wave, sr, subtype="FLOAT")
        audio_s += wave.size / sr
        events = m.events(path, "caption")
        summary = summarize(events)
        whole = next(iter(m.run([path], "caption", per_window=True)))
        row = score_recording(events, summary, whole.text, whole.windows, truth, wave.size / sr)
        rows.append(row)
        if show:
            print(json.dumps({"truth": [(round(t["start"], 1), round(t["end"], 1), t["label"]) for t in truth],
                              "events": [(round(e.start, 1), round(e.end, 1), e.kind, e.text) for e in events],
                              "summary": summary, "pooled": whole.text,
                              "windows": [w.text for w in whole.windows], **row}), file=sys.stderr, flush=True)
        path.unlink()

    def total(key, rs=rows):
        return sum(r[key] for r in rs)

    def ratio(a, b):
        return round(a / b, 3) if b else None

    events = total("k")
    by_k = {}
    for k in sorted({r["k"] for r in rows}):
        rs = [r for r in rows if r["k"] == k]
        by_k[str(k)] = {"recordings": len(rs),
                        **{f"{what}_named_per_recording": round(total(f"{what}_named", rs) / len(rs), 2)
                           for what in ("summary", "pooled", "windows")},
                        **{f"{what}_in_order_per_recording": round(total(f"{what}_in_order", rs) / len(rs), 2)
                           for what in ("summary", "pooled", "windows")}}
    return {"split": split, "recordings": n, "events": events, "audio_seconds": round(audio_s, 1),
            "seconds": round(time.time() - t0, 1),
            "boundary_accuracy": ratio(total("boundaries_found"), total("boundaries")),
            "events_with_both_boundaries": ratio(total("events_bounded"), events),
            "per_event_keyword_accuracy": ratio(total("per_event_hits"), events),
            "per_window_keyword_accuracy": ratio(total("window_hits"), total("windows")),
            "summary_keeps_in_order": ratio(total("summary_keeps_in_order"), total("event_answers_right")),
            "named_share": {w: ratio(total(f"{w}_named"), events) for w in ("summary", "pooled", "windows")},
            "in_order_share": {w: ratio(total(f"{w}_in_order"), events) for w in ("summary", "pooled", "windows")},
            "detected_sound_events_per_true_event": ratio(total("detected_sound_events"), events),
            "by_events": by_k, "per_recording": rows}


# Peak RSS is the kernel's VmHWM of the fresh process: getrusage's ru_maxrss would carry the parent's
# peak over the fork (Linux keeps it across execve), and the parent holds a model.
MEASURE = r"""
import json, sys, time
from mats.events import detect_events, answer_events
from mats.pipeline import MATS
def mb(key):
    return round(int(dict(l.split(":", 1) for l in open("/proc/self/status"))[key].split()[0]) / 1024)
path, answer_first = sys.argv[1], int(sys.argv[2])
m = MATS.from_pretrained()
decoding = m.decoding("caption")
loaded, loaded_peak = mb("VmRSS"), mb("VmHWM")
t, c = time.perf_counter(), time.process_time()
events = detect_events(m.clap, path)
detect, detect_cpu = time.perf_counter() - t, time.process_time() - c
detected = mb("VmRSS")
sounds = [e for e in events if e.kind == "sound"]
answered = sounds if answer_first < 0 else sounds[:answer_first]
t, c = time.perf_counter(), time.process_time()
answer_events(m, answered, decoding)
answer, answer_cpu = time.perf_counter() - t, time.process_time() - c
print(json.dumps({"audio_seconds": events.seconds, "events": len(events), "sound_events": len(sounds),
                  "answered": len(answered), "detect_seconds": round(detect, 1), "answer_seconds": round(answer, 1),
                  "detect_cpu_seconds": round(detect_cpu, 1), "answer_cpu_seconds": round(answer_cpu, 1),
                  "rss_after_load_mb": loaded, "peak_rss_after_load_mb": loaded_peak,
                  "rss_after_detect_mb": detected, "rss_at_end_mb": mb("VmRSS"), "peak_rss_mb": mb("VmHWM")}))
"""


# The decoder's memory by batch size (how mats.events.ANSWER_BATCH was chosen): ``n`` real test clips'
# embeddings answered with the default caption decoding, ``batch`` at a time, in a fresh process.
BATCH_MEMORY = r"""
import json, sys, time
from mats.data.sounds import fetch_sound_split, read_metadata
from mats.pipeline import MATS
def mb(key):
    return round(int(dict(l.split(":", 1) for l in open("/proc/self/status"))[key].split()[0]) / 1024)
batch, n = int(sys.argv[1]), int(sys.argv[2])
m = MATS.from_pretrained()
folder = fetch_sound_split("test")
emb = m.embed_audio([folder / r["file"] for r in read_metadata(folder)[:n]])
loaded, t = mb("VmHWM"), time.perf_counter()
list(m.run(list(emb), "caption", batch_size=batch))
print(json.dumps({"batch": batch, "clips": n, "peak_rss_before_mb": loaded, "peak_rss_mb": mb("VmHWM"),
                  "seconds": round(time.perf_counter() - t, 1)}))
"""


def batch_memory(batches, n: int = 16) -> list[dict]:
    rows = []
    for b in batches:
        p = subprocess.run([sys.executable, "-c", BATCH_MEMORY, str(b), str(n)], capture_output=True, text=True)
        if p.returncode:
            raise RuntimeError(f"batch {b}: {p.stderr.strip().splitlines()[-1]}")
        rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def long_file(path: Path, seconds: float, clips, sr: int, seed: int) -> None:
    """``seconds`` of test-package multi-event recordings back to back, written block by block."""
    import soundfile as sf
    rng = np.random.default_rng(seed)
    pieces = [build(clips, EVENT_COUNTS[i % len(EVENT_COUNTS)], sr, rng, quiet=i % 3 == 2)[0] for i in range(12)]
    need = int(seconds * sr)
    with sf.SoundFile(str(path), "w", sr, 1, "PCM_16") as f:
        i = 0
        while need > 0:
            x = pieces[i % len(pieces)][:need]
            f.write(x)
            need -= x.size
            i += 1


def speed(lengths, answer_all_up_to: float, answer_first: int, tmp: Path, sr: int, seed: int) -> list[dict]:
    clips = load_split("test", sr)
    rows = []
    for seconds in lengths:
        path = tmp / f"long-{int(seconds)}s.wav"
        long_file(path, seconds, clips, sr, seed)
        limit = -1 if seconds <= answer_all_up_to else answer_first
        p = subprocess.run([sys.executable, "-c", MEASURE, str(path), str(limit)], capture_output=True, text=True)
        if p.returncode:
            raise RuntimeError(f"{seconds} s: {p.stderr.strip().splitlines()[-1]}")
        r = json.loads(p.stdout.strip().splitlines()[-1])
        minutes = r["audio_seconds"] / 60
        r.update(length_seconds=seconds, file_mb=round(path.stat().st_size / 1e6, 1),
                 detect_seconds_per_minute=round(r["detect_seconds"] / minutes, 2),
                 detect_cpu_seconds_per_minute=round(r["detect_cpu_seconds"] / minutes, 2),
                 answer_seconds_per_event=round(r["answer_seconds"] / max(1, r["answered"]), 2),
                 answered_subset=None if limit < 0 else f"first {limit} of {r['sound_events']} sound events")
        r["seconds_per_minute_all_answered"] = round((r["detect_seconds"] + r["answer_seconds_per_event"]
                                                      * r["sound_events"]) / minutes, 2)
        rows.append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)
        path.unlink()
    return rows


def plot(rows, out: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    minutes = [r["audio_seconds"] / 60 for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(minutes, [r["detect_seconds"] for r in rows], "o-", label="detect events (wall)")
    a.plot(minutes, [r["detect_cpu_seconds"] for r in rows], "^-", label="detect events (CPU time)")
    a.plot(minutes, [r["seconds_per_minute_all_answered"] * mi for r, mi in zip(rows, minutes, strict=True)], "s--",
           label="detect + answer all (answer time per event x events)")
    a.set(xscale="log", yscale="log", xlabel="recording (minutes)", ylabel="seconds", title="time vs length")
    a.legend(fontsize=8)
    b.plot(minutes, [r["peak_rss_mb"] for r in rows], "o-", label="peak RSS")
    b.plot(minutes, [r["rss_after_load_mb"] for r in rows], "x:", label="after the model loads")
    b.axhline(1536, color="r", lw=0.8, label="1.5 GB")
    b.set(xscale="log", xlabel="recording (minutes)", ylabel="MB", title="peak memory vs length", ylim=(0, 1700))
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def boundaries(thresholds, refiners, split: str, n: int, seed: int) -> list[dict]:
    """Boundaries only (no decoding) of the ``split``'s recordings (the very ones ``quality`` builds) for
    each change threshold and refinement of mats.events: recall (true boundaries found), events with both
    boundaries, false boundaries and their F1 (2 found / (2 found + missed + false), the rule of
    events_threshold.py), the median distance from a found boundary to the nearest cut, and seconds spent."""
    from events_threshold import CachedCLAP

    from mats.clap.default import DefaultCLAP
    from mats.events import detect_events
    clap = CachedCLAP(DefaultCLAP())
    sr = clap.sample_rate
    clips = load_split(split, sr)
    rng = np.random.default_rng(seed)
    recordings = [build(clips, EVENT_COUNTS[i % len(EVENT_COUNTS)], sr, rng, quiet=i % 3 == 2) for i in range(n)]
    rows = []
    for refine in refiners:
        for th in thresholds:
            total = found = bounded = events = false = sounds = 0
            errors: list[float] = []
            t0 = time.perf_counter()
            for wave, truth in recordings:
                ev = detect_events(clap, wave, threshold=th, refine=refine)
                duration = wave.size / sr
                bounds = sorted({round(b, 3) for t in truth for b in (t["start"], t["end"])}
                                - {0.0, round(duration, 3)})
                cuts = [e.start for e in ev[1:]]
                dist = {b: min((abs(c - b) for c in cuts), default=np.inf) for b in bounds}
                near = {b: d <= TOL for b, d in dist.items()}
                errors += [d for d in dist.values() if d <= TOL]
                total, found = total + len(bounds), found + sum(near.values())
                bounded += sum(near.get(round(t["start"], 3), True) and near.get(round(t["end"], 3), True)
                               for t in truth)
                events += len(truth)
                false += sum(not any(abs(c - b) <= TOL for b in bounds) for c in cuts)
                sounds += sum(e.kind == "sound" for e in ev)
            rows.append({"refine": refine, "threshold": th, "boundary_accuracy": round(found / total, 3),
                         "events_with_both_boundaries": round(bounded / events, 3), "false_boundaries": false,
                         "f1": round(2 * found / (2 * found + (total - found) + false), 3),
                         "median_error_seconds": round(float(np.median(errors)), 3) if errors else None,
                         "detected_sound_events_per_true_event": round(sounds / events, 3),
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=18, help="recordings per split")
    ap.add_argument("--splits", nargs="*", default=["dev", "test"])
    ap.add_argument("--lengths", nargs="*", type=float, default=[60, 600, 7200])
    ap.add_argument("--answer-all-up-to", type=float, default=600)
    ap.add_argument("--answer-first", type=int, default=40)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--sweep", nargs="*", type=float,
                    help="only sweep these change thresholds on dev (boundaries, no decoding), to choose one")
    ap.add_argument("--boundaries", action="store_true",
                    help="only detect events (no decoding) and score their boundaries, per --refine and --sweep")
    ap.add_argument("--refine", nargs="*", help="refinements of the change points to compare (default: the library's)")
    ap.add_argument("--split", default="dev", help="the split of --boundaries (tune on dev)")
    ap.add_argument("--batch-memory", nargs="*", type=int,
                    help="only measure the decoder's peak RSS answering 16 test clips at these batch sizes")
    ap.add_argument("--show", action="store_true", help="print each recording's answers (stderr)")
    ap.add_argument("--tmp", default="/dev/shm" if Path("/dev/shm").is_dir() else None)
    ap.add_argument("--out")
    ap.add_argument("--plot")
    args = ap.parse_args(argv)
    if args.batch_memory:
        return emit({"benchmark": "long_audio --batch-memory", "rows": batch_memory(args.batch_memory)}, args.out)
    from mats.events import ANSWER_BATCH, REFINE, THRESHOLD
    if args.sweep or args.boundaries:
        split = args.split if args.boundaries else "dev"
        refiners = args.refine or [REFINE]
        rows = boundaries(args.sweep or [THRESHOLD], refiners, split, args.n, args.seed)
        name = "long_audio --boundaries" if args.boundaries else "long_audio --sweep"
        return emit({"benchmark": name, "split": split, "recordings": args.n, "seed": args.seed,
                     "tolerance_seconds": TOL, "sweep": rows}, args.out)
    from mats.pipeline import MATS
    result = {"benchmark": "long_audio", "seed": args.seed, "decoding": "caption (the task's defaults)",
              "tolerance_seconds": TOL, "threshold": THRESHOLD, "refine": REFINE,
              "answer_batch": ANSWER_BATCH, "quality": {}, "speed": []}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        if args.splits:
            m = MATS.from_pretrained()
            result["model"] = str(m.folder)
            for split in args.splits:
                result["quality"][split] = quality(split, args.n, args.seed, m, Path(tmp), args.show)
                q = {k: v for k, v in result["quality"][split].items() if k not in ("per_recording", "by_events")}
                print(json.dumps(q), file=sys.stderr, flush=True)
            del m
        if args.lengths:
            result["speed"] = speed(args.lengths, args.answer_all_up_to, args.answer_first, Path(tmp), 16000,
                                    args.seed)
            result["cpu_threads"] = os.cpu_count()
    if args.plot and result["speed"]:
        plot(result["speed"], args.plot)
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
