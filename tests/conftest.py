import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


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
