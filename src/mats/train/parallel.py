"""Data parallelism on torch.distributed (DDP), and moving trainable state in and out of the model.

``full_state`` / ``load_full_state`` / ``shard_like`` also accept DTensor (sharded) parameters, so a
sharded strategy only has to add its wrapping here. FSDP (``fully_shard``) is not offered yet: on
CPU/gloo its backward deadlocked in our 2-process test, and it could not be checked on a GPU.
"""

from __future__ import annotations

import torch
from torch import nn

STRATEGIES = ("ddp",)


def _is_dtensor(t) -> bool:
    return type(t).__name__ == "DTensor"


def wrap_model(model: nn.Module, strategy: str, world: int, device: torch.device) -> nn.Module:
    """The module to call forward on: the model itself (1 process) or its DDP wrapper."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown train.strategy {strategy!r}; choose one of {STRATEGIES}")
    if world <= 1:
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters as full CPU tensors (gathers FSDP shards; call on every rank)."""
    out = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            t = p.detach()
            out[name] = (t.full_tensor() if _is_dtensor(t) else t).cpu().contiguous()
    return out


def load_full_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy full tensors into the (possibly sharded) trainable parameters."""
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state))[:3], sorted(set(state) - expected)[:3]
        raise ValueError(f"trainable weights do not match this model (missing {missing}, unexpected {extra}); "
                         "was the checkpoint written with a different config?")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in state:
                p.copy_(shard_like(state[name], p))


def shard_like(full: torch.Tensor, like) -> torch.Tensor:
    """``full`` placed like ``like``: the same DTensor sharding, or the same device and dtype."""
    if _is_dtensor(like):
        from torch.distributed.tensor import distribute_tensor
        return distribute_tensor(full.to(like.device_mesh.device_type), like.device_mesh, like.placements)
    return full.to(device=like.device, dtype=like.dtype)
