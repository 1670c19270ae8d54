"""Mutation fuzzing of the audio loader and the corpus reader, seeded and bounded in time.

Seeds are real recordings: short cuts of the labelled Debian sound set
(:func:`mats.data.sounds.fetch_real_sounds`), re-encoded in memory as WAV (PCM 8/16/24/32, float, double;
mono and stereo), FLAC, OGG/Vorbis, AIFF and MP3, plus a small valid corpus in JSONL. Each input is
one seed after one to three mutations (bit flips, interesting bytes, header integers, truncation,
insertions, deletions, splices of two seeds, huge/NaN/inf floats written into float data, invalid
UTF-8 and deep nesting for the corpus), decoded by ``mats.audio.load_audio`` (from memory, or from a
file on every 8th input so the path checks run too) or read by ``mats.data.corpus.read_jsonl``.

Outcomes per input:
  refused    the project's own error (AudioError / CorpusError), i.e. one clear message
  accepted   a waveform (float32, 1-D, finite, |x| <= 16 after resampling) or a list of samples
  raw        any other exception, a Python warning (turned into an error) or an accepted waveform
             breaking those promises; examples are written to --crash-dir
  hangs      no result within --timeout seconds (the worker is killed and restarted after it)

Inputs are generated from (seed, index) alone, so any reported input can be rebuilt.
One worker process runs the inputs; the parent watches it for hangs.

    python benchmarks/fuzz_audio.py [--minutes 10] [--seed 0] [--inputs N] [--timeout 10] [--out FILE]
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import random
import struct
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

TARGET_RATES = (16000, 16000, 16000, 48000, 22050)
SEED_SECONDS = 0.12
CORPUS_SHARE = 0.1
FILE_EVERY = 8
WAV_AMPLITUDE_BOUND = 16.0  # resampling may ring a little past the loader's +-8 input bound

# (format, subtype, channels, rate) of the in-memory seeds
ENCODINGS = [
    ("WAV", "PCM_16", 1, 16000), ("WAV", "PCM_16", 2, 44100), ("WAV", "PCM_U8", 1, 8000),
    ("WAV", "PCM_24", 1, 22050), ("WAV", "PCM_32", 2, 16000), ("WAV", "FLOAT", 1, 16000),
    ("WAV", "FLOAT", 2, 48000), ("WAV", "DOUBLE", 1, 16000), ("FLAC", "PCM_16", 1, 16000),
    ("FLAC", "PCM_24", 2, 48000), ("OGG", "VORBIS", 1, 16000), ("AIFF", "PCM_16", 1, 16000),
    ("AIFF", "FLOAT", 1, 22050), ("MP3", "MPEG_LAYER_III", 1, 16000),
]
EXT = {"WAV": ".wav", "FLAC": ".flac", "OGG": ".ogg", "AIFF": ".aiff", "MP3": ".mp3"}

CORPUS_ROWS = [
    {"text": "a dog barks twice in a quiet street", "task": "caption", "answer": "A dog barks twice."},
    {"text": "rain on a tin roof", "task": "tags", "answer": "rain, roof"},
    {"text": "a church bell rings", "task": "qa", "instruction": "What rings?", "answer": "A bell."},
    {"text": "a violin melody", "task": "music", "answer": "A slow violin melody."},
    {"text": "Ein Hund bellt — Regen fällt", "task": "caption", "answer": "Ein Hund bellt.", "source": "de"},
]


# -- seeds ------------------------------------------------------------------------------------------
def real_clips(n: int = 12) -> list[np.ndarray]:
    """Short mono cuts of real recordings from the sound set, at their own rate (float32)."""
    import soundfile as sf

    from mats.data.sounds import fetch_real_sounds, read_metadata
    folder = fetch_real_sounds()
    files = sorted(folder / r["file"] for r in read_metadata(folder))
    step = max(1, len(files) // n)
    clips = []
    for f in files[::step][:n]:
        x, sr = sf.read(str(f), dtype="float32", always_2d=True)
        x = x.mean(axis=1)
        start = int(np.argmax(np.abs(x) > 0.05 * (np.abs(x).max() + 1e-9)))  # skip leading silence
        clips.append(x[start:start + int(SEED_SECONDS * sr)])
    return clips


def build_seeds(clips: list[np.ndarray]) -> list[tuple[str, bytes]]:
    import soundfile as sf
    seeds = []
    for i, clip in enumerate(clips):
        for fmt, subtype, channels, rate in ENCODINGS:
            x = clip[: int(SEED_SECONDS * rate)] if len(clip) >= int(SEED_SECONDS * rate) else clip
            if channels == 2:
                x = np.stack([x, x[::-1]], axis=1)
            b = io.BytesIO()
            sf.write(b, x, rate, format=fmt, subtype=subtype)
            seeds.append((f"{fmt}/{subtype}/{channels}ch/{rate}/clip{i}", b.getvalue()))
    return seeds


def corpus_seed() -> bytes:
    return "".join(json.dumps(r, ensure_ascii=bool(i % 2)) + "\n" for i, r in enumerate(CORPUS_ROWS)).encode()


# -- mutations --------------------------------------------------------------------------------------
INTERESTING_BYTES = (0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE)
INTERESTING_INTS = (0, 1, 2, 0x7F, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
                    44100, 384001, 999, 16)
HUGE_FLOATS = (3e38, -3e38, 1e30, -1e30, float("nan"), float("inf"), float("-inf"), 1.5, -1.7, 7.9, 8.5)


def _flip_bits(d: bytearray, r: random.Random) -> None:
    for _ in range(r.randint(1, 8)):
        i = r.randrange(len(d))
        d[i] ^= 1 << r.randrange(8)


def _set_bytes(d: bytearray, r: random.Random) -> None:
    for _ in range(r.randint(1, 4)):
        d[r.randrange(len(d))] = r.choice(INTERESTING_BYTES)


def _header_int(d: bytearray, r: random.Random) -> None:
    off = r.randrange(min(len(d), 96)) if r.random() < 0.8 else r.randrange(len(d))
    v = r.choice(INTERESTING_INTS) if r.random() < 0.7 else r.getrandbits(32)
    fmt = r.choice(("<I", ">I", "<H", ">H"))
    v &= 0xFFFF if fmt.endswith("H") else 0xFFFFFFFF
    raw = struct.pack(fmt, v)
    d[off:off + len(raw)] = raw[: max(0, len(d) - off)]


def _truncate(d: bytearray, r: random.Random) -> None:
    cut = len(d) // 3 if r.random() < 0.25 else r.randrange(len(d))
    del d[cut:]


def _insert(d: bytearray, r: random.Random) -> None:
    i = r.randrange(len(d) + 1)
    n = r.randint(1, 64)
    chunk = bytes(r.getrandbits(8) for _ in range(n)) if r.random() < 0.5 else bytes(d[i:i + n]) * r.randint(1, 4)
    d[i:i] = chunk


def _delete(d: bytearray, r: random.Random) -> None:
    i = r.randrange(len(d))
    del d[i:i + r.randint(1, 64)]


def _float_poke(d: bytearray, r: random.Random, name: str) -> None:
    """Huge, non-finite or over-range samples in float data (past a 44-byte header)."""
    if len(d) < 64:
        return _flip_bits(d, r)
    double = "DOUBLE" in name
    size = 8 if double else 4
    endian = ">" if name.startswith("AIFF") else "<"
    count = r.choice((1, 3, 20, 200, 100000))
    for _ in range(min(count, (len(d) - 48) // size)):
        off = 48 + r.randrange((len(d) - 48) // size) * size
        d[off:off + size] = struct.pack(endian + ("d" if double else "f"), r.choice(HUGE_FLOATS))


def mutate_audio(name: str, data: bytes, other: bytes, r: random.Random) -> bytes:
    d = bytearray(data)
    for _ in range(r.choice((1, 1, 2, 3))):
        if not d:
            break
        op = r.random()
        if op < 0.22:
            _flip_bits(d, r)
        elif op < 0.34:
            _set_bytes(d, r)
        elif op < 0.52:
            _header_int(d, r)
        elif op < 0.64:
            _truncate(d, r)
        elif op < 0.72:
            _insert(d, r)
        elif op < 0.78:
            _delete(d, r)
        elif op < 0.84:
            cut = r.randrange(len(d))
            d = d[:cut] + bytearray(other[r.randrange(len(other)):])
        else:
            _float_poke(d, r, name if ("FLOAT" in name or "DOUBLE" in name) else "FLOAT")
    return bytes(d)


def mutate_corpus(data: bytes, r: random.Random) -> bytes:
    d = bytearray(data)
    for _ in range(r.choice((1, 1, 2))):
        op = r.random()
        if op < 0.25 and d:
            _flip_bits(d, r)
        elif op < 0.4:
            i = r.randrange(len(d) + 1)
            d[i:i] = r.choice((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\r", b"\n\n", b"\xe2\x82"))
        elif op < 0.5:
            d = bytearray(b"[" * r.choice((10, 1000, 100000)) + b"\n") + d
        elif op < 0.6:
            d = d.replace(b'"a dog', b'"\\ud800 dog').replace(b'"rain', b'"\\udfff')
        elif op < 0.7 and d:
            del d[r.randrange(len(d)):]
        elif op < 0.8:
            d = d.replace(b'"task"', r.choice((b'"tsak"', b'"task": 1, "x"', b'"text"')))
        elif op < 0.9:
            junk = r.choice((b"1e999", b"null", b"[]", b'""', b"{}"))
            d = d.replace(b'"answer": "', b'"answer": ' + junk + b', "y": "')
        elif d:
            i = r.randrange(len(d))
            d[i:i] = r.choice((b"{", b"}", b'"', b"\\", b",", b"NaN", b"\t"))
    return bytes(d)


def make_input(seed: int, index: int, seeds: list[tuple[str, bytes]], corpus: bytes):
    """(kind, name, bytes, target rate, via file?) of input ``index``: a pure function of its
    arguments, so a crash or hang can be rebuilt from the two numbers."""
    r = random.Random(seed * 1_000_003 + index)
    if r.random() < CORPUS_SHARE:
        return "corpus", "corpus.jsonl", mutate_corpus(corpus, r), 0, True
    name, data = seeds[r.randrange(len(seeds))]
    other = seeds[r.randrange(len(seeds))][1]
    return ("audio", name, mutate_audio(name, data, other, r), r.choice(TARGET_RATES),
            index % FILE_EVERY == 0)


# -- running one input ------------------------------------------------------------------------------
def _reason(e: Exception) -> str:
    """The kind of refusal, for the histogram: the message without the file name and numbers."""
    msg = str(e).split(": ", 1)[-1] if ": " in str(e) else str(e)
    if msg[:1].isdigit() and ":" in msg:  # corpus messages: path:line: message
        msg = msg.split(": ", 1)[-1]
    words = [w for w in msg.replace("(", " ").split() if not any(c.isdigit() or c in "'\"" for c in w)]
    return " ".join(words[:4])


def run_one(kind: str, name: str, data: bytes, rate: int, via_file: bool, scratch: Path) -> tuple[str, str]:
    from mats.audio import AudioError, load_audio
    from mats.data.corpus import CorpusError, read_jsonl
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # an overflow or invalid-value warning is a defect here
            if kind == "corpus":
                path = scratch / "corpus.jsonl"
                path.write_bytes(data)
                try:
                    rows = read_jsonl(path)
                except CorpusError as e:
                    return "refused", _reason(e)
                return ("accepted", "") if rows else ("raw", "empty list accepted")
            if via_file:
                path = scratch / ("input" + EXT.get(name.split("/")[0], ".bin"))
                path.write_bytes(data)
                src = path
            else:
                src = data  # bytes: the in-memory path a server takes
            try:
                y = load_audio(src, rate)
            except AudioError as e:
                return "refused", _reason(e)
    except Exception as e:
        return "raw", f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
    if not (isinstance(y, np.ndarray) and y.dtype == np.float32 and y.ndim == 1 and y.size > 0):
        return "raw", f"accepted a bad waveform: {type(y).__name__} {getattr(y, 'dtype', '')} {getattr(y, 'shape', '')}"
    if not np.isfinite(y).all():
        return "raw", "accepted a waveform with NaN/inf"
    peak = float(np.abs(y).max())
    if peak > WAV_AMPLITUDE_BOUND:
        return "raw", f"accepted a waveform peaking at {peak:.3g}"
    return "accepted", ""


def worker(conn, seed: int, start: int, stop: int, deadline: float) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # libmpg123 reports every damaged MP3 frame on fd 2; thousands of such notes bury the JSON
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    seeds = build_seeds(real_clips())
    corpus = corpus_seed()
    conn.send_bytes(b"ready")
    with tempfile.TemporaryDirectory(prefix="mats-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as tmp:
        scratch = Path(tmp)
        for i in range(start, stop):
            if time.time() >= deadline:
                break
            kind, name, data, rate, via_file = make_input(seed, i, seeds, corpus)
            outcome, detail = run_one(kind, name, data, rate, via_file, scratch)
            conn.send_bytes(f"{i}\t{kind}\t{outcome}\t{name}\t{detail}".encode("utf-8", "replace"))
    conn.send_bytes(b"done")


def fuzz(minutes: float, seed: int, max_inputs: int | None, timeout: float, crash_dir: Path | None) -> dict:
    ctx = mp.get_context("spawn")
    t0 = time.time()
    deadline = t0 + minutes * 60
    stop = max_inputs if max_inputs is not None else 1 << 62
    counts = Counter()
    per_kind = {"audio": Counter(), "corpus": Counter()}
    raw_kinds: Counter = Counter()
    reasons: Counter = Counter()
    examples: list[dict] = []
    hangs: list[int] = []
    next_index = 0
    seeds_for_rebuild = None
    while next_index < stop and time.time() < deadline:
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=worker, args=(child, seed, next_index, stop, deadline), daemon=True)
        proc.start()
        child.close()
        if not parent.poll(300) or parent.recv_bytes() != b"ready":
            proc.kill()
            raise RuntimeError("the fuzz worker did not start (are the real sounds available?)")
        while True:
            if not parent.poll(timeout):
                # no result for `timeout` seconds: input next_index hangs
                proc.kill()
                proc.join()
                hangs.append(next_index)
                counts["hangs"] += 1
                counts["inputs"] += 1
                next_index += 1
                break
            try:
                msg = parent.recv_bytes().decode("utf-8", "replace")
            except EOFError:  # the worker died (a crash in native code counts as raw)
                proc.join()
                counts["inputs"] += 1
                counts["raw_exceptions"] += 1
                raw_kinds[f"worker died (exit {proc.exitcode})"] += 1
                examples.append({"index": next_index, "error": f"worker died (exit {proc.exitcode})"})
                next_index += 1
                break
            if msg == "done":
                proc.join()
                break
            i, kind, outcome, name, detail = msg.split("\t", 4)
            next_index = int(i) + 1
            counts["inputs"] += 1
            per_kind[kind]["inputs"] += 1
            key = {"refused": "refused_cleanly", "accepted": "accepted", "raw": "raw_exceptions"}[outcome]
            counts[key] += 1
            per_kind[kind][key] += 1
            if outcome == "refused":
                reasons[f"{kind}: {detail}"] += 1
            if outcome == "raw":
                raw_kinds[detail.split(":")[0]] += 1
                if len(examples) < 20:
                    examples.append({"index": int(i), "kind": kind, "seed_input": name, "error": detail})
        if proc.is_alive():
            proc.kill()
            proc.join()
    elapsed = time.time() - t0
    if crash_dir is not None and (examples or hangs):
        crash_dir.mkdir(parents=True, exist_ok=True)
        seeds_for_rebuild = build_seeds(real_clips())
        for ex in examples + [{"index": h, "error": "hang"} for h in hangs]:
            kind, name, data, rate, _ = make_input(seed, ex["index"], seeds_for_rebuild, corpus_seed())
            (crash_dir / f"input-{seed}-{ex['index']}{EXT.get(name.split('/')[0], '.jsonl')}").write_bytes(data)
    return {
        "benchmark": "fuzz_audio", "seed": seed, "minutes_limit": minutes, "timeout_s": timeout,
        "elapsed_s": round(elapsed, 1), "inputs": counts["inputs"],
        "inputs_per_s": round(counts["inputs"] / max(elapsed, 1e-9), 1),
        "refused_cleanly": counts["refused_cleanly"], "accepted": counts["accepted"],
        "raw_exceptions": counts["raw_exceptions"], "hangs": counts["hangs"],
        "by_kind": {k: dict(v) for k, v in per_kind.items()},
        "refusal_reasons": dict(reasons.most_common(40)),
        "raw_exception_kinds": dict(raw_kinds), "raw_examples": examples, "hang_indices": hangs,
        "seed_inputs": len(ENCODINGS) * 12, "python": sys.version.split()[0],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="time bound (default 10)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--inputs", type=int, help="stop after this many inputs (default: only the time bound)")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds one input may take before it counts as a hang")
    ap.add_argument("--out", help="also write the JSON here")
    ap.add_argument("--crash-dir", help="write the inputs that crashed or hung here")
    args = ap.parse_args(argv)
    result = fuzz(args.minutes, args.seed, args.inputs, args.timeout,
                  Path(args.crash_dir) if args.crash_dir else None)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0 if result["raw_exceptions"] == 0 and result["hangs"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
