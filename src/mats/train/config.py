"""Run configuration: what to train (ModelConfig) and how (TrainConfig), saved with every checkpoint."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..config import apply_overrides, from_dict, to_dict
from ..model import ModelConfig

STRATEGIES = ("ddp", "fsdp")  # how several processes share the model (train/parallel.py)


@dataclass
class CorpusSpec:
    path: str
    weight: float = 1.0


@dataclass
class SantaBuild:
    """How the Santa memory bank stored with the model is built from the training texts."""

    bank_size: int = 5172  # M; the paper's reference run used 5,172 texts
    clusters: int = 100
    kmeans_iters: int = 10
    top_l: int = 32
    tau: float = 10.0
    lam: float = 0.3
    noise_variance: float = 0.015


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
    noise_variance: float = 0.015
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
        return from_dict(cls, data, "config")

    def to_dict(self) -> dict:
        return to_dict(self)
