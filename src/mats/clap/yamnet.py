"""YAMNet AudioSet tagger (521 classes) from the 8-bit quantised ONNX export, on onnxruntime.

The export takes one uint8 log-mel patch [1, 1, 96, 64] and returns uint8 class scores [1, 521];
the log-mel front end is not in the graph, so it is rebuilt here exactly as the published model
computes it (16 kHz; 25 ms Hann window (periodic) in a 512-point FFT, 10 ms hop, magnitude; 64 HTK
mel bands 125-7500 Hz; log(mel + 0.001); 96-frame patches every 48 frames). Quantisation
parameters are read from the graph's initializers, so nothing numeric is copied by hand.

The graph fixes its batch dimension at 1, so patches run one by one (cheap on a CPU core: docs/speed.md).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
N_FFT = 512
N_MELS = 64
FMIN, FMAX = 125.0, 7500.0
LOG_OFFSET = 0.001
PATCH_FRAMES = 96  # 0.96 s
PATCH_HOP = 48  # 0.48 s
PATCH_SECONDS = PATCH_FRAMES * HOP / SAMPLE_RATE
PATCH_HOP_SECONDS = PATCH_HOP * HOP / SAMPLE_RATE


# -- minimal ONNX protobuf reading (avoids the 'onnx' package for four scalars) ---------------------

def _varint(b: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        c = b[i]
        i += 1
        result |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return result, i


def _fields(b: bytes):
    i = 0
    while i < len(b):
        key, i = _varint(b, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(b, i)
        elif wire == 1:
            value, i = b[i:i + 8], i + 8
        elif wire == 5:
            value, i = b[i:i + 4], i + 4
        elif wire == 2:
            n, i = _varint(b, i)
            value, i = b[i:i + n], i + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, value


_ONNX_DTYPES = {1: "<f4", 2: "u1", 3: "i1", 6: "<i4", 7: "<i8", 11: "<f8"}


def read_scalar_initializers(model_path: str | os.PathLike, names: set[str]) -> dict[str, float]:
    """Values of scalar initializers stored inline (ModelProto.graph=7, GraphProto.initializer=5,
    TensorProto: data_type=2, name=8, raw_data=9)."""
    data = Path(model_path).read_bytes()
    graph = next(v for f, v in _fields(data) if f == 7)
    found: dict[str, float] = {}
    for f, tensor in _fields(graph):
        if f != 5:
            continue
        name, dtype, raw = None, None, None
        for tf, tv in _fields(tensor):
            if tf == 8:
                name = tv.decode()
            elif tf == 2:
                dtype = tv
            elif tf == 9:
                raw = tv
        if name in names and raw is not None and dtype in _ONNX_DTYPES:
            found[name] = float(np.frombuffer(raw, _ONNX_DTYPES[dtype])[0])
    missing = names - found.keys()
    if missing:
        raise RuntimeError(f"{model_path}: quantisation initializers {sorted(missing)} not found; "
                           "not the expected YAMNet w8a8 export")
    return found


# -- log-mel front end ------------------------------------------------------------------------------

def _hz_to_mel(f):
    return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)


def mel_matrix() -> np.ndarray:
    """[257, 64] triangular HTK-mel weights; the DC bin gets no weight (as the published model)."""
    n_bins = N_FFT // 2 + 1
    bin_mel = _hz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, n_bins))[1:, None]
    edges = np.linspace(_hz_to_mel(FMIN), _hz_to_mel(FMAX), N_MELS + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    w = np.maximum(0.0, np.minimum((bin_mel - lower) / (center - lower), (upper - bin_mel) / (upper - center)))
    return np.vstack([np.zeros((1, N_MELS)), w]).astype(np.float32)


_MEL = mel_matrix()
_HANN = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)).astype(np.float32)  # periodic


def log_mel(wave: np.ndarray) -> np.ndarray:
    """[T, 64] log-mel frames of a 16 kHz waveform (frames fully inside the signal, no centring)."""
    x = np.asarray(wave, dtype=np.float32)
    if x.size < WINDOW:
        x = np.pad(x, (0, WINDOW - x.size))
    n_frames = 1 + (x.size - WINDOW) // HOP
    idx = np.arange(WINDOW)[None, :] + HOP * np.arange(n_frames)[:, None]
    mag = np.abs(np.fft.rfft(x[idx] * _HANN, n=N_FFT, axis=1)).astype(np.float32)
    return np.log(mag @ _MEL + LOG_OFFSET)


def patches(wave: np.ndarray) -> np.ndarray:
    """[P, 96, 64] log-mel patches. Like the published model, the waveform is zero-padded to at
    least one patch and to a whole number of patch hops, so every sample lands in some patch."""
    x = np.asarray(wave, dtype=np.float32)
    min_len = WINDOW - HOP + PATCH_FRAMES * HOP  # samples that make exactly one patch
    hop_len = PATCH_HOP * HOP
    if x.size < min_len:
        pad = min_len - x.size
    else:
        pad = (-(x.size - min_len)) % hop_len
    x = np.pad(x, (0, pad))
    mel = log_mel(x)
    n = 1 + (mel.shape[0] - PATCH_FRAMES) // PATCH_HOP
    return np.stack([mel[i * PATCH_HOP:i * PATCH_HOP + PATCH_FRAMES] for i in range(n)])


# -- the tagger -------------------------------------------------------------------------------------

class YAMNet:
    """``scores(wave)`` -> per-patch class scores [P, 521] float32 (dequantised graph outputs)."""

    def __init__(self, path: str | os.PathLike | None = None, num_threads: int | None = None):
        import onnxruntime as ort

        from .. import store

        folder = Path(path) if path is not None else store.model_dir("yamnet")
        model = folder / "model.onnx"
        if not model.is_file():
            raise FileNotFoundError(f"YAMNet graph not found at {model}; run `mats models fetch yamnet`")
        self.path = folder
        q = read_scalar_initializers(model, {"audio_scale", "audio_zero_point",
                                             "class_scores_scale", "class_scores_zero_point"})
        self.in_scale, self.in_zero = q["audio_scale"], q["audio_zero_point"]
        self.out_scale, self.out_zero = q["class_scores_scale"], q["class_scores_zero_point"]
        from ..threads import num_threads as configured_threads

        opts = ort.SessionOptions()
        # Small graph: more than a couple of threads only adds contention on shared machines, and
        # spinning workers steal the cores torch needs (same reason as OMP_WAIT_POLICY=PASSIVE).
        opts.intra_op_num_threads = num_threads or min(2, configured_threads())
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.batched = not isinstance(inp.shape[0], int) or inp.shape[0] != 1
        self.class_names = load_class_names(folder / "yamnet_class_map.csv")

    def quantize(self, mel: np.ndarray) -> np.ndarray:
        q = np.round(mel / self.in_scale + self.in_zero)
        return np.clip(q, 0, 255).astype(np.uint8)

    def scores_from_patches(self, mel_patches: np.ndarray) -> np.ndarray:
        q = self.quantize(mel_patches)[:, None]  # [P, 1, 96, 64]
        if self.batched:
            out = self.session.run(None, {self.input_name: q})[0]
        else:
            out = np.concatenate([self.session.run(None, {self.input_name: q[i:i + 1]})[0]
                                  for i in range(len(q))])
        return ((out.astype(np.float32) - self.out_zero) * self.out_scale).astype(np.float32)

    def scores(self, wave: np.ndarray) -> np.ndarray:
        """Class scores [P, 521] for a 16 kHz mono waveform, one row per 0.96 s patch (hop 0.48 s)."""
        return self.scores_from_patches(patches(wave))


def load_class_names(csv_path: str | os.PathLike) -> list[str]:
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    names = [r["display_name"] for r in sorted(rows, key=lambda r: int(r["index"]))]
    if len(names) != 521:
        raise RuntimeError(f"{csv_path}: expected 521 YAMNet classes, found {len(names)}")
    return names
