"""The model's typed config: the ``model`` section of a model folder's ``config.json``.

Mapper shape, LoRA, prompt and retrieval settings, as dataclasses. Here, apart from the modules that
build the model (:mod:`mats.mapper`, :mod:`mats.llm`, :mod:`mats.model`), so that a folder's config
is read without importing torch: the ONNX Runtime path never imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .bridge.retrieval import RetrievalConfig

__all__ = ["MapperConfig", "LoRAConfig", "ModelConfig"]


@dataclass
class MapperConfig:
    kind: str = "transformer"  # "transformer" | "mlp"
    clap_dim: int = 384
    llm_hidden: int = 576
    clip_length: int = 10
    prefix_length: int = 10
    width: int = 384
    depth: int = 4
    heads: int = 8
    mlp_ratio: float = 2.0
    dropout: float = 0.0


@dataclass
class LoRAConfig:
    r: int = 8
    alpha: int = 32
    dropout: float = 0.1
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")


@dataclass
class ModelConfig:
    clap: str = "yamnet-minilm"
    llm: str = "smollm2-135m-instruct"
    mapper: MapperConfig = field(default_factory=MapperConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    prompt_style: str = "chat"  # "chat" (tokenizer's chat template) or "plain" (USER:/ASSISTANT:)
    system_prompt: str | None = "You are an assistant that listens to audio."
    max_answer_tokens: int = 64
    # Retrieval-augmented prompting (mats.bridge.retrieval): k = 0, the default, is the paper's model.
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)

