"""Text-only training: config, loop, checkpoints."""

from .config import CorpusSpec, RunConfig, SantaBuild, TrainConfig

__all__ = ["CorpusSpec", "RunConfig", "SantaBuild", "TrainConfig", "train"]


def train(cfg: RunConfig, resume: bool = True, progress: bool = True):
    from .trainer import train as _train
    return _train(cfg, resume=resume, progress=progress)
