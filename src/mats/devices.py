"""Which device a model runs on, decided in one place for every part (CLAP backends, the LLM, training).

Torch is imported inside the function, so modules that only pass a device name along load without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["pick_device", "may_have_gpu", "DTYPES"]

# The weight dtypes ``MATS.from_pretrained(dtype=...)`` and ``--dtype`` accept; what each means is
# decided by ``mats.llm.pick_dtype``. Kept here, torch-free, so building the CLI parser imports no torch.
DTYPES = ("auto", "fast", "fp32", "bf16", "fp16")


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as given, or for ``None``/``"auto"`` the best one present: CUDA, then Apple MPS, then CPU."""
    import torch

    if device and str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def may_have_gpu() -> bool:
    """False when this machine certainly has no GPU torch could use: no CUDA or ROCm device node, not an
    Apple-silicon Mac, or ``CUDA_VISIBLE_DEVICES`` empty. Asked before :func:`pick_device` where the
    answer decides whether torch is needed at all: importing torch just to learn there is no GPU costs a
    fresh process more than a second."""
    import os
    import platform

    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return False
    if platform.system() == "Darwin":
        return platform.machine() == "arm64"  # MPS
    return any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg"))
