"""Mapper: one CLAP embedding in, a sequence of LLM input embeddings (the "prefix") out.

ClipCap-style transformer mapper (the paper's): Linear(clap_dim -> clip_length x width) gives clip
tokens, concatenated with ``prefix_length`` learned constant tokens; a transformer runs over both and
the outputs at the constant positions are projected to the LLM hidden size. The MLP variant maps
straight to ``prefix_length x llm_hidden`` (cheaper, weaker).
"""

from __future__ import annotations

import torch
from torch import nn

from .model_config import MapperConfig


class TransformerMapper(nn.Module):
    def __init__(self, cfg: MapperConfig):
        super().__init__()
        self.cfg = cfg
        self.to_clip = nn.Linear(cfg.clap_dim, cfg.clip_length * cfg.width)
        self.constants = nn.Parameter(torch.randn(cfg.prefix_length, cfg.width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model=cfg.width, nhead=cfg.heads, dim_feedforward=int(cfg.width * cfg.mlp_ratio),
            dropout=cfg.dropout, activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, num_layers=cfg.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.width)
        self.to_llm = nn.Linear(cfg.width, cfg.llm_hidden)

    def forward(self, clap_embedding: torch.Tensor) -> torch.Tensor:
        b = clap_embedding.shape[0]
        clip = self.to_clip(clap_embedding).view(b, self.cfg.clip_length, self.cfg.width)
        x = torch.cat([clip, self.constants.unsqueeze(0).expand(b, -1, -1)], dim=1)
        x = self.norm(self.transformer(x))
        return self.to_llm(x[:, self.cfg.clip_length:])


class MLPMapper(nn.Module):
    def __init__(self, cfg: MapperConfig):
        super().__init__()
        self.cfg = cfg
        hidden = cfg.prefix_length * cfg.llm_hidden // 2
        self.net = nn.Sequential(nn.Linear(cfg.clap_dim, hidden), nn.Tanh(),
                                 nn.Linear(hidden, cfg.prefix_length * cfg.llm_hidden))

    def forward(self, clap_embedding: torch.Tensor) -> torch.Tensor:
        return self.net(clap_embedding).view(-1, self.cfg.prefix_length, self.cfg.llm_hidden)


def build_mapper(cfg: MapperConfig) -> nn.Module:
    if cfg.kind == "transformer":
        return TransformerMapper(cfg)
    if cfg.kind == "mlp":
        return MLPMapper(cfg)
    raise ValueError(f"unknown mapper kind {cfg.kind!r} (transformer or mlp)")
