"""Starting fast: the default CLAP's label embeddings come from a disk cache (identical to encoding
them), and `mats --help` does not import torch."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def clap():
    from mats.clap.default import DefaultCLAP
    return DefaultCLAP()


def test_label_embeddings_cached_on_disk(clap, tmp_path, monkeypatch):
    from mats import store

    monkeypatch.setattr(store, "mats_home", lambda: tmp_path)
    texts = [clap.label_prompt.format(label=n) for n in clap.class_names]
    fresh = clap.encode_text(texts)
    first = clap.with_settings()
    first._label_cache = {}
    assert np.array_equal(first.label_embeddings(), fresh)
    files = list((tmp_path / "label-cache").glob("*.safetensors"))
    assert len(files) == 1

    second = clap.with_settings()
    second._label_cache = {}
    monkeypatch.setattr(second, "encode_text", lambda *a, **k: pytest.fail("recomputed despite the cache"))
    assert np.array_equal(second.label_embeddings(), fresh)

    # another prompt is another key
    other = clap.with_settings(label_prompt="{label}")
    other._label_cache = {}
    monkeypatch.setattr(other, "encode_text", clap.encode_text)
    other.label_embeddings()
    assert len(list((tmp_path / "label-cache").glob("*.safetensors"))) == 2

    # a damaged file is recomputed, not trusted
    files[0].write_bytes(b"not safetensors")
    third = clap.with_settings()
    third._label_cache = {}
    assert np.array_equal(third.label_embeddings(), fresh)
