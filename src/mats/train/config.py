"""Run configuration: what to train (ModelConfig) and how (TrainConfig), saved with every checkpoint."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..bridge.config import PAPER_NOISE_VARIANCE
from ..config import apply_overrides, from_dict, to_dict
from ..model import ModelConfig

STRATEGIES = ("ddp", "fsdp")  # how several processes share the model (train/parallel.py)


@dataclass
class CorpusSpec:
    path: str
    weight: float = 1.0


@dataclass
class SantaBuild:
    """How the Santa memory bank stored with the model is built from the training texts.

    Its entries get the training noise (``train.noise_variance`` / ``train.noise_kind``): one noise
    setting per model, recorded once in the model folder."""

    bank_size: int = 5172  # M; the paper's reference run used 5,172 texts
    clusters: int = 100
    kmeans_iters: int = 10
    top_l: int = 32
    tau: float = 10.0
    lam: float = 0.3


@dataclass
class TrainConfig:
    corpus: list[CorpusSpec] = field(default_factory=list)
    out_dir: str = "runs/default"
    seed: int = 0
    steps: int = 1000
    batch_size: int = 16  # global batch per optimiser step (all processes, all micro-batches)
    grad_accum: int = 1
    lr: float = 3e-5
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.05
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    noise_variance: float = PAPER_NOISE_VARIANCE  # text-embedding noise in training (and on Santa's entries)
    noise_kind: str = "gaussian"
    strategy: str = "ddp"  # with several processes: "ddp" (replicate) or "fsdp" (shard; train/parallel.py)
    # auto | fp32 | bf16 | fp16 (autocast; auto = bf16 on capable GPUs and CPUs with native bf16, else fp32)
    precision: str = "auto"
    device: str = "auto"
    held_out: int = 256  # corpus rows kept out of training for the held-out loss
    eval_every: int = 100
    save_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    # "weighted": each step draws rows at random by corpus weight; "bucketed": epochs over the training
    # rows, every row once per epoch, in batches of similar length (less padding; corpus weights must be 1)
    batching: str = "weighted"
    embed_batch_size: int = 256
    init_from: str | None = None  # a model folder whose mapper + LoRA weights start this run (fine-tuning)
    cache_dir: str | None = None  # CLAP text-embedding cache; None = $MATS_HOME/embeddings
    santa: SantaBuild = field(default_factory=SantaBuild)

    def __post_init__(self) -> None:
        # Checked when the config is read, not after the corpus has been embedded.
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown train.strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.batching not in ("weighted", "bucketed"):
            raise ValueError(f"unknown train.batching {self.batching!r}; choose weighted or bucketed")
        weights = [c.get("weight", 1.0) if isinstance(c, dict) else c.weight for c in self.corpus]
        if self.batching == "bucketed" and any(float(w) != 1.0 for w in weights):
            raise ValueError("train.batching 'bucketed' visits every row once per epoch; corpus weights "
                             "other than 1 need batching 'weighted'")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def load(cls, path: str | Path | None, overrides: list[str] | None = None) -> "RunConfig":
        data: dict = {}
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise FileNotFoundError(f"config file {path} does not exist")
            if path.suffix == ".toml":
                import tomllib
                data = tomllib.loads(path.read_text())
            else:
                data = json.loads(path.read_text())
            data.pop("format", None)
        data = apply_overrides(data, overrides or [])
        _fold_santa_noise(data)
        return from_dict(cls, data, "config")

    def to_dict(self) -> dict:
        return to_dict(self)


def _fold_santa_noise(data: dict) -> None:
    """Configs written before the noise became one setting carry ``train.santa.noise_variance`` too;
    it is accepted when it equals ``train.noise_variance`` (it always did in the shipped configs)."""
    train = data.get("train")
    santa = train.get("santa") if isinstance(train, dict) else None
    if not isinstance(santa, dict) or "noise_variance" not in santa:
        return
    old = santa.pop("noise_variance")
    if old != train.get("noise_variance", PAPER_NOISE_VARIANCE):
        raise ValueError(f"config: train.santa.noise_variance ({old}) differs from train.noise_variance "
                         f"({train.get('noise_variance', PAPER_NOISE_VARIANCE)}); the noise is one setting now "
                         "(train.noise_variance, used for training and for the Santa memory): remove "
                         "train.santa.noise_variance")
