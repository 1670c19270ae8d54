"""A short seeded slice of benchmarks/fuzz_audio.py: mutated real recordings and corpora give only
the project's own errors or valid output, never a raw exception or a hang."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import real_sounds_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("seed", [1, 2])
def test_fuzz_slice(seed, tmp_path):
    from test_train import child_env
    real_sounds_folder()  # skips, or fails under CI, without the real clips
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fuzz_audio.py"), "--seed", str(seed),
                        "--inputs", "1500", "--minutes", "3", "--timeout", "20", "--crash-dir", str(tmp_path)],
                       env=child_env(), capture_output=True, text=True, timeout=400)
    assert p.stdout, p.stderr[-3000:]
    result = json.loads(p.stdout)
    assert result["inputs"] == 1500, result
    assert result["raw_exceptions"] == 0 and result["hangs"] == 0, json.dumps(result["raw_examples"], indent=1)
    assert p.returncode == 0
    # the slice reaches both outcomes for audio and for corpora (the mutator is not trivially fatal)
    for kind in ("audio", "corpus"):
        assert result["by_kind"][kind]["refused_cleanly"] > 0 and result["by_kind"][kind]["accepted"] > 0
