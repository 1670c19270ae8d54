"""Loading the language model: any Hugging Face causal LM (local folder or hub id) or a GGUF file.

GGUF files are de-quantised by transformers on every load (≈10-20 s for SmolLM2-135M on 2 cores,
tokenizer conversion included). The first load therefore writes the de-quantised model and its
tokenizer as a regular safetensors folder under ``$MATS_HOME/llm-cache/`` and later loads read that.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from . import store
from .devices import pick_device

__all__ = ["LoRAConfig", "pick_device", "pick_dtype", "load_llm", "add_lora", "resolve_llm"]


@dataclass
class LoRAConfig:
    r: int = 8
    alpha: int = 32
    dropout: float = 0.1
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")


def pick_dtype(device: torch.device, dtype: str | None = None) -> torch.dtype:
    """Weights dtype: fp32 on CPU (bf16 matmuls are slow there), bf16 on GPUs that support it."""
    if dtype and dtype != "auto":
        return {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
                "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def resolve_llm(spec: str) -> tuple[Path, str | None]:
    """(folder, gguf file name or None) for a registered name, local folder/file or hub id."""
    path = store.resolve(spec, kind="LLM")
    if path.is_file():
        if path.suffix != ".gguf":
            raise ValueError(f"LLM file {path} is not a .gguf; pass a model folder or a GGUF file")
        return path.parent, path.name
    ggufs = sorted(path.glob("*.gguf"))
    if not (path / "config.json").exists() and ggufs:
        if len(ggufs) > 1:
            raise ValueError(f"{path} holds several GGUF files; pass the one to use: {[g.name for g in ggufs]}")
        return path, ggufs[0].name
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} has neither config.json nor a .gguf file: not a causal LM folder")
    return path, None


def _gguf_cache_dir(folder: Path, gguf: str) -> Path:
    f = folder / gguf
    st = f.stat()
    key = hashlib.sha256(f"{f.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:16]
    return store.mats_home() / "llm-cache" / f"{Path(gguf).stem}-{key}"


def _save_dequantised(model, folder: Path) -> None:
    # transformers refuses save_pretrained on GGUF-loaded models; the tensors are plain fp32
    # after de-quantisation, so write them and a config without the quantisation entry.
    from safetensors.torch import save_model

    folder.mkdir(parents=True)
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    model.generation_config.save_pretrained(str(folder))
    save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})


def load_llm(spec: str, device: str | torch.device | None = None, dtype: str | None = None):
    """Return (model, tokenizer). Frozen weights, eval mode; the caller adds LoRA if training."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device(str(device) if device is not None else None)
    torch_dtype = pick_dtype(device, dtype)
    folder, gguf = resolve_llm(spec)
    local = {"local_files_only": True}
    if gguf is not None:
        cache = _gguf_cache_dir(folder, gguf)
        if not (cache / "config.json").exists():
            tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf, **local)
            model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf,
                                                         dtype=torch.float32, **local)
            tmp = cache.with_name(cache.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            _save_dequantised(model, tmp)
            tokenizer.save_pretrained(str(tmp))
            (tmp / "mats_source.json").write_text(json.dumps({"gguf": str(folder / gguf)}))
            shutil.rmtree(cache, ignore_errors=True)
            os.replace(tmp, cache)
        folder = cache
    tokenizer = AutoTokenizer.from_pretrained(str(folder), **local)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch_dtype, **local)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tokenizer


def add_lora(model, config: LoRAConfig):
    from peft import LoraConfig as PeftLoraConfig, get_peft_model

    peft_config = PeftLoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
                                 target_modules=list(config.target_modules), bias="none",
                                 task_type="CAUSAL_LM")
    return get_peft_model(model, peft_config)
