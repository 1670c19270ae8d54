"""Loading the language model: any Hugging Face causal LM (local folder or hub id) or a GGUF file.

GGUF files are de-quantised by transformers on every load, tokenizer conversion included, which costs
seconds even for a small model (docs/speed.md, "Loading the LLM"). The first load therefore writes the
de-quantised model and its tokenizer as a regular safetensors folder under ``$MATS_HOME/llm-cache/``
and later loads read that.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from . import store
from .devices import DTYPES, pick_device
from .model_config import LoRAConfig

if TYPE_CHECKING:  # torch is imported where a model is loaded: resolve_llm and llm_digest need none
    import torch

__all__ = ["LoRAConfig", "pick_device", "pick_dtype", "load_llm", "add_lora", "resolve_llm", "merge_lora"]


def native_bf16_cpu() -> bool:
    """True when the CPU multiplies bf16 natively (AVX512-BF16 or AMX): bf16 matmuls are then faster
    than fp32 (docs/speed.md, "Precision"). Without it bf16 is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(device: torch.device, dtype: str | None = None) -> torch.dtype:
    """Inference weights dtype.

    - "auto" (default): fp32 on CPU, bf16 (fp16 without bf16 support) on GPUs.
    - "fast": bf16 also on CPUs with native bf16, fp32 on other CPUs (where bf16 is emulated and
      slower). Captions decode faster, most of all in batches, and the real-sound quality does not
      drop (docs/speed.md, "Precision" and "Decoding a caption"). It is not the default because
      bf16 answers are not batch-invariant: a caption decoded in a batch can differ from the same
      clip decoded alone (fp32: never), so a server's answer would depend on the requests it
      shares a batch with.
    - "fp32", "bf16", "fp16": as named.

    Training asks for its own dtype: see ``MATSModel.from_config``."""
    import torch

    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype == "fast":
        if device.type == "cpu":
            return torch.bfloat16 if native_bf16_cpu() else torch.float32
        return pick_dtype(device, "auto")
    names = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
             "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r} ({', '.join(DTYPES)})")
    return names[dtype]


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
    # keyed by the file's content: a different GGUF copied to the same path is de-quantised again
    key = store.cached_sha256(folder / gguf)[:16]
    return store.mats_home() / "llm-cache" / f"{Path(gguf).stem}-{key}"


_WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.gguf")


def llm_digest(folder: Path, gguf: str | None) -> str:
    """sha256 over an LLM's content: its weight files (by :func:`mats.store.cached_sha256`, so each
    file is read once and remembered by path, size and mtime) and its config.json. Two different
    models at the same path give different digests; a copy of one model at another path the same."""
    h = hashlib.sha256()
    if gguf is not None:
        files = [folder / gguf]
    else:
        files = sorted({p for g in _WEIGHT_GLOBS if g != "*.gguf" for p in folder.glob(g) if p.is_file()})
        config = folder / "config.json"
        if config.is_file():
            h.update(b"config.json\0" + config.read_bytes() + b"\0")
    if not files:
        raise FileNotFoundError(f"{folder} holds no weight files ({', '.join(_WEIGHT_GLOBS)})")
    for p in files:
        h.update(f"{p.name}\0{store.cached_sha256(p)}\0".encode())
    return h.hexdigest()


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
    import torch
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
            tmp = store.unique_partial(cache)  # concurrent first loads each write their own
            try:
                _save_dequantised(model, tmp)
                tokenizer.save_pretrained(str(tmp))
                (tmp / "mats_source.json").write_text(json.dumps({"gguf": str(folder / gguf)}))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            store.publish_dir(tmp, cache, lambda c: (c / "config.json").exists())
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


# -- LoRA merged for inference ----------------------------------------------------------------------
# peft is slow to import and its wrapper adds per-step overhead (docs/speed.md, "Loading the LLM"); for
# inference the adapter is folded into the frozen weights once (W + scale * B @ A, as peft's merge
# computes it) and the merged tensors are cached as safetensors keyed by the content of the adapter and
# of the LLM's weights and by the dtype (not by paths: another model at the same path must not reuse them).
_PLAIN_LORA = {"peft_type": "LORA", "use_dora": False, "use_rslora": False, "fan_in_fan_out": False,
               "rank_pattern": {}, "alpha_pattern": {}, "bias": "none", "modules_to_save": None,
               "layers_to_transform": None, "layer_replication": None, "target_parameters": None,
               "trainable_token_indices": None, "lora_bias": False}
_ADAPTER_PREFIX = "base_model.model."


_MERGE_VERSION = "2"  # bump when the merge or the key changes, so old cache files are not read


def _merged_cache_file(lora_folder: Path, llm_spec: str, dtype: torch.dtype) -> Path:
    h = hashlib.sha256(f"merged-lora v{_MERGE_VERSION}\0".encode())
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        h.update(name.encode() + b"\0" + (lora_folder / name).read_bytes() + b"\0")
    h.update(f"llm:{llm_digest(*resolve_llm(llm_spec))}\0dtype:{dtype}".encode())
    return store.mats_home() / "llm-cache" / "merged" / f"{h.hexdigest()[:32]}.safetensors"


def _write_merged(cache: Path, merged: dict[str, torch.Tensor]) -> None:
    """Write the merged tensors to ``cache`` through a name no other writer uses, then move them into
    place atomically: concurrent processes leave one complete file (either's: they are equal) and no
    partial one. A cache that cannot be written only costs merging again next time."""
    from safetensors.torch import save_file

    tmp = store.unique_partial(cache)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.cpu() for k, v in merged.items()}, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, cache)
    except OSError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def _merge_by_hand(model, lora_folder: Path) -> dict[str, torch.Tensor] | None:
    """{parameter name: merged weight} for a plain LoRA adapter, or None when it uses a feature
    (DoRA, rsLoRA, rank patterns, ...) that only peft should fold."""
    from safetensors.torch import load_file

    config = json.loads((lora_folder / "adapter_config.json").read_text())
    if any(config.get(k) not in (v, None, {}, [], False) for k, v in _PLAIN_LORA.items()):
        return None
    scale = float(config["lora_alpha"]) / float(config["r"])
    adapter = load_file(str(lora_folder / "adapter_model.safetensors"))
    params = dict(model.named_parameters())
    merged = {}
    for key, a in adapter.items():
        if not key.endswith(".lora_A.weight"):
            if not key.endswith(".lora_B.weight"):
                return None  # embeddings, biases or other extras: leave it to peft
            continue
        module = key[len(_ADAPTER_PREFIX):-len(".lora_A.weight")]
        b = adapter[key.replace(".lora_A.", ".lora_B.")]
        weight = params[module + ".weight"].detach()
        # in fp32 whatever the weights' dtype (fp32 weights: exactly peft's merge)
        merged[module + ".weight"] = (weight.float() + (b.float() @ a.float()) * scale).to(weight.dtype).contiguous()
    return merged


def merge_lora(model, lora_folder: str | Path, llm_spec: str):
    """Fold the adapter in ``lora_folder`` into ``model`` (a plain LLM from ``load_llm``) in place.
    Uses the on-disk cache when present; peft is imported only for adapters not merged by hand."""
    import torch
    from safetensors.torch import load_file

    lora_folder = Path(lora_folder)
    dtype = next(model.parameters()).dtype
    cache = _merged_cache_file(lora_folder, llm_spec, dtype)
    merged = None
    if cache.is_file():
        try:
            merged = load_file(str(cache))
        except Exception:  # a damaged cache file is merged again and rewritten, never trusted
            merged = None
    if merged is None:
        merged = _merge_by_hand(model, lora_folder)
        if merged is None:
            from peft import PeftModel

            return PeftModel.from_pretrained(model, str(lora_folder), is_trainable=False).merge_and_unload()
        _write_merged(cache, merged)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in merged.items():
            params[name].copy_(value)
    return model
