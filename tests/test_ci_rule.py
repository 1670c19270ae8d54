"""The CI rule of tests/conftest.py: a missing fixture skips on a developer's machine and fails under CI.

Each case runs a small pytest session in a subprocess, with the real conftest loaded as a plugin
(``-p conftest``), once with ``CI`` unset and once with ``CI=1`` (as ``.ci/run`` exports it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

CASES = {
    # the helper itself
    "require": """
from conftest import require

def test_needs_a_fixture():
    require(False, "the frobnicator fixture is missing")
""",
    # the mark (as test_train.needs_default_clap uses it)
    "mark": """
import pytest

@pytest.mark.requires(False, "the frobnicator fixture is missing")
def test_needs_a_fixture():
    pass
""",
    # a real-clip fixture whose sound packages cannot be fetched
    "real_clips": """
import pytest
from conftest import real_sounds_folder
from mats.data import sounds

@pytest.fixture(scope="module")
def clips():
    def offline(*a, **k):
        raise sounds.SoundsError("no cache, and neither apt nor deb.debian.org reachable")
    real, sounds.fetch_real_sounds = sounds.fetch_real_sounds, offline
    try:
        return real_sounds_folder()
    finally:
        sounds.fetch_real_sounds = real

def test_on_real_clips(clips):
    pass
""",
}


def _session(tmp_path: Path, case: str, ci: str | None) -> subprocess.CompletedProcess:
    (tmp_path / f"test_{case}.py").write_text(CASES[case])
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "conftest", "-p", "no:cacheprovider",
                           str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", sorted(CASES))
def test_missing_fixture_skips_outside_ci(tmp_path, case):
    p = _session(tmp_path, case, None)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "1 skipped" in p.stdout and "failed" not in p.stdout and "error" not in p.stdout, p.stdout


@pytest.mark.parametrize("case", sorted(CASES))
def test_missing_fixture_fails_under_ci(tmp_path, case):
    p = _session(tmp_path, case, "1")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "skipped" not in p.stdout, p.stdout
    assert "missing test fixture under CI" in p.stdout, p.stdout
