"""Shared by the serving tests: real recorded clips and the real default model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from conftest import real_sounds_folder, require

WANTED = ["36-sheep.wav", "37-cow.wav", "phone-incoming-call.oga", "29-applause.wav", "38-horse.wav",
          "03-factory-whistle.wav"]


def real_clips(dest: Path, n: int = 4) -> list[Path]:
    """``n`` real recorded clips (Debian sound packages, cached by mats.data.sounds) copied into ``dest``."""
    from mats.data.sounds import read_metadata
    folder = real_sounds_folder()
    meta = read_metadata(folder)
    found = [folder / r["file"] for w in WANTED for r in meta if r["file"].endswith("/" + w)]
    if len(found) < n:  # another package version: any clips will do
        found += [folder / r["file"] for r in meta if folder / r["file"] not in found]
    found = [f for f in found if f.is_file()][:n]
    require(len(found) >= n, f"fewer than {n} real clips available")
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for f in found:
        shutil.copy(f, dest / f.name)
        out.append(dest / f.name)
    return out


def long_clip(src: Path, out: Path, seconds: int = 22) -> Path:
    """A real clip repeated end to end to ``seconds`` (several CLAP windows)."""
    import soundfile as sf
    wave, sr = sf.read(str(src), dtype="float32", always_2d=True)
    wave = wave.mean(1)
    sf.write(str(out), np.tile(wave, int(np.ceil(seconds * sr / len(wave))))[: seconds * sr], sr)
    return out


def default_model():
    from mats.pipeline import MATS
    return MATS.from_pretrained()


class LoopbackServer:
    """The app under uvicorn on 127.0.0.1 (a free port), in a thread of this process."""

    def __init__(self, app, settings):
        import threading

        import uvicorn

        from mats.server.run import bind, uvicorn_config
        self.sock = bind("127.0.0.1", 0, settings.backlog)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn_config(app, settings))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        import time
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            assert time.time() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()
        assert not self.thread.is_alive()


def multipart(fields: dict, clip) -> tuple[bytes, str]:
    """A multipart/form-data body with ``fields`` and the clip as the part named "file"."""
    import uuid
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{clip.name}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + clip.read_bytes() + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(port, endpoint, clip, **fields):
    """(status, JSON body) of an upload of ``clip`` to ``/v1/<endpoint>`` on 127.0.0.1:port."""
    import http.client
    import json
    body, ctype = multipart(fields, clip)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("POST", f"/v1/{endpoint}", body, {"Content-Type": ctype})
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def post_together(port, jobs):
    """Post every (endpoint, clip, fields) at once, from threads; (status, body) in job order."""
    import threading
    out = [None] * len(jobs)

    def go(i, endpoint, clip, fields):
        out[i] = post(port, endpoint, clip, **fields)

    threads = [threading.Thread(target=go, args=(i, *job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return out


GAP = 3.0  # seconds of silence between the clips of a multi-event recording
SECONDS = (8.0, 9.0, 7.0)  # each clip repeated to this length


def three_events(clips, out: Path, sample_rate: int = 16000) -> tuple[Path, list[tuple[float, float]]]:
    """Three real clips (each repeated to SECONDS, peak 0.5) with GAP s of silence between, as
    tests/test_events.py builds them: (the WAV written to ``out``, the sound spans in seconds)."""
    import soundfile as sf

    from mats.audio import load_audio
    parts, spans, t = [], [], 0.0
    for i, (clip, secs) in enumerate(zip(clips, SECONDS, strict=True)):
        if i:
            parts.append(np.zeros(int(GAP * sample_rate), np.float32))
            t += GAP
        x = load_audio(clip, sample_rate)
        n = int(secs * sample_rate)
        x = np.tile(x, -(-n // x.size))[:n]
        parts.append(0.5 * x / max(1e-6, float(np.abs(x).max())))
        spans.append((t, t + secs))
        t += secs
    sf.write(str(out), np.concatenate(parts), sample_rate)
    return out, spans


def upload(client, endpoint: str, clip: Path, **fields):
    """POST ``clip`` as a multipart upload to ``/v1/{endpoint}`` through a TestClient, form fields beside it
    (booleans as the page sends them)."""
    return client.post(f"/v1/{endpoint}", files={"file": (clip.name, clip.read_bytes(), "audio/wav")},
                       data={k: str(v).lower() if isinstance(v, bool) else v for k, v in fields.items()})


def refusal(r, status: int, *words: str) -> str:
    """The API's refusal: ``status``, a body of exactly ``error`` and ``status``, the error one line
    holding each of ``words``. Returns the error."""
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body == {"error": body["error"], "status": status}
    assert "\n" not in body["error"]  # one line
    for w in words:
        assert w in body["error"], body["error"]
    return body["error"]
