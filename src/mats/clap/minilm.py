"""all-MiniLM-L6-v2 sentence encoder: the text tower of the offline default CLAP."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .base import encode_texts_batched


class MiniLMTextEncoder:
    """Mean pooling over token states + L2 norm, as sentence-transformers does for this model."""

    dim = 384

    def __init__(self, path: str | Path | None = None, device: str = "cpu", max_length: int = 128):
        from transformers import AutoModel, AutoTokenizer

        from .. import store

        path = Path(path) if path is not None else store.model_dir("all-minilm-l6-v2")
        self.path = path
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).to(device).eval()
        self.device = device
        self.max_length = max_length

    def fingerprint(self) -> str:
        """Names this encoder's weights (path, size and time of each weight file) for disk caches."""
        files = sorted(self.path.glob("*.safetensors")) + sorted(self.path.glob("*.bin"))
        stats = [f"{f.resolve()}:{f.stat().st_size}:{int(f.stat().st_mtime)}" for f in files]
        return f"minilm|max_length={self.max_length}|" + "|".join(stats)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        def encode_batch(texts_: list[str]) -> np.ndarray:
            batch = self.tokenizer(texts_, padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            return ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).float().cpu().numpy()

        return encode_texts_batched(texts, batch_size, self.dim, encode_batch)
