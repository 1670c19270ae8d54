"""Starting fast: the default CLAP's label embeddings come from a disk cache (identical to encoding
them), and a command whose files cannot be read answers before anything heavy is imported (the
mixed case, good and bad files in one batch, is in test_tasks_cli.py)."""

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


def test_unreadable_files_are_reported_before_any_model_loads(tmp_path):
    """`mats tag` on files that cannot be read answers with each file's error and exit code 1, in
    the time of a header check: neither torch nor transformers is imported, no model is loaded.
    `mats chat` refuses an unreadable file the same way."""
    import json
    import subprocess
    import sys

    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    garbage = tmp_path / "notes.ogg"
    garbage.write_text("not audio")
    missing = tmp_path / "missing.wav"
    code = ("import sys; from mats.cli import main; "
            f"rc = main(['tag', '--format', 'jsonl', {str(missing)!r}, {str(empty)!r}, {str(garbage)!r}]); "
            "print(json.dumps({'rc': rc, 'torch': 'torch' in sys.modules, "
            "'transformers': 'transformers' in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True,
                         timeout=120)
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert lines[-1] == {"rc": 1, "torch": False, "transformers": False}, out.stderr
    errors = {r["file"]: r["error"] for r in lines[:-1]}
    assert list(errors) == [str(missing), str(empty), str(garbage)]  # input order
    assert errors[str(missing)].endswith("no such file")
    assert "file is empty" in errors[str(empty)]
    assert "not a readable audio file" in errors[str(garbage)]
    assert "Traceback" not in out.stderr

    # `mats chat` on one file: the one-line error and exit 2 of any refused command, as quickly.
    code = ("import sys; from mats.cli import main; "
            f"rc = main(['chat', {str(missing)!r}]); "
            "print(rc, 'torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["2", "False", "False"], out.stderr
    assert out.stderr.strip() == f"mats: error: {missing}: no such file"



def test_help_imports_neither_torch_nor_transformers():
    """`mats --help` and every command's --help come from the parser alone (0.25 s, not 2+ s)."""
    import subprocess
    import sys

    code = ("import contextlib, io, sys\n"
            "from mats.commands import build_parser\n"
            "parser = build_parser()\n"
            "for argv in (['--help'], ['tag', '--help'], ['train', '--help'], ['serve', '--help']):\n"
            "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "        parser.parse_args(argv)\n"
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr
