"""Batches that scale out: `--shard I/N`, `--out FILE` line by line and `--resume` after a real kill,
through the real command line (subprocesses) with the real default model on real recorded clips."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import require
from mats.commands.batch import ResultsFile, parse_shard, shard
from serving import real_clips

GREEDY = ["--beams", "1", "--rerank", "0", "--batch-size", "1", "--quiet"]


def mats(*args, **kw):
    return [sys.executable, "-m", "mats", *map(str, args)]


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_shard_is_a_stable_split_of_the_sorted_inputs():
    files = [f"d/{name}.wav" for name in "qwertyuiopas"]
    for n in (1, 2, 3, 5, 12, 20):
        parts = [shard(files, (i, n)) for i in range(1, n + 1)]
        assert sorted(f for p in parts for f in p) == sorted(files)  # complete, no input twice
        assert parts == [shard(list(reversed(files)), (i, n)) for i in range(1, n + 1)]  # order-free
        assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced
    assert shard(files, None) == files
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/2", "3/2", "1/0", "2", "a/b", "1/2/3"):
        with pytest.raises(Exception, match="I/N"):
            parse_shard(bad)


def test_resume_drops_a_half_written_last_line(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"file": "a.wav", "text": "x"}\n{"file": "b.wav", "te')
    with ResultsFile(out, resume=True) as f:
        assert f.done == {"a.wav"} and f.pending(["a.wav", "b.wav"]) == ["b.wav"]
        f.write({"file": "b.wav", "text": "y"})
    assert [r["file"] for r in rows(out)] == ["a.wav", "b.wav"]
    with pytest.raises(ValueError, match="--resume"):
        ResultsFile(out, resume=False)  # an existing file is not overwritten
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(ValueError, match="not a JSON line"):
        ResultsFile(tmp_path / "notes.txt", resume=True)


def test_shards_split_a_folder_into_disjoint_complete_halves(tmp_path):
    folder = tmp_path / "clips"
    clips = real_clips(folder, 5)
    halves = []
    for i in (1, 2):
        out = tmp_path / f"shard{i}.jsonl"
        run = subprocess.run(mats("tag", folder, "--shard", f"{i}/2", "--out", out, *GREEDY),
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr
        assert run.stdout == ""  # results went to --out
        halves.append(rows(out))
    names = [[r["file"] for r in half] for half in halves]
    assert not set(names[0]) & set(names[1])
    assert sorted(names[0] + names[1]) == sorted(str(c) for c in clips)
    assert [len(n) for n in names] == [3, 2]
    assert all(r["text"] and "error" not in r for half in halves for r in half)


def test_killed_run_resumes_answering_each_input_once(tmp_path):
    """SIGKILL a `--out` run once it has written two rows, then `--resume`: every input is answered
    exactly once, and the answers match a run that was never interrupted."""
    folder = tmp_path / "clips"
    clips = real_clips(folder, 6)
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(mats("caption", folder, "--out", out, *GREEDY), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and out.read_text().count("\n") >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    before = rows(out)
    assert 2 <= len(before) < len(clips)
    with open(out, "a") as f:  # as if the kill had cut the next row short
        f.write('{"file": "' + str(clips[-1])[:10])
    run = subprocess.run(mats("caption", folder, "--out", out, "--resume", *GREEDY), capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    after = rows(out)
    assert after[:len(before)] == before
    assert sorted(r["file"] for r in after) == sorted(str(c) for c in clips)  # each exactly once
    fresh = tmp_path / "fresh.jsonl"
    run = subprocess.run(mats("caption", folder, "--out", fresh, *GREEDY), capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr
    assert {r["file"]: r["text"] for r in after} == {r["file"]: r["text"] for r in rows(fresh)}
    again = subprocess.run(mats("caption", folder, "--out", out, "--resume", *GREEDY), capture_output=True,
                           text=True, timeout=600)  # nothing left: no model load, nothing appended
    assert again.returncode == 0 and rows(out) == after


def test_ray_data_gives_the_clis_answers(tmp_path, capsys):
    """MATSPredictor in Ray Data's map_batches on a local instance (one actor, the model loaded once)
    answers each clip as `mats tag --format jsonl` does; a file that cannot be read fails alone."""
    try:
        import ray
    except ImportError:
        require(False, "the [ray] extra is not installed (pip install -e '.[ray]'; scripts/setup.sh does)")
    from mats.cli import main
    from mats.ray_data import MATSPredictor

    clips = real_clips(tmp_path / "clips", 3)
    broken = tmp_path / "clips" / "broken.wav"
    broken.write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really audio")
    files = [*clips, broken]
    assert main(["tag", *map(str, files), "--format", "jsonl", "--quiet"]) == 1  # the broken file
    cli = {r["file"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ds = ray.data.from_items([{"path": str(f)} for f in files])
        out = ds.map_batches(MATSPredictor, fn_constructor_kwargs={"task": "tags"}, concurrency=1, batch_size=2)
        got = {r["path"]: r for r in out.iter_rows()}
    finally:
        ray.shutdown()
    assert set(got) == set(cli)
    for f in clips:
        assert got[str(f)]["text"] == cli[str(f)]["text"] and not got[str(f)]["error"]
        assert got[str(f)]["tags"] == ", ".join(cli[str(f)]["tags"])
    assert got[str(broken)]["error"] == cli[str(broken)]["error"] and not got[str(broken)]["text"]
