"""Tiny real models built on the fly for plumbing tests.

The tiny LLM is a randomly initialised llama with the real SmolLM2 tokenizer and chat template (from
the offline store), saved in the standard Hugging Face folder format, so it goes through exactly the
loading code a real checkpoint takes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def make_tiny_llm(folder: Path, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from mats.llm import load_llm

    folder = Path(folder)
    if (folder / "config.json").exists():
        return folder
    _, tokenizer = load_llm("smollm2-135m-instruct")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    return folder


def make_tiny_model(folder: Path, llm_dir: Path, clap_dim: int = 384, bank: np.ndarray | None = None,
                    seed: int = 0) -> Path:
    """A complete MATS model folder (random mapper, LoRA, Santa memory) around a tiny LLM."""
    from mats.bridge.santa import SantaConfig, SantaMemory
    from mats.mapper import MapperConfig
    from mats.model import MATSModel, ModelConfig
    from mats.pipeline import MATS

    torch.manual_seed(seed)
    config = ModelConfig(llm=str(llm_dir), mapper=MapperConfig(clap_dim=clap_dim, width=32, depth=1, heads=2,
                                                               clip_length=2, prefix_length=2))
    model = MATSModel.from_config(config)
    if bank is None:
        rng = np.random.default_rng(seed)
        bank = rng.standard_normal((64, clap_dim)).astype(np.float32)
        bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    santa = SantaMemory.build(bank, SantaConfig(clusters=4, top_l=4, seed=seed),
                              texts=[f"training text {i}" for i in range(len(bank))])
    # No CLAP given: the folder records no CLAP fingerprint, so any CLAP of the right size loads it.
    return MATS(model, clap=None, santa=santa).save_pretrained(folder)
