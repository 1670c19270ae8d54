"""One optimiser step: the whole of training's inner work, in one function.

The trainer (mats.train.trainer) loops over it; benchmarks/train_throughput.py times it.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
import torch.distributed as dist


def train_step(model, batch: tuple[torch.Tensor, Sequence], optimizer: torch.optim.Optimizer, *,
               grad_clip: float = 1.0, grad_accum: int = 1, autocast=None, scaler=None,
               wrapped=None, rank: int = 0, world: int = 1) -> float:
    """Forward, backward and optimiser update over one global batch ``(z [B, D], requests)``.

    The loss is summed over answer tokens and divided by the global batch's answer-token count, so
    any split into micro-batches (``grad_accum``) and processes (``world``; each takes its slice of
    the same global batch) gives the gradient of one big batch. ``wrapped``: the DDP/FSDP wrapper
    around ``model``, if any. Returns the batch's mean loss per answer token."""
    z, requests = batch
    wrapped = wrapped if wrapped is not None else model
    n_tokens = model.answer_token_count(requests)
    micro = len(requests) // (grad_accum * world)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    loss_sum = 0.0
    for k in range(grad_accum):
        lo = (rank * grad_accum + k) * micro
        last = k == grad_accum - 1 or world == 1
        no_sync = contextlib.nullcontext() if last or wrapped is model else wrapped.no_sync()
        with no_sync, (autocast or contextlib.nullcontext()):
            # DDP and FSDP average gradients over processes, hence the factor world.
            loss = wrapped(z[lo:lo + micro].to(model.device), requests[lo:lo + micro],
                           reduction="sum") / n_tokens * world
        (scaler.scale(loss) if scaler else loss).backward()
        loss_sum += loss.item() / world
    if scaler:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    (scaler.step(optimizer), scaler.update()) if scaler else optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if world > 1:
        t = torch.tensor([loss_sum], device=model.device)
        dist.all_reduce(t)
        loss_sum = t.item()
    return loss_sum
