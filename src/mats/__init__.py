"""MATS: audio language models trained on text alone.

Public API (imported lazily, so ``import mats`` is cheap)::

    from mats import MATS, load_clap
    m = MATS.from_pretrained()          # the offline default model
    m.caption(["clip.wav"])
"""

from .threads import set_passive_wait as _set_passive_wait
from .version import __version__

_set_passive_wait()  # before torch loads its OpenMP runtime; see mats.threads

__all__ = ["MATS", "load_clap", "MATSModel", "ModelConfig", "RunConfig", "train", "__version__"]


def __getattr__(name):
    if name == "MATS":
        from .pipeline import MATS
        return MATS
    if name == "load_clap":
        from .clap import load_clap
        return load_clap
    if name in ("MATSModel", "ModelConfig"):
        from . import model
        return getattr(model, name)
    if name in ("RunConfig", "train"):
        from . import train as _train
        return getattr(_train, name)
    raise AttributeError(f"module 'mats' has no attribute {name!r}")
