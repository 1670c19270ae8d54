"""Training checkpoints: trainable weights, optimiser, scheduler and scaler state, all in safetensors/JSON.

A checkpoint folder is written under a temporary name and renamed when complete, so a run killed
mid-save (even by SIGKILL) leaves the previous checkpoint intact.

Self-healing: each checkpoint ends with ``manifest.json``, the size and sha256 of every other file
in it. On resume the newest checkpoint is verified against its manifest (and loaded); a damaged or
incomplete one (truncated, zeroed or overwritten weights, edited or invalid ``state.json``, missing
files) is reported in one line and the next older one is tried, so a run resumes from the newest
intact checkpoint. Only when none is intact does resuming stop, with :class:`CheckpointError`.
Checkpoints written before manifests existed are checked by loading them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..store import sha256_file
from .parallel import full_state, load_full_state, shard_like

PREFIX = "step-"
MANIFEST = "manifest.json"
FILES = ("trainable.safetensors", "optimizer.safetensors", "state.json")
STATE_KEYS = ("step", "optimizer", "scheduler", "scaler", "torch_rng")


class CheckpointError(RuntimeError):
    """No checkpoint can be resumed from; the message lists each one and what is wrong with it."""


def _dir(out: Path) -> Path:
    return Path(out) / "checkpoints"


def latest_checkpoint(out: str | Path) -> Path | None:
    d = _dir(Path(out))
    if not d.is_dir():
        return None
    done = sorted(p for p in d.iterdir() if p.name.startswith(PREFIX) and (p / "state.json").is_file())
    return done[-1] if done else None


def all_checkpoints(out: str | Path) -> list[Path]:
    """Every completed (renamed) checkpoint folder, newest first, intact or not."""
    d = _dir(Path(out))
    if not d.is_dir():
        return []
    return sorted((p for p in d.iterdir() if p.name.startswith(PREFIX) and p.is_dir()), reverse=True)


def _write_manifest(folder: Path, step: int) -> None:
    files = {name: {"bytes": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
             for name in FILES}
    (folder / MANIFEST).write_text(json.dumps({"format": "mats-checkpoint", "step": step, "files": files},
                                              indent=1))


def _read_state(path: Path) -> dict:
    try:
        state = json.loads((path / "state.json").read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path / 'state.json'}: missing") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path / 'state.json'}: invalid JSON ({e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path / 'state.json'}: not a JSON object")
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path / 'state.json'}: missing key(s) {', '.join(missing)}")
    return state


def verify_checkpoint(path: str | Path) -> None:
    """Raise :class:`CheckpointError` (naming the file and the fault) unless ``path`` matches its
    manifest. Without a manifest (older checkpoints) only the presence of the files is checked
    here; loading finds the rest."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
            files = manifest["files"]
            expected = {name: (int(files[name]["bytes"]), str(files[name]["sha256"])) for name in FILES}
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{manifest_path}: unreadable manifest ({type(e).__name__}: {e})") from None
        for name, (size, digest) in expected.items():
            f = path / name
            if not f.is_file():
                raise CheckpointError(f"{f}: missing")
            got = f.stat().st_size
            if got != size:
                raise CheckpointError(f"{f}: {got} bytes, the manifest says {size} (truncated or overwritten)")
            if sha256_file(f) != digest:
                raise CheckpointError(f"{f}: sha256 differs from the manifest (the file was damaged)")
    else:
        for name in FILES:
            if not (path / name).is_file():
                raise CheckpointError(f"{path / name}: missing (incomplete checkpoint)")
    _read_state(path)


def resume_from_intact(out: str | Path, model, optimizer, scheduler, scaler=None,
                       report=print) -> tuple[Path | None, int]:
    """Load the newest checkpoint of ``out`` that verifies and loads; returns (folder, step), or
    (None, 0) when there is no checkpoint at all. Each damaged one is reported in one line through
    ``report``; :class:`CheckpointError` when checkpoints exist but none is intact."""
    problems = []
    for path in all_checkpoints(out):
        try:
            verify_checkpoint(path)
            step = load_checkpoint(path, model, optimizer, scheduler, scaler)
        except CheckpointError as e:
            why = str(e)
        except Exception as e:  # a checkpoint that verifies yet does not load (older format, other model)
            why = f"{path}: does not load ({type(e).__name__}: {' '.join(str(e).split())})"
        else:
            return path, step
        problems.append(why)
        report(f"[mats] damaged checkpoint skipped: {why}")
    if problems:
        raise CheckpointError(
            f"no intact checkpoint to resume from in {_dir(Path(out))} ({len(problems)} damaged: "
            + "; ".join(problems) + "). Remove the damaged folders to start over, or pass --no-resume")
    return None, 0


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
    _write_manifest(tmp, step)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    old = sorted(p for p in d.iterdir() if p.name.startswith(PREFIX))
    for p in old[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
    return final


def load_checkpoint(path: str | Path, model, optimizer, scheduler, scaler=None) -> int:
    """Restore everything saved by ``save_checkpoint``; returns the step to continue from."""
    path = Path(path)
    state = _read_state(path)
    try:
        weights = load_file(str(path / "trainable.safetensors"))
    except Exception as e:  # SafetensorError for truncated or overwritten files
        raise CheckpointError(f"{path / 'trainable.safetensors'}: unreadable ({' '.join(str(e).split())})") from None
    try:
        load_full_state(model, weights)
    except ValueError as e:
        raise ValueError(f"checkpoint {path}: {e}") from None
    try:
        opt_tensors = load_file(str(path / "optimizer.safetensors"))
    except Exception as e:
        raise CheckpointError(f"{path / 'optimizer.safetensors'}: unreadable ({' '.join(str(e).split())})") from None
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
