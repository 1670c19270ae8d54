"""Data parallelism on torch.distributed: DDP, or FSDP (``fully_shard``) for LLMs too big to replicate.

With FSDP every decoder layer of the LLM is its own shard unit and the rest (embeddings, LM head,
mapper) sits in the root unit; frozen base weights are sharded like the trainable ones, so a
7B-class LLM needs a 1/N share of its weights per GPU. Parameters become DTensors: ``full_state``
gathers them (a collective: every rank calls it) and ``load_full_state`` scatters a full state back.
Two rules follow for the trainer: wrap before building the optimiser (the parameters are replaced),
and run every forward -- held-out loss included -- on all ranks (it all-gathers).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import STRATEGIES


def _is_dtensor(t) -> bool:
    return type(t).__name__ == "DTensor"


def wrap_model(model: nn.Module, strategy: str, world: int, device: torch.device) -> nn.Module:
    """The module to call forward on: the model itself (1 process) or its DDP wrapper."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown train.strategy {strategy!r}; choose one of {STRATEGIES}")
    if world <= 1:
        return model
    if strategy == "ddp":
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world,))
    layers = [m for m in model.llm.modules() if type(m).__name__.endswith("DecoderLayer")]
    if not layers:
        raise ValueError("FSDP: found no *DecoderLayer modules in the LLM to shard")
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


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
