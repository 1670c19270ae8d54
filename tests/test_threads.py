"""One place sets CPU threads: explicit value > MATS_THREADS > cores available to the process."""

import os
import subprocess
import sys

import pytest

from mats import threads


def test_resolve_order(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.setattr(threads, "_chosen", None)
    assert threads.resolve() == len(os.sched_getaffinity(0))
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.resolve() == 3
    assert threads.resolve(1) == 1
    monkeypatch.setenv(threads.ENV, "many")
    with pytest.raises(ValueError, match="MATS_THREADS"):
        threads.resolve()
    with pytest.raises(ValueError, match=">= 1"):
        threads.resolve(0)


def test_configure_sets_torch_onnx_and_passive_wait():
    # A fresh interpreter: the wait policy must be in the environment before torch loads OpenMP,
    # and the YAMNet session must get the configured count.
    code = (
        "import os, mats, mats.threads as t; assert os.environ['OMP_WAIT_POLICY'] == 'PASSIVE';"
        "import torch; n = t.configure(1); assert n == 1 and torch.get_num_threads() == 1;"
        "from mats.clap.yamnet import YAMNet; y = YAMNet();"
        "print(y.session.get_session_options().intra_op_num_threads)")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "MATS_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "1"
