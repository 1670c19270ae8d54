"""Self-healing checkpoints: the newest of three checkpoints damaged in five ways; the resumed run
reports it in one line, resumes from the newest intact one and ends with exactly the weights of an
uninterrupted run. When none is intact, resuming stops with one clear line.

Real parts throughout (as test_train.py): the tiny random llama with the real tokenizer, the default
CLAP's text encoder for the corpus embeddings, the real trainer in-process.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from test_train import child_env, final_tensors, needs_default_clap, run_config, write_config, write_corpus

STEPS = 8


def _train(cfg_path):
    from mats.train.config import RunConfig
    from mats.train.trainer import train
    return train(RunConfig.load(cfg_path), progress=False)


@pytest.fixture(scope="module")
def healing_env(tmp_path_factory, tiny_llm):
    """An uninterrupted run of 8 steps with a checkpoint every 2 (all four kept)."""
    root = tmp_path_factory.mktemp("healing")
    corpus = write_corpus(root / "corpus")
    cfg = run_config(tiny_llm, corpus, root / "reference", root / "embeddings", steps=STEPS, save_every=2,
                     keep_checkpoints=4, eval_every=4)
    ref_cfg = write_config(root / "reference.json", cfg)
    _train(ref_cfg)
    return root, cfg, root / "reference"


def _damage(ckpt, kind: str) -> None:
    weights, state = ckpt / "trainable.safetensors", ckpt / "state.json"
    if kind == "truncated":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    elif kind == "zero-byte":
        weights.write_bytes(b"")
    elif kind == "random-bytes":
        # Same size, random content past the header: only the checksum can tell.
        data = bytearray(weights.read_bytes())
        rng = np.random.default_rng(0)
        start = len(data) // 2
        data[start:] = rng.integers(0, 256, len(data) - start, dtype=np.uint8).tobytes()
        weights.write_bytes(bytes(data))
    elif kind == "state-missing-key":
        s = json.loads(state.read_text())
        del s["scheduler"]
        state.write_text(json.dumps(s))
    elif kind == "invalid-json":
        state.write_text(state.read_text()[:-10])
    else:
        raise ValueError(kind)


def _interrupted_copy(root, cfg, reference, name):
    """The reference run folder as it was when killed after the checkpoint of step 6: checkpoints 2, 4
    and 6 on disk, no model folder yet."""
    out = root / name
    shutil.copytree(reference, out, ignore=shutil.ignore_patterns("model"))
    shutil.rmtree(out / "checkpoints" / f"step-{STEPS:08d}")
    cfg = json.loads(json.dumps(cfg))
    cfg["train"]["out_dir"] = str(out)
    return out, write_config(root / f"{name}.json", cfg)


@pytest.mark.slow
@needs_default_clap
@pytest.mark.parametrize("kind", ["truncated", "zero-byte", "random-bytes", "state-missing-key", "invalid-json"])
def test_damaged_newest_checkpoint_falls_back(healing_env, kind, caplog):
    root, cfg, reference = healing_env
    out, cfg_path = _interrupted_copy(root, cfg, reference, f"damaged-{kind}")
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["step-00000002", "step-00000004", "step-00000006"]
    newest = out / "checkpoints" / "step-00000006"
    _damage(newest, kind)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mats"):
        _train(cfg_path)
    stdout = "\n".join(r.getMessage() for r in caplog.records)
    damaged_lines = [line for line in stdout.splitlines() if "damaged checkpoint" in line]
    assert len(damaged_lines) == 1, stdout
    assert str(newest) in damaged_lines[0]
    assert "step-00000004 at step 4 (the newest intact checkpoint)" in stdout, stdout
    got, ref = final_tensors(out / "model"), final_tensors(reference / "model")
    assert got.keys() == ref.keys()
    differ = [k for k in ref if not torch.equal(got[k], ref[k])]
    assert not differ, f"{len(differ)} tensors differ after resuming from the intact checkpoint: {differ[:3]}"


@pytest.mark.slow
@needs_default_clap
def test_no_intact_checkpoint_stops_with_one_line(healing_env):
    root, cfg, reference = healing_env
    out, cfg_path = _interrupted_copy(root, cfg, reference, "all-damaged")
    kinds = ["zero-byte", "invalid-json", "truncated"]
    for ckpt, kind in zip(sorted((out / "checkpoints").iterdir()), kinds, strict=True):
        _damage(ckpt, kind)
    p = subprocess.run([sys.executable, "-m", "mats.cli", "train", "--config", str(cfg_path)], env=child_env(),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    err = [line for line in p.stderr.splitlines() if line.startswith("mats: error:")]
    assert len(err) == 1 and "no intact checkpoint to resume from" in err[0], p.stderr[-2000:]
    assert "--no-resume" in err[0]
    assert not (out / "model").exists()
    # each damaged checkpoint was reported on its own line, newest first
    reported = [line for line in p.stderr.splitlines() if "damaged checkpoint" in line]
    assert [line.split("step-")[1][:8] for line in reported] == ["00000006", "00000004", "00000002"]


def test_manifest_records_sha256(tmp_path, tiny_model):
    """save_checkpoint writes a manifest with the sha256 of each file; verify_checkpoint checks it."""
    import hashlib

    from mats.model import MATSModel
    from mats.train.checkpoint import CheckpointError, save_checkpoint, verify_checkpoint
    model = MATSModel.from_pretrained(tiny_model, device="cpu")
    params = model.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    sum(p.sum() for p in params).backward()
    opt.step()
    ckpt = save_checkpoint(tmp_path, 1, model, opt, sched)
    manifest = json.loads((ckpt / "manifest.json").read_text())
    for name in ("trainable.safetensors", "optimizer.safetensors", "state.json"):
        assert manifest["files"][name]["sha256"] == hashlib.sha256((ckpt / name).read_bytes()).hexdigest()
    verify_checkpoint(ckpt)
    with open(ckpt / "optimizer.safetensors", "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(CheckpointError, match="optimizer.safetensors: sha256 differs"):
        verify_checkpoint(ckpt)
