"""Which engine runs inference: torch (transformers' ``generate``) or ONNX Runtime (:mod:`mats.onnx.engine`).

- ``"torch"``: every device and dtype; the only one that trains.
- ``"onnx"``: the CPU, fp32 weights, Llama-family LLMs; graphs exported once on first use
  (:mod:`mats.onnx.export`). A model it cannot serve is refused in one line.
- ``"auto"`` (default): ONNX Runtime on a CPU with fp32 weights, torch on a GPU or with other weights.
  Where it picks ONNX Runtime and the model cannot be served that way, one line on stderr says so and
  torch answers.

No runtime given means ``$MATS_RUNTIME``, else ``"auto"`` (:func:`default_runtime`).
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["RUNTIMES", "AUTO_PICKS_ONNX", "default_runtime", "choose_runtime", "load_onnx_model"]

RUNTIMES = ("auto", "onnx", "torch")

# Whether "auto" means ONNX Runtime on a CPU (fp32): same answers as torch, 1.6-2.2x faster and a
# fresh process without torch (docs/speed.md, "ONNX Runtime").
AUTO_PICKS_ONNX = True

log = logging.getLogger("mats")


def _note(line: str) -> None:
    print(f"mats: {line}", file=sys.stderr)


def default_runtime() -> str:
    """The runtime when none is given: ``$MATS_RUNTIME`` ("auto", "onnx" or "torch"), else "auto"."""
    runtime = os.environ.get("MATS_RUNTIME") or "auto"
    if runtime not in RUNTIMES:
        raise ValueError(f"MATS_RUNTIME={runtime!r} is not a runtime ({', '.join(RUNTIMES)})")
    return runtime


def choose_runtime(runtime: str | None, device: str | None = None, dtype: str | None = None) -> str:
    """"onnx" or "torch" for a requested runtime (None: :func:`default_runtime`), device and dtype;
    refuses combinations ONNX Runtime does not run (a GPU, weights other than fp32) when "onnx" is
    asked for explicitly."""
    runtime = runtime or default_runtime()
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r} ({', '.join(RUNTIMES)})")
    cpu = device in (None, "cpu", "auto")
    fp32 = dtype in (None, "auto", "fp32", "float32")
    if runtime == "onnx":
        if not cpu:
            raise ValueError(f"runtime 'onnx' runs on the CPU, not on {device!r}; use --runtime torch there")
        if not fp32:
            raise ValueError(f"runtime 'onnx' runs fp32 weights, not {dtype!r}; use --runtime torch for them")
        return "onnx"
    if runtime == "torch" or not AUTO_PICKS_ONNX or not fp32:
        return "torch"
    if device is None or device == "auto":
        from .devices import may_have_gpu, pick_device  # a GPU when one is present: torch

        return "onnx" if not may_have_gpu() or pick_device(None).type == "cpu" else "torch"
    return "onnx" if cpu else "torch"


def load_onnx_model(folder, config, strict: bool):
    """(OnnxModel, OnnxTextEncoder or None) for a model folder, exporting its graphs first if needed;
    None where the ONNX path cannot serve it and ``strict`` is False (a note on stderr says why).
    ``strict`` (runtime "onnx"): that is a one-line ValueError instead."""
    from .onnx.engine import OnnxModel, OnnxTextEncoder
    from .onnx.export import Unsupported, ensure_exported, supported_llm

    why = supported_llm(config.llm)
    try:
        if why is not None:
            raise Unsupported(why)
        export, manifest = ensure_exported(folder, config.llm, note=_note)
    except ImportError as e:  # exporting needs torch and onnx; reading a finished export does not
        raise ValueError(f"runtime 'onnx': exporting {folder} needs {e.name or e}; install it, or use "
                         "--runtime torch") from None
    except Unsupported as e:
        if strict:
            raise ValueError(f"runtime 'onnx' cannot serve {folder}: {e}") from None
        _note(f"{e}; running on torch")
        return None
    model = OnnxModel(export, config, manifest)
    text = OnnxTextEncoder(export) if "minilm.onnx" in manifest["files"] else None
    return model, text
