"""`mats eval` runner: results schema, report, determinism, ablation, failing clips, CLI.

Uses the tiny random model (garbage text, real plumbing) and four real clips from
``fetch_real_sounds()`` plus one corrupt file, in the generic ``metadata.jsonl`` layout.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import real_sounds_folder, require

DECODE = {"max_new_tokens": 4, "num_beams": 1}
CAPTION_METRICS = ["bleu", "cider", "rouge"]


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory) -> Path:
    """4 real clips (distinct labels) + 1 corrupt file first, with labels, synonyms (list form, as
    fetch_real_sounds writes them) and one reference caption each."""
    from mats.data.sounds import read_metadata

    src = real_sounds_folder()
    rows = read_metadata(src)
    picked, seen = [], set()
    for r in rows:
        if r["labels"][0] not in seen and (src / r["file"]).is_file():
            seen.add(r["labels"][0])
            picked.append(r)
        if len(picked) == 4:
            break
    require(len(picked) >= 4, "fewer than 4 labelled real clips")
    root = tmp_path_factory.mktemp("evalset")
    (root / "clips").mkdir()
    (root / "clips" / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really audio")
    lines = [{"file": "clips/broken.wav", "labels": ["bell"], "synonyms": ["bell", "chime"],
              "captions": ["a bell rings"]}]
    for r in picked:
        name = Path(r["file"]).name
        shutil.copy(src / r["file"], root / "clips" / name)
        lines.append({"file": f"clips/{name}", "labels": r["labels"], "synonyms": r["synonyms"],
                      "captions": [f"the sound of {r['labels'][0]}"]})
    (root / "metadata.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root


@pytest.fixture(scope="module")
def mats_tiny(tiny_model):
    from mats.pipeline import MATS
    return MATS.from_pretrained(tiny_model, device="cpu")


def _config(eval_set, tiny_model, out, **kw):
    from mats.evaluation.runner import EvalConfig
    base = dict(data=eval_set, model=tiny_model, task="tag", out=out, progress=False,
                metrics=CAPTION_METRICS, **DECODE)
    base.update(kw)
    return EvalConfig(**base)


@pytest.fixture(scope="module")
def tag_run(eval_set, tiny_model, mats_tiny, tmp_path_factory):
    from mats.evaluation.runner import evaluate
    out = tmp_path_factory.mktemp("tag-run")
    return out, evaluate(_config(eval_set, tiny_model, out), mats=mats_tiny)


def test_results_schema_and_report(tag_run, eval_set, mats_tiny):
    out, res = tag_run
    saved = json.loads((out / "results.json").read_text())
    assert saved["task"] == "tag"
    for k in ("keyword_accuracy", "zero_shot_accuracy", "map", "accuracy"):
        assert k in saved["metrics"], k
    assert 0.0 <= saved["metrics"]["keyword_accuracy"] <= 1.0
    assert saved["n_evaluated"] == 4 and len(saved["predictions"]) == 4
    for p in saved["predictions"]:
        assert {"id", "file", "prediction", "labels", "keyword_hit", "zero_shot_label", "tags"} <= set(p)
    cfg = saved["config"]
    assert Path(cfg["model"]["folder"]) == Path(mats_tiny.folder).resolve()
    assert cfg["bridge"]["name"] == "santa" and {"lam", "tau", "top_l", "noise_variance"} <= set(cfg["bridge"])
    assert cfg["mats_version"] and cfg["decoding"]["max_new_tokens"] == 4
    t = saved["timings"]
    for k in ("embed_seconds", "generate_seconds", "total_seconds"):
        assert t[k] >= 0
    report = (out / "report.md").read_text()
    assert "keyword_accuracy" in report and "zero-shot" in report
    # the zero-shot ceiling equals mats.zeroshot.zero_shot run on the audio itself
    from mats.zeroshot import zero_shot
    files = [p["file"] for p in saved["predictions"]]
    labels = saved["zero_shot"]["labels"]
    direct = zero_shot(mats_tiny.clap, files, labels)
    assert [d["label"] for d in direct] == [p["zero_shot_label"] for p in saved["predictions"]]
    gold = [p["labels"][0] for p in saved["predictions"]]
    assert saved["metrics"]["zero_shot_accuracy"] == pytest.approx(
        np.mean([d["label"] == g for d, g in zip(direct, gold, strict=True)]))


def test_corrupt_clip_reported_and_excluded(tag_run):
    _, res = tag_run
    assert res["n_failed"] == 1
    assert res["failed"][0]["file"].endswith("broken.wav") and res["failed"][0]["error"]
    assert all(not p["file"].endswith("broken.wav") for p in res["predictions"])
    assert res["benchmark"]["n_selected"] == 5


def test_deterministic(tag_run, eval_set, tiny_model, mats_tiny, tmp_path):
    from mats.evaluation.runner import evaluate
    _, first = tag_run
    second = evaluate(_config(eval_set, tiny_model, tmp_path / "again"), mats=mats_tiny)
    a = json.loads((tmp_path / "again" / "results.json").read_text())
    assert second["metrics"] == first["metrics"]
    assert [p["prediction"] for p in second["predictions"]] == [p["prediction"] for p in first["predictions"]]
    assert a["metrics"] == json.loads(json.dumps(first["metrics"]))


def test_onnx_runtime_gives_the_torch_runs_predictions(tag_run, eval_set, tiny_model, tmp_path, monkeypatch):
    """`mats eval --runtime onnx` loads the model on ONNX Runtime, says so in results.json, and scores the
    very predictions of the torch run (the same tokens: tests/test_onnx.py)."""
    from mats.evaluation.runner import evaluate
    from mats.onnx import export as onnx_export

    # the tiny model is new at every run: its export goes to the test's folder, not the user's cache
    monkeypatch.setattr(onnx_export, "cache_dir", lambda key: tmp_path / "onnx-cache" / key)
    _, first = tag_run
    res = evaluate(_config(eval_set, tiny_model, tmp_path / "onnx", runtime="onnx"))
    assert res["config"]["runtime"] == "onnx" and first["config"]["runtime"] == "torch"
    assert [p["prediction"] for p in res["predictions"]] == [p["prediction"] for p in first["predictions"]]
    assert res["metrics"] == first["metrics"]


def test_ablation_quick(eval_set, tiny_model, mats_tiny, tmp_path):
    from mats.evaluation.ablation import QUICK_GRID
    from mats.evaluation.runner import Evaluation, evaluate

    calls = []
    orig = mats_tiny.embed_audio
    mats_tiny.embed_audio = lambda paths: (calls.append(list(paths)), orig(paths))[1]
    try:
        res = evaluate(_config(eval_set, tiny_model, tmp_path, task="caption", ablation=True, quick=True),
                       mats=mats_tiny)
    finally:
        mats_tiny.embed_audio = orig
    assert len(calls) == 5  # each clip embedded once for all 6 bridges + 8 sweep points
    runs = res["ablation"]["runs"]
    bridges = {r["name"]: r for r in runs if r["kind"] == "bridge"}
    assert list(bridges) == ["none", "noise", "santa", "nearest", "projection", "shift"]
    assert bridges["shift"]["status"] == "skipped" and "shift" in bridges["shift"]["reason"]
    for name in ("none", "noise", "santa", "nearest", "projection"):
        assert bridges[name]["status"] == "ok" and "keyword_accuracy" in bridges[name]["metrics"]
        assert "cider_d" in bridges[name]["metrics"] and len(bridges[name]["predictions"]) == 4
    sweeps = [r for r in runs if r["kind"] == "sweep"]
    assert {(r["param"], r["value"]) for r in sweeps} == {(p, float(v)) for p, vs in QUICK_GRID.items() for v in vs}
    assert all(r["status"] == "ok" and r["bridge"][r["param"]] == r["value"] for r in sweeps)
    for png in ("bridges.png", "sweeps.png"):
        assert (tmp_path / png).stat().st_size > 1000
    report = (tmp_path / "report.md").read_text()
    assert "(bridges.png)" in report and "(sweeps.png)" in report and "CLAP zero-shot (ceiling)" in report
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["ablation"]["runs"][0]["name"] == "none" and saved["metrics"]["cider_d"] is not None
    assert isinstance(Evaluation, type)


def test_sweep_parsing():
    from mats.evaluation.ablation import parse_sweep
    assert parse_sweep(["lam=0,0.3,1", "tau=10,100", "L=1,8"]) == {"lam": [0.0, 0.3, 1.0], "tau": [10.0, 100.0],
                                                                   "top_l": [1, 8]}
    for bad in (["lam=2"], ["top_l=0.5"], ["beta=1"], ["lam"]):
        with pytest.raises(ValueError):
            parse_sweep(bad)


def test_cli_exit_codes_and_shift(eval_set, tiny_model, tmp_path, capsys):
    from mats.cli import main

    shift = np.zeros(384, np.float32)
    shift[0] = 0.1
    np.save(tmp_path / "shift.npy", shift)
    args = ["eval", "--data", str(eval_set), "--model", str(tiny_model), "--task", "tag", "--limit", "3",
            "--beams", "1", "--max-new-tokens", "3", "--quiet", "--no-plots", "--sweep", "lam=0,1",
            "--shift", str(tmp_path / "shift.npy"), "--out", str(tmp_path / "cli")]
    assert main(args + ["--keep-going"]) == 0  # the failed clip is listed, the exit code stays 0
    res = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert res["n_evaluated"] == 2 and res["n_failed"] == 1  # --limit 3 includes the broken file
    runs = {r["name"]: r for r in res["ablation"]["runs"]}
    assert runs["shift"]["status"] == "ok"
    assert [r["value"] for r in res["ablation"]["runs"] if r["kind"] == "sweep"] == [0.0, 1.0]
    captured = capsys.readouterr()
    assert "folder tag: 2 clips" in captured.out  # the result summary on stdout
    assert "could not be read" in captured.err   # the failed clip, on stderr even with --quiet
    # a failed clip makes the exit code 1 (--strict, the old opt-in, still works); bad input: 2 (one line)
    assert main(args[:-2] + ["--strict", "--sweep", "tau=10", "--out", str(tmp_path / "strict")]) == 1
    assert main(args[:-2] + ["--sweep", "tau=10", "--out", str(tmp_path / "default")]) == 1
    assert main(["eval", "--data", str(tmp_path / "nowhere"), "--task", "tag", "--out", str(tmp_path / "x"),
                 "--model", str(tiny_model)]) == 2
    with pytest.raises(SystemExit):
        main(["eval", "--data", str(eval_set), "--task", "bogus", "--out", str(tmp_path / "y")])
    assert main(["eval", "--data", str(eval_set), "--task", "tag", "--out", str(tmp_path / "z"),
                 "--model", str(tiny_model), "--rerank", "-1"]) == 2
    assert "rerank must be >= 0" in capsys.readouterr().err and not (tmp_path / "z").exists()


def test_reproduce_script_corpus_stage(tmp_path, repo_root):
    """The corpus stage of scripts/reproduce_paper.sh on tiny stand-ins of the public layouts."""
    import os
    import subprocess
    import sys

    d = tmp_path / "datasets"
    (d / "audiocaps").mkdir(parents=True)
    (d / "audiocaps" / "train.csv").write_text("audiocap_id,youtube_id,start_time,caption\n"
                                               "1,abc,30,A dog barks twice\n")
    (d / "clotho").mkdir()
    (d / "clotho" / "clotho_captions_development.csv").write_text(
        "file_name,caption_1,caption_2\nrain.wav,Rain falls on a roof,Heavy rain\n")
    (d / "esc50" / "meta").mkdir(parents=True)
    (d / "esc50" / "meta" / "esc50.csv").write_text("filename,fold,target,category\n1-1.wav,1,0,crackling_fire\n")
    (d / "clothoaqa").mkdir()
    (d / "clothoaqa" / "clotho_aqa_train.csv").write_text(
        "file_name,QuestionText,answer,confidence\nrain.wav,Is it raining?,yes,yes\n")
    env = dict(os.environ, DATA=str(d), CORPUS=str(tmp_path / "corpus"), STAGES="corpus", PY=sys.executable)
    proc = subprocess.run(["bash", str(repo_root / "scripts" / "reproduce_paper.sh")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    close = [json.loads(x) for x in (tmp_path / "corpus" / "close_ended.jsonl").read_text().splitlines()]
    qa = [json.loads(x) for x in (tmp_path / "corpus" / "open_ended.jsonl").read_text().splitlines()]
    assert {r["source"] for r in close} == {"audiocaps", "clotho", "esc50"}
    assert any(r["task"] == "tags" and r["answer"] == "crackling fire" for r in close)
    assert qa == [{"text": "Rain falls on a roof", "task": "qa", "instruction": "Is it raining?", "answer": "yes",
                   "source": "clothoaqa"}]
