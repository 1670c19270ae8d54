"""`mats zero-shot` end to end on real files, with a corrupt file in the batch."""

import json
import subprocess
import sys

import pytest

from conftest import real_sounds_folder
from mats.data.sounds import read_metadata


@pytest.fixture(scope="module")
def files():
    folder = real_sounds_folder()
    meta = read_metadata(folder)

    def pick(end):
        return folder / next(r["file"] for r in meta if r["file"].endswith(end))

    return pick("36-sheep.wav"), pick("phone-incoming-call.oga")


def test_cli_jsonl_with_corrupt_file(files, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage")
    cmd = [sys.executable, "-m", "mats.cli", "zero-shot", str(files[0]), str(bad), str(files[1]),
           "--labels", "sheep,telephone,car horn,speech", "--format", "jsonl", "--top-k", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["file"] for r in rows] == [str(files[0]), str(bad), str(files[1])]
    assert rows[0]["label"] == "sheep" and rows[2]["label"] == "telephone"
    assert len(rows[0]["top_k"]) == 2
    assert "broken.wav" in rows[1]["error"] and "label" not in rows[1]


def test_cli_help():
    proc = subprocess.run([sys.executable, "-m", "mats.cli", "zero-shot", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--labels-file" in proc.stdout and "softmax" in proc.stdout
