"""Wrong input to the entry points gives one clear error line (exit code 2), not a traceback."""

import json

import pytest

from mats.cli import main


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_corpus_check_reports_file_and_line(tmp_path, capsys):
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"text": "a dog", "task": "caption", "answer": "a dog"}\n{"text": "x", "task": "dance"}\n')
    assert main(["corpus", "check", str(bad)]) == 2
    assert f"{bad}:2:" in _err(capsys)


def test_train_config_errors(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in _err(capsys)
    cfg = tmp_path / "typo.json"
    cfg.write_text(json.dumps({"train": {"learning_rate": 1e-4}}))
    assert main(["train", "--config", str(cfg)]) == 2
    assert "unknown key(s) ['learning_rate']" in _err(capsys)
    assert main(["train", "--set", "train.steps"]) == 2
    assert "key.path=value" in _err(capsys)
    assert main(["train"]) == 2
    assert "no corpus configured" in _err(capsys)


def test_model_folder_errors(tmp_path, capsys):
    assert main(["caption", str(tmp_path), "--model", str(tmp_path)]) == 2  # no audio in the folder
    assert "no audio files" in _err(capsys)
    (tmp_path / "a.wav").write_bytes(b"RIFF....WAVEfmt ")
    assert main(["caption", str(tmp_path / "a.wav"), "--model", str(tmp_path)]) == 2
    assert "not a MATS model folder" in _err(capsys)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert main(["caption", str(tmp_path / "a.wav"), "--model", str(tmp_path)]) == 2
    assert "not a MATS model config" in _err(capsys)


def test_unknown_clap_and_init_from(tmp_path):
    from mats.clap import load_clap
    with pytest.raises(ValueError, match="unknown CLAP"):
        load_clap("no-such-clap")


def test_init_from_incomplete_folder(tiny_model, tmp_path):
    from mats.model import MATSModel
    m = MATSModel.from_pretrained(tiny_model)
    with pytest.raises(FileNotFoundError, match="init_from .*missing mapper.safetensors"):
        m.load_trainable_from(tmp_path)
