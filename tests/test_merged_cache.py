"""The merged-LoRA cache (mats.llm.merge_lora): keyed by content, written through per-writer names.

Uses the tiny LLM and the tiny model's LoRA adapter; ``MATS_HOME`` points at a fresh folder per test.
"""

from __future__ import annotations

import shutil
import threading

import pytest
import torch
from safetensors.torch import load_file, save_file

from mats import store
from mats.llm import _merged_cache_file, load_llm, merge_lora


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MATS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _other_weights(folder):
    """Change one weight of the LLM in ``folder`` in place: same path, same shapes, other content."""
    f = folder / "model.safetensors"
    tensors = load_file(str(f))
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, str(f), metadata={"format": "pt"})


def test_two_llms_at_one_path_get_two_keys(home, tiny_llm, tiny_model, tmp_path):
    llm = shutil.copytree(tiny_llm, tmp_path / "llm")
    lora = tiny_model / "lora"
    first = _merged_cache_file(lora, str(llm), torch.float32)
    assert _merged_cache_file(lora, str(llm), torch.float32) == first  # stable
    assert _merged_cache_file(lora, str(llm), torch.bfloat16) != first  # the dtype is in the key
    _other_weights(llm)
    assert _merged_cache_file(lora, str(llm), torch.float32) != first
    # the same content elsewhere: the same key (a copied model reuses its merged weights)
    moved = shutil.copytree(llm, tmp_path / "elsewhere")
    assert _merged_cache_file(lora, str(moved), torch.float32) == _merged_cache_file(lora, str(llm), torch.float32)


def test_the_weights_digest_is_remembered_and_follows_the_file(home, tiny_llm, tmp_path, monkeypatch):
    f = shutil.copytree(tiny_llm, tmp_path / "llm") / "model.safetensors"
    digest = store.cached_sha256(f)
    assert digest == store.sha256_file(f) and len(list((home / "digests").iterdir())) == 1
    calls = []
    monkeypatch.setattr(store, "sha256_file", lambda p: calls.append(p) or "x")
    assert store.cached_sha256(f) == digest and not calls  # read from the sidecar
    monkeypatch.undo()
    monkeypatch.setenv("MATS_HOME", str(home))
    _other_weights(f.parent)  # new content (and size/mtime): hashed again
    assert store.cached_sha256(f) == store.sha256_file(f) != digest


def test_merged_cache_is_used_for_a_stale_path_only_when_the_content_matches(home, tiny_llm, tiny_model, tmp_path):
    llm = shutil.copytree(tiny_llm, tmp_path / "llm")
    lora = tiny_model / "lora"
    a = merge_lora(load_llm(str(llm), dtype="fp32")[0], lora, str(llm))
    _other_weights(llm)
    b = merge_lora(load_llm(str(llm), dtype="fp32")[0], lora, str(llm))
    differ = [n for n, p in a.named_parameters() if not torch.equal(p, dict(b.named_parameters())[n])]
    assert differ, "the second LLM was given the first LLM's merged weights"
    assert len(list((home / "llm-cache" / "merged").glob("*.safetensors"))) == 2


def test_concurrent_writers_leave_one_valid_file_and_no_partials(home, tiny_llm, tiny_model):
    lora = tiny_model / "lora"
    models = [load_llm(str(tiny_llm), dtype="fp32")[0] for _ in range(4)]
    cache = _merged_cache_file(lora, str(tiny_llm), torch.float32)
    start, errors = threading.Barrier(len(models)), []

    def work(m):
        try:
            start.wait()
            merge_lora(m, lora, str(tiny_llm))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(m,)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    folder = home / "llm-cache" / "merged"
    assert sorted(p.name for p in folder.iterdir()) == [cache.name]
    merged = load_file(str(cache))  # a complete, readable file
    params = [dict(m.named_parameters()) for m in models]
    for name, value in merged.items():
        for p in params:
            assert torch.equal(p[name], value), name


def test_concurrent_processes_share_no_partial_name(home, tiny_llm, tiny_model):
    """Two processes merging the same adapter at once: one merged file, nothing left over."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; from mats.llm import load_llm, merge_lora; "
            "m = load_llm(sys.argv[1], dtype='fp32')[0]; merge_lora(m, sys.argv[2], sys.argv[1])")
    env = {**os.environ, "MATS_HOME": str(home), "MATS_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                          os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tiny_llm), str(tiny_model / "lora")], env=env,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    files = list((home / "llm-cache" / "merged").iterdir())
    assert [f.suffix for f in files] == [".safetensors"], files
    load_file(str(files[0]))
    assert not list(home.rglob("*.partial"))


def test_unique_partial_names_differ(tmp_path):
    a, b = store.unique_partial(tmp_path / "x.safetensors"), store.unique_partial(tmp_path / "x.safetensors")
    assert a != b and a.parent == tmp_path and a.name.endswith(".partial") and a.name.startswith("x.safetensors.")


def test_publish_dir_keeps_a_finished_peer_and_replaces_an_outdated_one(tmp_path):
    target = tmp_path / "t"
    target.mkdir()
    (target / "stamp").write_text("old")
    done = lambda d: (d / "stamp").is_file() and (d / "stamp").read_text() == "new"  # noqa: E731
    for content in ("new", "new"):
        staging = store.unique_partial(target)
        staging.mkdir()
        (staging / "stamp").write_text(content)
        (staging / "mine").write_text(staging.name)
        store.publish_dir(staging, target, done)
        assert not staging.exists()
    assert (target / "stamp").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]
