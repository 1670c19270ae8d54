"""Training checkpoints: trainable weights, optimiser, scheduler and scaler state, all in safetensors/JSON.

A checkpoint folder is written under a temporary name and renamed when complete, so a run killed
mid-save (even by SIGKILL) leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .parallel import full_state, load_full_state, shard_like

PREFIX = "step-"


def _dir(out: Path) -> Path:
    return Path(out) / "checkpoints"


def latest_checkpoint(out: str | Path) -> Path | None:
    d = _dir(Path(out))
    if not d.is_dir():
        return None
    done = sorted(p for p in d.iterdir() if p.name.startswith(PREFIX) and (p / "state.json").is_file())
    return done[-1] if done else None


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            t = t.detach()
            if type(t).__name__ == "DTensor":  # FSDP: gather the shards (every rank takes part)
                t = t.full_tensor()
            tensors[f"{pid}.{key}"] = t.cpu().contiguous()
    return tensors, {"param_groups": sd["param_groups"]}


def save_checkpoint(out: str | Path, step: int, model, optimizer, scheduler, scaler=None, keep: int = 2,
                    write: bool = True) -> Path:
    """Gather the state (every rank must call this under FSDP); only ``write=True`` touches disk."""
    d = _dir(Path(out))
    final = d / f"{PREFIX}{step:08d}"
    weights = full_state(model)
    opt_tensors, opt_meta = _optimizer_tensors(optimizer)
    if not write:
        return final
    tmp = d / f".tmp-{PREFIX}{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(weights, str(tmp / "trainable.safetensors"))
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    state = {"step": step, "optimizer": opt_meta, "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict() if scaler is not None else None,
             "torch_rng": torch.get_rng_state().tolist()}
    (tmp / "state.json").write_text(json.dumps(state))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    old = sorted(p for p in d.iterdir() if p.name.startswith(PREFIX))
    for p in old[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
    return final


def load_checkpoint(path: str | Path, model, optimizer, scheduler, scaler=None) -> int:
    """Restore everything saved by ``save_checkpoint``; returns the step to continue from."""
    path = Path(path)
    state = json.loads((path / "state.json").read_text())
    try:
        load_full_state(model, load_file(str(path / "trainable.safetensors")))
    except ValueError as e:
        raise ValueError(f"checkpoint {path}: {e}") from None
    opt_tensors = load_file(str(path / "optimizer.safetensors"))
    params = [p for group in optimizer.param_groups for p in group["params"]]
    opt_state: dict[int, dict] = {}
    for key, value in opt_tensors.items():
        pid, name = key.split(".", 1)
        p = params[int(pid)]
        # moments have the parameter's shape (and FSDP sharding); the step counter is a scalar
        opt_state.setdefault(int(pid), {})[name] = shard_like(value, p) if value.shape == p.shape else value
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["optimizer"]["param_groups"]})
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
    return int(state["step"])
