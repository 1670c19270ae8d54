"""Load on `mats serve`: throughput and latency at 1, 8 and 32 concurrent clients, and the server's
memory, including before and after a hostile FLAC.

Starts ``mats serve`` on 127.0.0.1 (a free port; loopback only) with the default settings, then:

1. ``hostile``: uploads a FLAC of 10 minutes at 384 kHz (silence: ~0.84 MB compressed, 230 M samples
   decoded) and records the server's resident memory (VmRSS) just before, the highest seen while
   the request was in flight (sampled every 20 ms), just after, and the process peak (VmHWM) before
   and after. The server should refuse it from the header (413) without allocating anything.
2. ``load``: the same ``--requests`` uploads of real recorded clips (distinct clips from
   :func:`mats.data.sounds.fetch_real_sounds`, one ``/v1/<endpoint>`` request each) sent with 1 client
   (one at a time: the baseline), 8 and 32 concurrent clients, each client on its own keep-alive
   connection. For each level: requests/s, p50/p95 latency (s), failures, and the speed-up over one
   at a time. Every level must return the answers of the one-at-a-time run (micro-batching does
   not change answers): ``same_answers``.

``--rounds N`` repeats the levels interleaved and reports per-level medians (ratios measured side by
side). Bounded: ``--requests`` per level (default 32) and ``--deadline`` seconds for the whole run.
Prints JSON; ``--out FILE`` also writes it.

    python benchmarks/serve_load.py [--endpoint tag] [--requests 32] [--fields num_beams=1,rerank=0]
                                    [--out benchmarks/results/serve_load.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path


def rss_kib(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


def multipart(path: Path, fields: dict) -> tuple[bytes, str]:
    b = uuid.uuid4().hex
    parts = [f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    parts.append(f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n".encode() + path.read_bytes() + b"\r\n")
    return b"".join(parts) + f"--{b}--\r\n".encode(), f"multipart/form-data; boundary={b}"


def start_server(extra: list[str]) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "mats.cli", "serve", "--port", "0", "--quiet", *extra]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError("mats serve exited before serving")
        m = re.search(r"serving on http://127\.0\.0\.1:(\d+)/", line)
        if m:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe drained
            return proc, int(m.group(1))
    raise RuntimeError("mats serve did not start within 300 s")


def hostile_flac(folder: Path) -> Path:
    """10 minutes of silence at 384 kHz, written block by block (never held whole here)."""
    import numpy as np
    import soundfile as sf
    path = folder / "hostile-10min-384k.flac"
    rate, total, block = 384_000, 384_000 * 600, 1 << 20
    zeros = np.zeros(block, np.int16)
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=1, format="FLAC", subtype="PCM_16") as f:
        for start in range(0, total, block):
            f.write(zeros[: min(block, total - start)])
    return path


def measure_hostile(pid: int, port: int, path: Path, endpoint: str) -> dict:
    body, ctype = multipart(path, {})
    before = rss_kib(pid)
    peak, done = [before["VmRSS"]], threading.Event()

    def sample():
        while not done.is_set():
            peak.append(rss_kib(pid)["VmRSS"])
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", f"/v1/{endpoint}", body, {"Content-Type": ctype})
    r = conn.getresponse()
    answer = json.loads(r.read())
    conn.close()
    seconds = time.perf_counter() - t0
    time.sleep(0.5)
    done.set()
    sampler.join()
    after = rss_kib(pid)
    mib = lambda kib: round(kib / 1024, 1)  # noqa: E731
    return {"file_bytes": path.stat().st_size, "decoded_samples": 384_000 * 600, "status": r.status,
            "error": answer.get("error"), "seconds": round(seconds, 3),
            "rss_before_mib": mib(before["VmRSS"]), "rss_during_max_mib": mib(max(peak)),
            "rss_after_mib": mib(after["VmRSS"]), "peak_rss_before_mib": mib(before["VmHWM"]),
            "peak_rss_after_mib": mib(after["VmHWM"])}


def run_level(port: int, endpoint: str, bodies: list, clients: int, deadline: float) -> dict:
    results: list = [None] * len(bodies)
    next_index = iter(range(len(bodies)))
    lock = threading.Lock()

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=max(1.0, deadline - time.time()))
        while True:
            with lock:
                i = next(next_index, None)
            if i is None or time.time() > deadline:
                break
            body, ctype = bodies[i]
            t0 = time.perf_counter()
            try:
                conn.request("POST", f"/v1/{endpoint}", body, {"Content-Type": ctype})
                r = conn.getresponse()
                data = json.loads(r.read())
                results[i] = (r.status, time.perf_counter() - t0, data.get("text"))
            except (OSError, http.client.HTTPException, ValueError) as e:
                results[i] = (repr(e), time.perf_counter() - t0, None)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=max(1.0, deadline - time.time()))
        conn.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in results if r is not None and r[0] == 200]
    lat = sorted(r[1] for r in ok)
    q = statistics.quantiles(lat, n=20, method="inclusive") if len(lat) >= 2 else lat * 19
    return {"clients": clients, "requests": len(bodies), "ok": len(ok),
            "failed": len(bodies) - len(ok), "wall_s": round(wall, 2),
            "throughput_rps": round(len(ok) / wall, 3),
            "p50_s": round(statistics.median(lat), 3) if lat else None,
            "p95_s": round(q[18], 3) if lat else None,
            "answers": [r[2] if r else None for r in results],
            "failures": sorted({str(r[0]) for r in results if r is None or r[0] != 200} - {"None"})}


def merge_rounds(rounds: list[dict]) -> dict:
    """One level over several rounds: median throughput and latency, every failure counted."""
    if len(rounds) == 1:
        return rounds[0]
    med = lambda key: round(statistics.median(r[key] for r in rounds if r[key] is not None), 3)  # noqa: E731
    answers = rounds[0]["answers"]
    return {"clients": rounds[0]["clients"], "requests": sum(r["requests"] for r in rounds),
            "ok": sum(r["ok"] for r in rounds), "failed": sum(r["failed"] for r in rounds),
            "rounds": len(rounds), "wall_s": [r["wall_s"] for r in rounds],
            "throughput_rps": med("throughput_rps"),
            "throughput_rps_rounds": [r["throughput_rps"] for r in rounds],
            "p50_s": med("p50_s"), "p95_s": med("p95_s"),
            "answers": answers if all(r["answers"] == answers for r in rounds) else None,
            "failures": sorted({f for r in rounds for f in r["failures"]})}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoint", default="tag", help="caption, tag, music (default tag)")
    ap.add_argument("--requests", type=int, default=32, help="requests per level (default 32)")
    ap.add_argument("--levels", default="1,8,32", help="concurrent clients per level (1 = one at a time)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the levels this many times, interleaved (1, 8, 32, 1, 8, 32, ...), and report "
                         "medians, so a change in the machine's load hits every level alike (default 1)")
    ap.add_argument("--deadline", type=float, default=1500, help="seconds for the whole run (default 1500)")
    ap.add_argument("--fields", default="", help="request fields, e.g. 'num_beams=1,rerank=0' (default: none)")
    ap.add_argument("--server-args", default="", help="extra `mats serve` flags, e.g. '--max-batch 32'")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    from mats.data.sounds import fetch_real_sounds, read_metadata

    folder = fetch_real_sounds()
    clips = [folder / r["file"] for r in read_metadata(folder)][: args.requests]
    if len(clips) < args.requests:
        clips = (clips * args.requests)[: args.requests]
    fields = dict(kv.split("=", 1) for kv in args.fields.split(",") if kv)
    bodies = [multipart(c, fields) for c in clips]
    levels = [int(x) for x in args.levels.split(",")]

    t_start = time.time()
    proc, port = start_server(args.server_args.split())
    try:
        with tempfile.TemporaryDirectory() as tmp:
            hostile = measure_hostile(proc.pid, port, hostile_flac(Path(tmp)), args.endpoint)
        run_level(port, args.endpoint, bodies[:2], 1, time.time() + 300)  # warm-up: first-call costs
        deadline = t_start + args.deadline
        runs = [[run_level(port, args.endpoint, bodies, n, deadline) for n in levels]
                for _ in range(max(1, args.rounds))]
        rows = [merge_rounds([r[i] for r in runs]) for i in range(len(levels))]
        memory = rss_kib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    base = rows[0]
    for row in rows:
        row["speedup_vs_one_at_a_time"] = round(row["throughput_rps"] / base["throughput_rps"], 2) \
            if base["throughput_rps"] else None
        row["same_answers"] = row["answers"] == base["answers"]
    out = {
        "what": f"mats serve, POST /v1/{args.endpoint}, real clips, loopback",
        "fields": fields or "default decoding of the task",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "server_args": args.server_args,
        "levels": [{k: v for k, v in r.items() if k != "answers"} for r in rows],
        "server_peak_rss_mib": round(memory["VmHWM"] / 1024, 1),
        "server_rss_end_mib": round(memory["VmRSS"] / 1024, 1),
        "hostile_flac": hostile,
        "target_32_clients": {"no_failure": rows[-1]["failed"] == 0,
                              "at_least_2x": (rows[-1]["speedup_vs_one_at_a_time"] or 0) >= 2},
        "total_s": round(time.time() - t_start, 1),
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
