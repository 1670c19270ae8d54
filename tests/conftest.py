"""Shared fixtures, and the rule for tests whose fixture is missing.

A test that needs something the set-up provides (the real recorded clips of ``mats.data.sounds``, the
offline default models of ``mats models fetch``) calls :func:`require` (or carries the ``requires``
mark). Without it the test skips on a developer's machine but FAILS under CI (the ``CI`` environment
variable, exported by ``.ci/run``), so CI cannot pass by skipping. Skips about the platform itself (no
process that file modes apply to, no native bf16, no java) stay plain ``pytest.skip``.
"""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Models load on torch here unless a test names its runtime: the default ("auto": ONNX Runtime on a CPU)
# would first export every tiny model the plumbing tests build (seconds and ~100 MB each). The default
# path itself is tested where it is named: tests/test_onnx.py (graphs, golden clips, CLI, server) and
# the fresh `mats tag` there, run with MATS_RUNTIME unset.
os.environ.setdefault("MATS_RUNTIME", "torch")


def require(condition: object, why: str) -> None:
    """Go on when ``condition`` holds; otherwise skip with ``why``, or fail under CI (``CI`` set)."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"missing test fixture under CI (CI={os.environ['CI']!r}): {why}", pytrace=False)
    pytest.skip(why)


def real_sounds_folder() -> Path:
    """The cached real-sound folder (``mats.data.sounds.fetch_real_sounds``), through :func:`require`."""
    from mats.data.sounds import fetch_real_sounds
    try:
        return fetch_real_sounds()
    except Exception as e:  # neither a cache nor apt/http: nothing real to test on
        require(False, f"real sound set unavailable: {e}")


def pytest_configure(config):
    config.addinivalue_line("markers", "requires(condition, why): the test needs a fixture; "
                                       "skip without it, fail under CI (see tests/conftest.py)")


def pytest_runtest_setup(item):
    for mark in item.iter_markers("requires"):
        require(*mark.args, **mark.kwargs)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory) -> Path:
    from tiny import make_tiny_llm
    return make_tiny_llm(tmp_path_factory.mktemp("tiny-llm"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tiny_llm) -> Path:
    from tiny import make_tiny_model
    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"), tiny_llm)


@pytest.fixture(scope="module")
def train_env(tmp_path_factory, tiny_llm):
    """A training workspace (root, the tiny LLM, a tiny corpus, the embedding cache), shared by the
    training tests of one module (test_train, test_retrieval)."""
    from test_train import write_corpus
    root = tmp_path_factory.mktemp("train")
    return {"root": root, "llm": tiny_llm, "corpus": write_corpus(root / "corpus"),
            "cache": root / "embeddings"}


# The HTTP API over a test module's own ``model`` fixture (tests/test_serve_*.py), in-process.
@pytest.fixture(scope="module")
def app(model):
    from mats.server import Settings, create_app

    return create_app(model, Settings(batch_window_ms=5))


@pytest.fixture(scope="module")
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c


@pytest.fixture
def settings(app):
    """The live settings of the module's app; any change a test makes is undone after it."""
    s = app.state.settings
    saved = dict(s.__dict__)
    yield s
    s.__dict__.update(saved)
